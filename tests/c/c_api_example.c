/* The C API from plain C11: two peers of one pool (this process hosts it, a forked child joins),
 * copies of fresh random data into the other peer's memory and back with every byte compared,
 * batches, async copies, and every error path a caller can reach. Prints a summary; exits
 * nonzero on any failed check.
 *
 * The child is forked before this process touches weft (a process with weft's threads must not
 * fork); it waits on a pipe until the pool is hosted, then joins it. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "c_check.h"
#include "weft/weft.h"

static const char* who = "host";
static int checks = 0;
static int failures = 0;


enum { kRankSizeMiB = 64 };
static const uint64_t kRankSize = (uint64_t)kRankSizeMiB << 20;

/* xorshift64*, seeded from the clock and the pid: fresh data on every run. */
static uint64_t rng_state;

static uint64_t next_random(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}

static void seed_random(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  rng_state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^ 0x9E3779B97F4A7C15ULL;
  if (rng_state == 0) rng_state = 1;
}

static void fill_random(uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(next_random() >> 56);
}

static uint64_t addr(const void* p) { return (uint64_t)(uintptr_t)p; }

/* Index of the first differing byte, or -1. */
static long first_difference(const uint8_t* a, const uint8_t* b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (a[i] != b[i]) return (long)i;
  return -1;
}

static weft_config* make_config(const char* pool_name, const char* rank_size) {
  weft_config* cfg = weft_config_new();
  if (!cfg) return NULL;
  if (weft_config_set(cfg, "pool_name", pool_name) != WEFT_OK || weft_config_set(cfg, "rank_size", rank_size) != WEFT_OK) {
    fprintf(stderr, "[%s] config: %s\n", who, weft_last_error());
    weft_config_free(cfg);
    return NULL;
  }
  return cfg;
}

/* Writes len random bytes to gva (LH -> GH) and reads them back (GH -> LH) into a poisoned
 * buffer; every byte compared. */
static void round_trip(weft_pool* pool, uint64_t gva, size_t len, int explicit_direction) {
  uint8_t* src = malloc(len);
  uint8_t* back = malloc(len);
  CHECK(src && back, "malloc %zu", len);
  if (!src || !back) {
    free(src);
    free(back);
    return;
  }
  fill_random(src, len);
  memset(back, 0xA5, len);
  EXPECT_OK(weft_copy(pool, gva, addr(src), len, explicit_direction ? WEFT_DIR_LH2GH : WEFT_DIR_AUTO));
  EXPECT_OK(weft_copy(pool, addr(back), gva, len, explicit_direction ? WEFT_DIR_GH2LH : WEFT_DIR_AUTO));
  long diff = first_difference(src, back, len);
  CHECK(diff < 0, "round trip of %zu bytes at 0x%" PRIx64 ": first wrong byte at %ld", len, gva, diff);
  free(src);
  free(back);
}

/* ---- the joining peer (the forked child) ---- */

static int run_peer(const char* pool_name, int release_fd, int report_fd) {
  who = "peer";
  unsigned char host_rank = 0;
  ssize_t got;
  do got = read(release_fd, &host_rank, 1);
  while (got < 0 && errno == EINTR);
  if (got != 1 || host_rank == 0xFF) return 2; /* the host failed or died before hosting */

  weft_config* cfg = make_config(pool_name, "64MiB");
  weft_pool* pool = NULL;
  int rc = cfg ? weft_pool_join(cfg, WEFT_JOIN_JOIN, &pool) : WEFT_E_INTERNAL;
  weft_config_free(cfg);
  unsigned char my_rank = rc == WEFT_OK ? (unsigned char)weft_pool_rank(pool) : 0xFF;
  if (write(report_fd, &my_rank, 1) != 1) return 2;
  EXPECT_OK(rc);
  if (rc != WEFT_OK) return 1;

  EXPECT_OK(weft_pool_wait_for_peers(pool, 2, 30000));
  EXPECT_OK(weft_pool_barrier(pool, 60000)); /* 1: both in */

  /* This peer writes into the host's memory too. */
  uint64_t gva = 0;
  EXPECT_OK(weft_alloc(pool, (1 << 20) + 3, WEFT_PLACE_RANK, host_rank, &gva));
  uint32_t owner = 0;
  EXPECT_OK(weft_pool_rank_of(pool, gva, &owner));
  CHECK(owner == host_rank, "rank_of gave %u, expected %u", owner, (unsigned)host_rank);
  round_trip(pool, gva, (1 << 20) + 3, 1);
  EXPECT_OK(weft_free(pool, gva));

  EXPECT_OK(weft_pool_barrier(pool, 120000)); /* 2: the host is done with this peer's memory */
  EXPECT_OK(weft_pool_leave(pool));
  EXPECT_OK(weft_pool_leave(pool)); /* idempotent */
  weft_pool_free(pool);
  printf("c_api_example [peer]: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}

/* ---- the hosting peer ---- */

static void check_error_strings(void) {
  static const struct {
    int code;
    const char* name;
  } names[] = {
      {WEFT_OK, "OK"},
      {WEFT_E_INVALID_ARGUMENT, "INVALID_ARGUMENT"},
      {WEFT_E_OUT_OF_RANGE, "OUT_OF_RANGE"},
      {WEFT_E_INVALID_ADDRESS, "INVALID_ADDRESS"},
      {WEFT_E_DOUBLE_FREE, "DOUBLE_FREE"},
      {WEFT_E_POOL_FULL, "POOL_FULL"},
      {WEFT_E_PEER_DOWN, "PEER_DOWN"},
      {WEFT_E_TIMEOUT, "TIMEOUT"},
      {WEFT_E_MISMATCH, "MISMATCH"},
      {WEFT_E_PROTOCOL, "PROTOCOL"},
      {WEFT_E_IO, "IO"},
      {WEFT_E_UNAVAILABLE, "UNAVAILABLE"},
      {WEFT_E_NOT_SUPPORTED, "NOT_SUPPORTED"},
      {WEFT_E_PERMISSION_DENIED, "PERMISSION_DENIED"},
      {WEFT_E_UNAUTHENTICATED, "UNAUTHENTICATED"},
      {WEFT_E_NOT_FOUND, "NOT_FOUND"},
      {WEFT_E_ALREADY_EXISTS, "ALREADY_EXISTS"},
      {WEFT_E_CANCELLED, "CANCELLED"},
      {WEFT_E_NOT_REGISTERED, "NOT_REGISTERED"},
      {WEFT_E_CUDA, "CUDA"},
      {WEFT_E_INTERNAL, "INTERNAL"},
      {WEFT_E_BUSY, "BUSY"},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    CHECK(strcmp(weft_error_string(names[i].code), names[i].name) == 0, "weft_error_string(%d) = %s, expected %s",
          names[i].code, weft_error_string(names[i].code), names[i].name);
  CHECK(strcmp(weft_error_string(1), "UNKNOWN") == 0, "weft_error_string(1) = %s", weft_error_string(1));
  CHECK(strcmp(weft_error_string(-22), "UNKNOWN") == 0, "weft_error_string(-22) = %s", weft_error_string(-22));
}

static void check_null_arguments(weft_pool* pool) {
  uint64_t gva = 0;
  uint32_t rank = 0;
  void* ptr = NULL;
  weft_copy_handle* copy = NULL;
  weft_pool* none = NULL;
  weft_config* cfg = weft_config_new();
  CHECK(cfg != NULL, "weft_config_new");

  EXPECT_CODE(weft_config_set(NULL, "pool_name", "x"), WEFT_E_INVALID_ARGUMENT);
  CHECK(strstr(weft_last_error(), "config") != NULL, "the message names the argument: %s", weft_last_error());
  EXPECT_CODE(weft_config_set(cfg, NULL, "x"), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_config_set(cfg, "pool_name", NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_pool_join(NULL, WEFT_JOIN_AUTO, &none), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_pool_join(cfg, WEFT_JOIN_AUTO, NULL), WEFT_E_INVALID_ARGUMENT);
  CHECK(none == NULL, "a failed join leaves *out alone");
  EXPECT_CODE(weft_pool_leave(NULL), WEFT_E_INVALID_ARGUMENT);
  CHECK(weft_pool_rank(NULL) == UINT32_MAX, "weft_pool_rank(NULL)");
  CHECK(weft_pool_local_size(NULL) == 0, "weft_pool_local_size(NULL)");
  EXPECT_CODE(weft_pool_slice_address(NULL, 0, &gva), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_pool_slice_address(pool, 0, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_pool_device_slice_address(NULL, 0, &gva), WEFT_E_INVALID_ARGUMENT);
  CHECK(weft_pool_device_size(NULL) == 0, "weft_pool_device_size(NULL)");
  {
    /* No device slice here (device_size is 0): its region has addresses but no memory. */
    uint64_t host_slice = 0, device_slice = 0;
    EXPECT_OK(weft_pool_slice_address(pool, 0, &host_slice));
    EXPECT_OK(weft_pool_device_slice_address(pool, 0, &device_slice));
    CHECK(device_slice != host_slice, "the device region is its own part of the GVA space");
    CHECK(weft_pool_device_size(pool) == 0, "no device slice was configured");
    EXPECT_CODE(weft_alloc(pool, 64, WEFT_PLACE_LOCAL | WEFT_PLACE_DEVICE, 0, &gva), WEFT_E_NOT_FOUND);
    EXPECT_CODE(weft_alloc(pool, 64, 0x200, 0, &gva), WEFT_E_INVALID_ARGUMENT);
  }
  {
    /* Page batches: bad input first, then (no GPU in this test's machines) NOT_SUPPORTED with the
     * advice to use weft_copy_batch. */
    uint32_t dst_idx[2] = {0, 1}, src_idx[2] = {1, 0};
    uint64_t host_slice = 0;
    EXPECT_OK(weft_pool_slice_address(pool, 0, &host_slice));
    EXPECT_CODE(weft_copy_pages(NULL, host_slice, host_slice, 64, dst_idx, src_idx, 2, WEFT_DIR_AUTO, NULL),
                WEFT_E_INVALID_ARGUMENT);
    EXPECT_CODE(weft_copy_pages(pool, host_slice, host_slice, 64, NULL, src_idx, 2, WEFT_DIR_AUTO, NULL),
                WEFT_E_INVALID_ARGUMENT);
    EXPECT_CODE(weft_copy_pages(pool, host_slice, host_slice, 0, dst_idx, src_idx, 2, WEFT_DIR_AUTO, NULL),
                WEFT_E_INVALID_ARGUMENT);
    EXPECT_CODE(weft_copy_pages(pool, host_slice, host_slice, 64, dst_idx, src_idx, 2, 999, NULL),
                WEFT_E_INVALID_ARGUMENT);
    int rc = weft_copy_pages(pool, host_slice + 4096, host_slice, 64, dst_idx, src_idx, 2, WEFT_DIR_AUTO, NULL);
    CHECK(rc == WEFT_E_NOT_SUPPORTED || rc == WEFT_OK, "weft_copy_pages without a GPU: %d (%s)", rc,
          weft_last_error());
    if (rc == WEFT_E_NOT_SUPPORTED) CHECK(strstr(weft_last_error(), "CopyBatch") != NULL, "%s", weft_last_error());
    /* Index pairs on the GPU: the same refusals; host memory is never taken for device pairs. */
    uint32_t pairs[4] = {0, 1, 1, 0};
    EXPECT_CODE(weft_copy_pages_device_indexed(pool, host_slice + 4096, host_slice, 64, NULL, 2, 1, 1, WEFT_DIR_AUTO),
                WEFT_E_INVALID_ARGUMENT);
    EXPECT_CODE(weft_copy_pages_device_indexed(pool, host_slice + 4096, host_slice, 0, pairs, 2, 1, 1, WEFT_DIR_AUTO),
                WEFT_E_INVALID_ARGUMENT);
    rc = weft_copy_pages_device_indexed(pool, host_slice + 4096, host_slice, 64, pairs, 2, 1, 1, WEFT_DIR_AUTO);
    CHECK(rc == WEFT_E_NOT_SUPPORTED || rc == WEFT_E_INVALID_ARGUMENT, "device pairs in host memory: %d (%s)", rc,
          weft_last_error());
  }
  EXPECT_CODE(weft_pool_rank_of(NULL, 0, &rank), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_pool_rank_of(pool, 0, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_pool_local_address(pool, 0, 1, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_pool_local_address(NULL, 0, 1, &ptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_pool_wait_for_peers(NULL, 1, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_pool_barrier(NULL, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_alloc(NULL, 64, WEFT_PLACE_LOCAL, 0, &gva), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_alloc(pool, 64, WEFT_PLACE_LOCAL, 0, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_free(NULL, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_copy(NULL, 0, 0, 1, WEFT_DIR_AUTO), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_copy_async(NULL, 0, 0, 1, WEFT_DIR_AUTO, &copy), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_copy_async(pool, 0, 0, 1, WEFT_DIR_AUTO, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_copy_wait(NULL, -1), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_copy_poll(NULL), WEFT_E_INVALID_ARGUMENT);
  int results[3] = {1, 1, 1};
  EXPECT_CODE(weft_copy_batch(pool, NULL, 3, WEFT_DIR_AUTO, results), WEFT_E_INVALID_ARGUMENT);
  CHECK(results[0] == WEFT_E_INVALID_ARGUMENT && results[2] == WEFT_E_INVALID_ARGUMENT, "batch results filled");
  EXPECT_CODE(weft_copy_batch(NULL, NULL, 0, WEFT_DIR_AUTO, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_OK(weft_copy_batch(pool, NULL, 0, WEFT_DIR_AUTO, NULL)); /* an empty batch */
  EXPECT_CODE(weft_pool_route(NULL, 0, 0, 1, WEFT_DIR_AUTO, NULL, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_pool_route(pool, 0, 0, 1, WEFT_DIR_AUTO, NULL, 16), WEFT_E_INVALID_ARGUMENT);
  /* Freeing NULL does nothing. */
  weft_pool_free(NULL);
  weft_copy_free(NULL);
  weft_config_free(NULL);

  /* Values out of their enums. */
  EXPECT_CODE(weft_pool_join(cfg, 7, &none), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_alloc(pool, 64, 9, 0, &gva), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_copy(pool, 0, 0, 1, 99), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_copy(pool, 0, 0, 1, -1), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_copy_async(pool, 0, 0, 1, 17, &copy), WEFT_E_INVALID_ARGUMENT);
  /* Bad configuration. */
  EXPECT_CODE(weft_config_set(cfg, "no_such_key", "1"), WEFT_E_INVALID_ARGUMENT);
  CHECK(strstr(weft_last_error(), "no_such_key") != NULL, "the message names the key: %s", weft_last_error());
  EXPECT_CODE(weft_config_set(cfg, "rank_size", "lots"), WEFT_E_INVALID_ARGUMENT);
  EXPECT_OK(weft_config_set(cfg, "rank_size", "1MiB"));
  weft_config_free(cfg);
}

static void check_batch(weft_pool* pool, uint32_t peer_rank) {
  enum { kPages = 16, kPage = 16384 + 5 };
  uint64_t gva = 0;
  EXPECT_OK(weft_alloc(pool, (uint64_t)kPages * kPage, WEFT_PLACE_RANK, peer_rank, &gva));
  uint8_t* src = malloc((size_t)kPages * kPage);
  uint8_t* back = malloc((size_t)kPages * kPage);
  if (!src || !back || gva == 0) {
    CHECK(0, "batch setup");
    free(src);
    free(back);
    return;
  }
  fill_random(src, (size_t)kPages * kPage);
  memset(back, 0x5A, (size_t)kPages * kPage);
  weft_copy_request put[kPages], get[kPages];
  int results[kPages];
  for (int i = 0; i < kPages; i++) {
    /* Pages land in reverse order in the pool; reading back reverses them again. */
    const uint64_t slot = (uint64_t)(kPages - 1 - i) * kPage;
    put[i] = (weft_copy_request){gva + slot, addr(src + (size_t)i * kPage), kPage};
    get[i] = (weft_copy_request){addr(back + (size_t)i * kPage), gva + slot, kPage};
  }
  EXPECT_OK(weft_copy_batch(pool, put, kPages, WEFT_DIR_LH2GH, results));
  for (int i = 0; i < kPages; i++) CHECK(results[i] == WEFT_OK, "put %d: %s", i, weft_error_string(results[i]));
  EXPECT_OK(weft_copy_batch(pool, get, kPages, WEFT_DIR_AUTO, NULL));
  long diff = first_difference(src, back, (size_t)kPages * kPage);
  CHECK(diff < 0, "batch: first wrong byte at %ld", diff);

  /* One bad request in a batch: only it fails, the others are done. */
  memset(back, 0x5A, (size_t)kPages * kPage);
  get[3].src = 0x1000; /* not a GVA, and no local memory at that address in a GH2LH copy */
  int rc = weft_copy_batch(pool, get, kPages, WEFT_DIR_GH2LH, results);
  CHECK(rc < 0, "a batch with a bad request fails (got %d)", rc);
  CHECK(results[3] == rc, "the bad request carries the batch's code (%d vs %d)", results[3], rc);
  CHECK(strstr(weft_last_error(), "request 3") != NULL, "the message names the request: %s", weft_last_error());
  for (int i = 0; i < kPages; i++) {
    if (i == 3) continue;
    CHECK(results[i] == WEFT_OK, "request %d of a batch with one bad request: %s", i, weft_error_string(results[i]));
    CHECK(first_difference(src + (size_t)i * kPage, back + (size_t)i * kPage, kPage) < 0, "page %d", i);
  }
  EXPECT_OK(weft_free(pool, gva));
  free(src);
  free(back);
}

/* Returns a buffer that an async copy still running may read: free it only after the pool has
 * left (leaving finishes the queued copies). */
static uint8_t* check_async(weft_pool* pool, uint32_t peer_rank) {
  const size_t len = (8u << 20) + 11;
  uint64_t gva = 0;
  EXPECT_OK(weft_alloc(pool, len, WEFT_PLACE_RANK, peer_rank, &gva));
  uint8_t* src = malloc(len);
  uint8_t* back = malloc(len);
  if (!src || !back || gva == 0) {
    CHECK(0, "async setup");
    free(src);
    free(back);
    return NULL;
  }
  fill_random(src, len);
  memset(back, 0xA5, len);
  weft_copy_handle* put = NULL;
  EXPECT_OK(weft_copy_async(pool, gva, addr(src), len, WEFT_DIR_LH2GH, &put));
  if (put) {
    EXPECT_OK(weft_copy_wait(put, -1));
    EXPECT_OK(weft_copy_poll(put));     /* done */
    EXPECT_OK(weft_copy_wait(put, 0)); /* done: no wait needed */
    weft_copy_free(put);
  }
  weft_copy_handle* get = NULL;
  EXPECT_OK(weft_copy_async(pool, addr(back), gva, len, WEFT_DIR_AUTO, &get));
  if (get) {
    int rc;
    struct timespec nap = {0, 100000};
    while ((rc = weft_copy_poll(get)) == 1) nanosleep(&nap, NULL);
    EXPECT_CODE(rc, WEFT_OK);
    weft_copy_free(get);
  }
  long diff = first_difference(src, back, len);
  CHECK(diff < 0, "async: first wrong byte at %ld", diff);

  /* A failing async copy reports its error through wait and poll. */
  weft_copy_handle* bad = NULL;
  EXPECT_OK(weft_copy_async(pool, addr(back), 0x1000, 64, WEFT_DIR_GH2LH, &bad));
  if (bad) {
    int rc = weft_copy_wait(bad, 10000);
    CHECK(rc < 0 && rc != WEFT_E_TIMEOUT, "a bad async copy fails (got %s)", weft_error_string(rc));
    CHECK(weft_copy_poll(bad) == rc, "poll agrees with wait");
    weft_copy_free(bad);
  }
  /* An async copy freed before it is waited for goes on; its source must stay valid until the
   * pool has left, so the caller frees it then. */
  weft_copy_handle* dropped = NULL;
  EXPECT_OK(weft_copy_async(pool, gva, addr(src), len, WEFT_DIR_AUTO, &dropped));
  weft_copy_free(dropped);
  EXPECT_OK(weft_copy(pool, addr(back), gva, 16, WEFT_DIR_AUTO)); /* the engine still serves */
  EXPECT_OK(weft_free(pool, gva));
  free(back);
  return src;
}

static void check_errors(weft_pool* pool, const char* pool_name, uint32_t peer_rank) {
  uint64_t gva = 0, base = 0;
  uint32_t rank = 0;
  char small[64];

  EXPECT_CODE(weft_free(pool, 0x1234), WEFT_E_INVALID_ADDRESS);
  EXPECT_CODE(weft_pool_rank_of(pool, 0x1234, &rank), WEFT_E_INVALID_ADDRESS);
  EXPECT_CODE(weft_alloc(pool, 0, WEFT_PLACE_LOCAL, 0, &gva), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_alloc(pool, kRankSize + 1, WEFT_PLACE_RANK, peer_rank, &gva), WEFT_E_POOL_FULL);
  CHECK(strstr(weft_last_error(), "POOL_FULL") == weft_last_error(), "message starts with the code: %s",
        weft_last_error());

  /* Fill the peer's slice, then one more byte does not fit. */
  uint64_t big = 0;
  EXPECT_OK(weft_alloc(pool, kRankSize, WEFT_PLACE_RANK, peer_rank, &big));
  EXPECT_CODE(weft_alloc(pool, 64, WEFT_PLACE_RANK, peer_rank, &gva), WEFT_E_POOL_FULL);
  EXPECT_OK(weft_free(pool, big));

  EXPECT_OK(weft_alloc(pool, 4096, WEFT_PLACE_RANK, peer_rank, &gva));
  EXPECT_CODE(weft_free(pool, gva + 64), WEFT_E_INVALID_ADDRESS); /* inside, not the start */
  EXPECT_OK(weft_free(pool, gva));
  EXPECT_CODE(weft_free(pool, gva), WEFT_E_DOUBLE_FREE);
  CHECK(strstr(weft_last_error(), "DOUBLE_FREE") != NULL, "last error: %s", weft_last_error());

  /* A copy running past the end of a slice. */
  EXPECT_OK(weft_pool_slice_address(pool, peer_rank, &base));
  EXPECT_CODE(weft_copy(pool, base + kRankSize - 10, addr(small), sizeof small, WEFT_DIR_LH2GH), WEFT_E_OUT_OF_RANGE);
  EXPECT_CODE(weft_pool_slice_address(pool, 1u << 30, &base), WEFT_E_OUT_OF_RANGE);
  /* An explicit direction that the addresses contradict. */
  EXPECT_CODE(weft_copy(pool, addr(small), addr(small + 32), 16, WEFT_DIR_GH2GH), WEFT_E_INVALID_ARGUMENT);

  /* Joining this pool with another size; hosting it twice; joining a pool nobody hosts. */
  weft_pool* other = NULL;
  weft_config* cfg = make_config(pool_name, "32MiB");
  if (cfg) {
    EXPECT_CODE(weft_pool_join(cfg, WEFT_JOIN_JOIN, &other), WEFT_E_MISMATCH);
    CHECK(other == NULL, "no handle from a failed join");
    weft_config_free(cfg);
  }
  cfg = make_config(pool_name, "64MiB");
  if (cfg) {
    EXPECT_CODE(weft_pool_join(cfg, WEFT_JOIN_HOST, &other), WEFT_E_ALREADY_EXISTS);
    weft_config_free(cfg);
  }
  char nobody[96];
  snprintf(nobody, sizeof nobody, "%s-nobody", pool_name);
  cfg = make_config(nobody, "1MiB");
  if (cfg) {
    EXPECT_OK(weft_config_set(cfg, "deadline_ms", "2000"));
    EXPECT_CODE(weft_pool_join(cfg, WEFT_JOIN_JOIN, &other), WEFT_E_UNAVAILABLE);
    weft_config_free(cfg);
  }
  if (other) weft_pool_free(other);
}

static int run_host(const char* pool_name, pid_t child, int release_fd, int report_fd) {
  weft_config* cfg = make_config(pool_name, "64MiB");
  weft_pool* pool = NULL;
  int rc = cfg ? weft_pool_join(cfg, WEFT_JOIN_HOST, &pool) : WEFT_E_INTERNAL;
  weft_config_free(cfg);
  EXPECT_OK(rc);
  unsigned char release = rc == WEFT_OK ? (unsigned char)weft_pool_rank(pool) : 0xFF;
  if (write(release_fd, &release, 1) != 1) CHECK(0, "releasing the peer");
  close(release_fd);
  unsigned char peer_rank = 0xFF;
  if (rc == WEFT_OK && read(report_fd, &peer_rank, 1) != 1) peer_rank = 0xFF;
  CHECK(peer_rank != 0xFF, "the peer joined");

  uint8_t* outlives_pool = NULL;
  if (rc == WEFT_OK && peer_rank != 0xFF) {
    CHECK(weft_pool_local_size(pool) == kRankSize, "local size %" PRIu64, weft_pool_local_size(pool));
    CHECK(weft_pool_rank(pool) != peer_rank, "distinct ranks");
    EXPECT_OK(weft_pool_wait_for_peers(pool, 2, 30000));
    EXPECT_OK(weft_pool_barrier(pool, 60000)); /* 1 */

    check_error_strings();
    check_null_arguments(pool);

    /* Copies into the other peer's memory and back, at several sizes and offsets. */
    static const size_t sizes[] = {1, 63, 4096, 65537, (3u << 20) + 7, 16u << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      uint64_t gva = 0;
      EXPECT_OK(weft_alloc(pool, sizes[i] + 64, WEFT_PLACE_RANK, peer_rank, &gva));
      if (!gva) continue;
      uint32_t owner = 0;
      EXPECT_OK(weft_pool_rank_of(pool, gva, &owner));
      CHECK(owner == peer_rank, "rank_of: %u, expected %u", owner, (unsigned)peer_rank);
      round_trip(pool, gva, sizes[i], 1);
      round_trip(pool, gva + 1 + next_random() % 63, sizes[i], 0); /* unaligned, direction inferred */
      EXPECT_OK(weft_free(pool, gva));
    }
    /* Local and spread placement; route. */
    uint64_t local = 0, spread = 0, slice = 0;
    EXPECT_OK(weft_alloc(pool, 100000, WEFT_PLACE_LOCAL, 0, &local));
    EXPECT_OK(weft_pool_slice_address(pool, weft_pool_rank(pool), &slice));
    CHECK(local >= slice && local < slice + kRankSize, "a local allocation lies in this peer's slice");
    void* mapped = NULL;
    EXPECT_OK(weft_pool_local_address(pool, local, 100000, &mapped));
    CHECK(mapped != NULL, "local address");
    round_trip(pool, local, 100000, 1);
    EXPECT_OK(weft_alloc(pool, 100000, WEFT_PLACE_SPREAD, 0, &spread));
    round_trip(pool, spread, 100000, 0);
    char route[256];
    int n = weft_pool_route(pool, local, addr(route), 64, WEFT_DIR_AUTO, route, sizeof route);
    CHECK(n > 0 && strstr(route, "LH") != NULL, "route: %d '%s'", n, n > 0 ? route : "");
    char tiny[4];
    int m = weft_pool_route(pool, local, addr(route), 64, WEFT_DIR_AUTO, tiny, sizeof tiny);
    CHECK(m == n && strlen(tiny) == 3, "route truncates like snprintf (%d, '%s')", m, tiny);
    EXPECT_OK(weft_free(pool, local));
    EXPECT_OK(weft_free(pool, spread));

    check_batch(pool, peer_rank);
    outlives_pool = check_async(pool, peer_rank);
    check_errors(pool, pool_name, peer_rank);

    /* Keep one allocation in the peer's memory for after it has left. */
    uint64_t orphan = 0;
    EXPECT_OK(weft_alloc(pool, 4096, WEFT_PLACE_RANK, peer_rank, &orphan));
    EXPECT_OK(weft_pool_barrier(pool, 120000)); /* 2: the peer may leave */

    int status = 0;
    pid_t waited;
    do waited = waitpid(child, &status, 0);
    while (waited < 0 && errno == EINTR);
    CHECK(waited == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "the peer exited with status %d",
          WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    child = -1;

    /* The peer has left: copies into its memory fail with PEER_DOWN (the notice is
     * asynchronous, so give it a moment to arrive). */
    char buf[64] = {0};
    int down = WEFT_OK;
    for (int tries = 0; tries < 500; tries++) {
      down = weft_copy(pool, orphan, addr(buf), sizeof buf, WEFT_DIR_LH2GH);
      if (down != WEFT_OK) break;
      struct timespec nap = {0, 10 * 1000 * 1000};
      nanosleep(&nap, NULL);
    }
    EXPECT_CODE(down, WEFT_E_PEER_DOWN);
    EXPECT_CODE(weft_free(pool, orphan), WEFT_E_PEER_DOWN);

    /* After leaving, calls fail with CANCELLED. */
    EXPECT_OK(weft_pool_leave(pool));
    uint64_t gva = 0;
    weft_copy_handle* late = NULL;
    EXPECT_CODE(weft_alloc(pool, 64, WEFT_PLACE_LOCAL, 0, &gva), WEFT_E_CANCELLED);
    EXPECT_CODE(weft_copy(pool, addr(buf), addr(buf + 32), 16, WEFT_DIR_AUTO), WEFT_E_CANCELLED);
    EXPECT_CODE(weft_copy_async(pool, addr(buf), addr(buf + 32), 16, WEFT_DIR_AUTO, &late), WEFT_E_CANCELLED);
    EXPECT_CODE(weft_pool_barrier(pool, 1000), WEFT_E_CANCELLED);
    EXPECT_OK(weft_pool_leave(pool));
  }
  weft_pool_free(pool);
  free(outlives_pool);
  if (child > 0) {
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the peer exited with status %d",
          WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }
  printf("c_api_example [host]: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}

int main(void) {
  seed_random();
  char pool_name[64];
  snprintf(pool_name, sizeof pool_name, "capi-%ld-%04x", (long)getpid(), (unsigned)(next_random() & 0xFFFF));

  int release[2], report[2];
  if (pipe(release) != 0 || pipe(report) != 0) {
    perror("pipe");
    return 1;
  }
  fflush(stdout);
  pid_t child = fork();
  if (child < 0) {
    perror("fork");
    return 1;
  }
  if (child == 0) {
    close(release[1]);
    close(report[0]);
    seed_random();
    int rc = run_peer(pool_name, release[0], report[1]);
    fflush(stdout);
    _exit(rc);
  }
  close(release[0]);
  close(report[1]);
  int rc = run_host(pool_name, child, release[1], report[0]);
  if (rc == 0) printf("c_api_example: OK\n");
  return rc;
}
