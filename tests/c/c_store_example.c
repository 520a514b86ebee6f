/* The store's C API from plain C11: `weft store-master` (the weft binary, WEFT_BINARY) hosts the
 * master in its own process; a forked writer puts fresh random values (1 byte to 1 MiB, a batch
 * of 16, a zero-copy put) and a forked reader gets them into poisoned registered buffers with
 * every byte compared, then walks the error paths (a miss, a small buffer, an unregistered
 * buffer, a leased remove, bad arguments). Prints a summary; exits nonzero on any failed check.
 *
 * Every process is forked before any of them touches weft (a process with weft's threads must
 * not fork). The objects live in the writer's memory, so the writer stays until the reader is
 * done: two pipes carry "written" and "read". */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
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

#ifndef WEFT_BINARY
#error "WEFT_BINARY (the path of the weft binary) is set by tests/CMakeLists.txt"
#endif

static const char* who = "main";
static int checks = 0;
static int failures = 0;

enum { kObjects = 6, kBatch = 16, kZeroCopy = 256 << 10, kSlack = 64 };
static const uint64_t kSizes[kObjects] = {1, 100, 4096, 65536 + 3, 1 << 20, 1000};
static const uint8_t kPoison = 0xA5;

/* ---- values: derived from a seed chosen fresh in main, so both clients know them ---- */

static uint64_t run_seed;

/* xorshift64* */
static uint64_t next_random(uint64_t* state) {
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return *state * 0x2545F4914F6CDD1DULL;
}

/* The bytes of value `id` (objects 0..5, batch 100..115, zero-copy 200, upsert 300/301). */
static void fill_value(uint8_t* p, size_t n, uint64_t id) {
  uint64_t state = run_seed ^ ((id + 1) * 0x9E3779B97F4A7C15ULL);
  if (state == 0) state = 1;
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(next_random(&state) >> 56);
}

/* Index of the first byte of p that differs from value `id`, or -1. */
static long first_mismatch(const uint8_t* p, size_t n, uint64_t id) {
  uint8_t* want = malloc(n ? n : 1);
  if (!want) return 0;
  fill_value(want, n, id);
  long at = -1;
  for (size_t i = 0; i < n && at < 0; i++)
    if (p[i] != want[i]) at = (long)i;
  free(want);
  return at;
}

static int all_poison(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != kPoison) return 0;
  return 1;
}

static uint64_t batch_size(int i) { return (16u << 10) + (uint64_t)i; }

/* ---- plumbing ---- */

static int wait_byte(int fd) {
  unsigned char c = 0;
  ssize_t got;
  do got = read(fd, &c, 1);
  while (got < 0 && errno == EINTR);
  return got == 1 && c == 1;
}

static void send_byte(int fd, unsigned char c) {
  if (write(fd, &c, 1) != 1) fprintf(stderr, "[%s] write to a pipe: %s\n", who, strerror(errno));
}

static weft_store* open_store(const char* pool_name, const char* coordinator) {
  weft_config* cfg = weft_config_new();
  weft_store* store = NULL;
  CHECK(cfg != NULL, "weft_config_new");
  if (!cfg) return NULL;
  EXPECT_OK(weft_config_set(cfg, "pool_name", pool_name));
  EXPECT_OK(weft_config_set(cfg, "coordinator", coordinator));
  EXPECT_OK(weft_config_set(cfg, "rank_size", "64MiB"));
  EXPECT_OK(weft_store_open(cfg, WEFT_JOIN_JOIN, &store));
  weft_config_free(cfg);
  return store;
}

/* ---- the writer ---- */

static void put_objects(weft_store* store) {
  const weft_store_place place = WEFT_STORE_PLACE_DEFAULT;
  for (int i = 0; i < kObjects; i++) {
    uint8_t* v = malloc(kSizes[i]);
    CHECK(v != NULL, "malloc");
    if (!v) continue;
    fill_value(v, kSizes[i], (uint64_t)i);
    char key[32];
    snprintf(key, sizeof key, "obj/%d", i);
    EXPECT_OK(weft_store_put(store, key, v, kSizes[i], i % 2 ? &place : NULL));
    free(v);
  }
  /* Put-if-absent keeps the first value; upsert replaces it. */
  uint8_t small[300];
  fill_value(small, sizeof small, 300);
  EXPECT_CODE(weft_store_put(store, "obj/0", small, sizeof small, NULL), WEFT_E_ALREADY_EXISTS);
  EXPECT_OK(weft_store_put(store, "up", small, sizeof small, NULL));
  fill_value(small, sizeof small, 301);
  EXPECT_OK(weft_store_upsert(store, "up", small, sizeof small, NULL));
}

static void put_batch(weft_store* store) {
  char names[kBatch][32];
  const char* keys[kBatch];
  const void* values[kBatch];
  uint64_t sizes[kBatch];
  int results[kBatch];
  for (int i = 0; i < kBatch; i++) {
    snprintf(names[i], sizeof names[i], "batch/%d", i);
    keys[i] = names[i];
    sizes[i] = batch_size(i);
    uint8_t* v = malloc(sizes[i]);
    if (v) fill_value(v, sizes[i], 100 + (uint64_t)i);
    values[i] = v;
    results[i] = 12345;
  }
  EXPECT_OK(weft_store_put_batch(store, keys, values, sizes, kBatch, NULL, 0, results));
  for (int i = 0; i < kBatch; i++) {
    CHECK(results[i] == WEFT_OK, "put_batch result %d: %d (%s)", i, results[i], weft_error_string(results[i]));
    free((void*)values[i]);
  }
}

static void put_zero_copy(weft_store* store) {
  uint8_t* zc = malloc(kZeroCopy);
  uint8_t loose[100];
  CHECK(zc != NULL, "malloc");
  if (!zc) return;
  fill_value(zc, kZeroCopy, 200);
  EXPECT_OK(weft_store_register_buffer(store, zc, kZeroCopy));
  EXPECT_OK(weft_store_put_from(store, "zc", zc, kZeroCopy, NULL, 0));
  fill_value(loose, sizeof loose, 201);
  EXPECT_CODE(weft_store_put_from(store, "loose", loose, sizeof loose, NULL, 0), WEFT_E_NOT_REGISTERED);
  EXPECT_OK(weft_store_unregister_buffer(store, zc));
  EXPECT_CODE(weft_store_unregister_buffer(store, zc), WEFT_E_NOT_REGISTERED);
  free(zc); /* the value was copied into the pool: the buffer may go */
}

static int run_writer(const char* pool_name, const char* coordinator, int written_fd, int read_fd) {
  who = "writer";
  weft_store* store = open_store(pool_name, coordinator);
  if (store) {
    put_objects(store);
    put_batch(store);
    put_zero_copy(store);
  }
  send_byte(written_fd, store ? 1 : 0);
  CHECK(wait_byte(read_fd), "the reader finished");
  EXPECT_OK(weft_store_close(store));
  printf("c_store_example [writer]: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}

/* ---- the reader ---- */

/* key into [area, area + cap) (poisoned, registered): size, bytes, and nothing past the value. */
static void get_exact(weft_store* store, const char* key, uint8_t* area, uint64_t cap, uint64_t size, uint64_t id) {
  memset(area, kPoison, cap);
  int64_t got = weft_store_get_into(store, key, area, cap);
  CHECK(got == (int64_t)size, "get_into %s: %" PRId64 " (%s), expected %" PRIu64, key, got,
        got < 0 ? weft_error_string((int)got) : "bytes", size);
  if (got != (int64_t)size) return;
  long at = first_mismatch(area, size, id);
  CHECK(at < 0, "get_into %s: first wrong byte at %ld of %" PRIu64, key, at, size);
  CHECK(all_poison(area + size, cap - size), "get_into %s wrote past the value", key);
}

static void read_objects(weft_store* store, uint8_t* area) {
  for (int i = 0; i < kObjects; i++) {
    char key[32];
    snprintf(key, sizeof key, "obj/%d", i);
    get_exact(store, key, area, kSizes[i] + kSlack, kSizes[i], (uint64_t)i);
    uint64_t size = 0;
    EXPECT_OK(weft_store_get_size(store, key, &size));
    CHECK(size == kSizes[i], "get_size %s: %" PRIu64, key, size);
  }
  get_exact(store, "up", area, 300 + kSlack, 300, 301);
  get_exact(store, "zc", area, kZeroCopy, kZeroCopy, 200);
}

/* The batch with a miss in the middle: one result each, the miss writes nothing. */
static void read_batch(weft_store* store, uint8_t* area) {
  enum { n = kBatch + 1, kMiss = 8 };
  const uint64_t stride = (17u << 10) + kSlack;
  char names[n][32];
  const char* keys[n];
  void* buffers[n];
  uint64_t sizes[n];
  int64_t results[n];
  memset(area, kPoison, stride * n);
  for (int i = 0; i < n; i++) {
    const int b = i < kMiss ? i : i - 1;
    if (i == kMiss)
      snprintf(names[i], sizeof names[i], "batch/missing");
    else
      snprintf(names[i], sizeof names[i], "batch/%d", b);
    keys[i] = names[i];
    buffers[i] = area + (uint64_t)i * stride;
    sizes[i] = stride;
  }
  EXPECT_CODE(weft_store_get_into_batch(store, keys, buffers, sizes, n, results), WEFT_E_NOT_FOUND);
  for (int i = 0; i < n; i++) {
    const uint8_t* p = buffers[i];
    if (i == kMiss) {
      CHECK(results[i] == WEFT_E_NOT_FOUND, "the miss in the batch: %" PRId64, results[i]);
      CHECK(all_poison(p, stride), "the miss in the batch wrote into its buffer");
      continue;
    }
    const int b = i < kMiss ? i : i - 1;
    CHECK(results[i] == (int64_t)batch_size(b), "batch/%d: %" PRId64 ", expected %" PRIu64, b, results[i],
          batch_size(b));
    if (results[i] != (int64_t)batch_size(b)) continue;
    long at = first_mismatch(p, batch_size(b), 100 + (uint64_t)b);
    CHECK(at < 0, "batch/%d: first wrong byte at %ld", b, at);
    CHECK(all_poison(p + batch_size(b), stride - batch_size(b)), "batch/%d wrote past the value", b);
  }
}

/* A miss, a small buffer, an unregistered buffer: each its code, and nothing written. */
static void read_errors(weft_store* store, uint8_t* area) {
  memset(area, kPoison, 4096);
  EXPECT_CODE((int)weft_store_get_into(store, "missing", area, 4096), WEFT_E_NOT_FOUND);
  EXPECT_CODE((int)weft_store_get_into(store, "loose", area, 4096), WEFT_E_NOT_FOUND); /* refused put_from */
  EXPECT_CODE((int)weft_store_get_into(store, "obj/4", area, 1000), WEFT_E_INVALID_ARGUMENT);
  CHECK(all_poison(area, 4096), "a miss or a too-small buffer wrote into it");
  uint8_t* loose = malloc(kSizes[3]);
  if (loose) {
    EXPECT_CODE((int)weft_store_get_into(store, "obj/3", loose, kSizes[3]), WEFT_E_NOT_REGISTERED);
    free(loose);
  }
  uint64_t size = 7;
  EXPECT_CODE(weft_store_get_size(store, "missing", &size), WEFT_E_NOT_FOUND);
  EXPECT_CODE(weft_store_exists(store, "missing"), 0);
  EXPECT_CODE(weft_store_exists(store, "obj/2"), 1);
}

/* Where obj/1 is: one replica of its size, no disk copy; the count also without room for it. */
static void describe(weft_store* store) {
  weft_store_replica replicas[2] = {{7, 7}, {7, 7}};
  uint64_t size = 0;
  size_t count = 0;
  int32_t disk_rank = 7;
  EXPECT_OK(weft_store_describe(store, "obj/1", &size, replicas, 2, &count, &disk_rank));
  CHECK(size == kSizes[1] && count == 1 && disk_rank == -1, "describe obj/1: size %" PRIu64 ", %zu replicas, disk %d",
        size, count, (int)disk_rank);
  CHECK(replicas[0].gva != 0 && replicas[1].rank == 7 && replicas[1].gva == 7, "describe filled one replica only");
  count = 0;
  EXPECT_OK(weft_store_describe(store, "obj/1", &size, NULL, 0, &count, NULL));
  CHECK(count == 1, "describe without room counts the replicas: %zu", count);
  EXPECT_CODE(weft_store_describe(store, "missing", &size, replicas, 2, &count, NULL), WEFT_E_NOT_FOUND);
  EXPECT_CODE(weft_store_describe(store, "", &size, replicas, 2, &count, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_store_describe(store, "obj/1", &size, NULL, 2, &count, NULL), WEFT_E_INVALID_ARGUMENT);
}

static void bad_arguments(weft_store* store, uint8_t* area) {
  char long_key[4098];
  memset(long_key, 'k', sizeof long_key - 1);
  long_key[sizeof long_key - 1] = '\0';
  EXPECT_CODE(weft_store_put(store, NULL, area, 1, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_store_put(store, "", area, 1, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_store_put(store, long_key, area, 1, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_store_put(store, "k", NULL, 1, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_store_put(store, "k", area, 0, NULL), WEFT_E_INVALID_ARGUMENT);
  const weft_store_place nine = {9, 0, 0, -1};
  EXPECT_CODE(weft_store_put(store, "k", area, 1, &nine), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE((int)weft_store_get_into(store, "obj/0", NULL, 1), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_store_register_buffer(store, area, 16), WEFT_E_INVALID_ARGUMENT); /* overlaps */
  EXPECT_CODE(weft_store_remove_by_regex(store, "(", 1, NULL), WEFT_E_INVALID_ARGUMENT);
  const char* keys[2] = {"a", NULL};
  const void* values[2] = {area, area};
  const uint64_t sizes[2] = {1, 1};
  int results[2] = {0, 0};
  EXPECT_CODE(weft_store_put_batch(store, keys, values, sizes, 2, NULL, 0, results), WEFT_E_INVALID_ARGUMENT);
  CHECK(results[0] == WEFT_E_INVALID_ARGUMENT && results[1] == WEFT_E_INVALID_ARGUMENT,
        "a refused batch: results %d %d", results[0], results[1]);
  EXPECT_CODE(weft_store_exists(store, "a"), 0);
}

static void removes(weft_store* store) {
  /* obj/2 is leased by the exists above. */
  EXPECT_CODE(weft_store_remove(store, "obj/2", 0), WEFT_E_BUSY);
  EXPECT_OK(weft_store_remove(store, "obj/2", 1));
  EXPECT_CODE(weft_store_remove(store, "obj/2", 1), WEFT_E_NOT_FOUND);
  uint64_t removed = 0;
  EXPECT_OK(weft_store_remove_by_regex(store, "^batch/", 1, &removed));
  CHECK(removed == kBatch, "remove_by_regex took %" PRIu64 ", expected %d", removed, kBatch);
  EXPECT_OK(weft_store_remove_all(store, 1, &removed));
  /* obj/0,1,3,4,5, up, zc */
  CHECK(removed == kObjects - 1 + 2, "remove_all took %" PRIu64 ", expected %d", removed, kObjects + 1);
  EXPECT_CODE(weft_store_exists(store, "obj/0"), 0);
}

static int run_reader(const char* pool_name, const char* coordinator, int read_fd, int written_fd) {
  who = "reader";
  weft_store* store = open_store(pool_name, coordinator);
  const size_t area_size = (size_t)(kBatch + 1) * ((17u << 10) + kSlack) + (2u << 20);
  uint8_t* area = malloc(area_size);
  CHECK(area != NULL, "malloc");
  CHECK(wait_byte(written_fd), "the writer finished");
  if (store && area && failures == 0) {
    EXPECT_OK(weft_store_register_buffer(store, area, area_size));
    read_objects(store, area);
    read_batch(store, area);
    read_errors(store, area);
    describe(store);
    bad_arguments(store, area);
    removes(store);
    EXPECT_OK(weft_store_unregister_buffer(store, area));
  }
  send_byte(read_fd, 1);
  EXPECT_OK(weft_store_close(store));
  free(area);
  printf("c_store_example [reader]: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}

/* ---- main: the master, then the two clients ---- */

/* Starts `weft store-master` with its stdout on a pipe; returns its pid once it says it listens,
 * or -1. *out_fd keeps the pipe open (the master writes to it again when it stops). */
static pid_t start_master(const char* pool_name, const char* coordinator, int* out_fd) {
  int out[2];
  if (pipe(out) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    char name[128], coord[256];
    snprintf(name, sizeof name, "pool_name=%s", pool_name);
    snprintf(coord, sizeof coord, "coordinator=%s", coordinator);
    execl(WEFT_BINARY, WEFT_BINARY, "store-master", "--set", name, "--set", coord, "--set", "rank_size=64MiB",
          (char*)NULL);
    fprintf(stderr, "exec %s: %s\n", WEFT_BINARY, strerror(errno));
    _exit(127);
  }
  close(out[1]);
  *out_fd = out[0];
  char text[4096] = "";
  size_t len = 0;
  struct pollfd pfd = {out[0], POLLIN, 0};
  while (len + 1 < sizeof text && !strstr(text, "listening on")) {
    if (poll(&pfd, 1, 20000) <= 0) break; /* 20 s: the master did not come up */
    ssize_t got = read(out[0], text + len, sizeof text - 1 - len);
    if (got <= 0) break;
    len += (size_t)got;
    text[len] = '\0';
  }
  if (strstr(text, "listening on")) return pid;
  fprintf(stderr, "[main] the master did not start; it printed: %s\n", text);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return -1;
}

static int wait_child(pid_t pid, const char* role) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the %s exited with %s %d", role,
        WIFEXITED(status) ? "status" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Forks a client that writes to `send_fd` and reads `receive_fd`. It closes the other ends it
 * inherited, so a client that dies ends its partner's wait with EOF instead of a hang. */
static pid_t fork_client(int (*body)(const char*, const char*, int, int), const char* pool_name,
                         const char* coordinator, int send_fd, int receive_fd, const int all_fds[4]) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid != 0) return pid;
  for (int i = 0; i < 4; i++)
    if (all_fds[i] != send_fd && all_fds[i] != receive_fd) close(all_fds[i]);
  alarm(240); /* a hung client fails the test instead of hanging it */
  /* exit, not _exit: stdout (a pipe under ctest) is flushed, and under ASAN the leak check runs
   * on the client, the one process here that used weft. */
  exit(body(pool_name, coordinator, send_fd, receive_fd));
}

int main(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  run_seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
  char pool_name[64], coordinator[128];
  snprintf(pool_name, sizeof pool_name, "cstore-%ld-%04x", (long)getpid(), (unsigned)(run_seed & 0xFFFF));
  snprintf(coordinator, sizeof coordinator, "/tmp/weft-%s.sock", pool_name);

  int master_out = -1;
  pid_t master = start_master(pool_name, coordinator, &master_out);
  if (master < 0) return 1;
  int written[2], read_done[2];
  if (pipe(written) != 0 || pipe(read_done) != 0) {
    perror("pipe");
    kill(master, SIGKILL);
    return 1;
  }
  const int fds[4] = {written[0], written[1], read_done[0], read_done[1]};
  pid_t writer = fork_client(run_writer, pool_name, coordinator, written[1], read_done[0], fds);
  pid_t reader = fork_client(run_reader, pool_name, coordinator, read_done[1], written[0], fds);
  CHECK(writer > 0 && reader > 0, "fork: %s", strerror(errno));
  /* Only the clients hold the pipes now: a client that dies unblocks the other. */
  close(written[0]);
  close(written[1]);
  close(read_done[0]);
  close(read_done[1]);
  if (writer > 0) wait_child(writer, "writer");
  if (reader > 0) wait_child(reader, "reader");
  kill(master, SIGTERM);
  wait_child(master, "master");
  close(master_out);
  unlink(coordinator);
  printf("c_store_example: %d checks in main, %d failed%s\n", checks, failures, failures ? "" : "; OK");
  return failures ? 1 : 0;
}
