/* Symmetric memory's C API from plain C11: four ranks of one pool (this process hosts it, three
 * forked children join) make a team and run the eight collectives on fresh random data, every
 * byte compared with a reference computed here; one-sided puts, signals and gets; a sub-team;
 * the error paths (NULL handles and outputs, a bad rank, dtype, op or root, disagreeing ranks);
 * and last, one child kills itself and the others' next collective returns PEER_DOWN. Prints a
 * summary per rank; exits nonzero on any failed check.
 *
 * Every process is forked before any of them touches weft (a process with weft's threads must
 * not fork). Each rank derives every rank's inputs from a seed chosen fresh in main, so each can
 * check its own results without seeing the others' buffers. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
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

static const char* who = "host";
static int checks = 0;
static int failures = 0;

enum { kRanks = 4, kVictimChild = 2 };
static const int64_t kTimeoutMs = 30000;
static const uint8_t kPoison = 0xA5;
static uint64_t run_seed;

/* ---- inputs: every rank's, from the shared seed ---- */

static uint64_t next_random(uint64_t* state) { /* xorshift64* */
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return *state * 0x2545F4914F6CDD1DULL;
}

static uint64_t stream_of(uint64_t salt, uint32_t rank) {
  uint64_t state = run_seed ^ ((salt + 1) * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)(rank + 1) << 48);
  return state ? state : 1;
}

/* n elements of rank's input for call `salt`. f32 values are multiples of 1/4 in [-2, 2], so
 * sums of a few are exact in any order; the other dtypes take raw random bits. */
static void fill_input(int dtype, void* out, size_t n, uint64_t salt, uint32_t rank) {
  uint64_t state = stream_of(salt, rank);
  for (size_t i = 0; i < n; i++) {
    uint64_t v = next_random(&state);
    switch (dtype) {
      case WEFT_DTYPE_F32: ((float*)out)[i] = (float)((int)(v % 17) - 8) / 4.0f; break;
      case WEFT_DTYPE_BF16: case WEFT_DTYPE_F16: ((uint16_t*)out)[i] = (uint16_t)(v >> 48); break;
      case WEFT_DTYPE_I32: ((int32_t*)out)[i] = (int32_t)(uint32_t)(v >> 32); break;
      case WEFT_DTYPE_I64: ((int64_t*)out)[i] = (int64_t)v; break;
      default: ((uint8_t*)out)[i] = (uint8_t)(v >> 56); break;
    }
  }
}

static void* input_of(int dtype, size_t n, uint64_t salt, uint32_t rank) {
  void* p = malloc(n * weft_dtype_size(dtype) + 1);
  if (p) fill_input(dtype, p, n, salt, rank);
  return p;
}

/* Element i of the reduction over every rank's input, in rank order, as the library computes
 * it (integer sums and products wrap: done in unsigned arithmetic). */
static void reduce_element(int dtype, int op, void* const* in, size_t i, void* out) {
  for (uint32_t r = 0; r < kRanks; r++) {
    switch (dtype) {
#define REDUCE_AS(T, U)                                                       \
  {                                                                           \
    T x = ((const T*)in[r])[i], *acc = (T*)out + i;                           \
    if (r == 0) *acc = x;                                                     \
    else if (op == WEFT_REDUCE_SUM) *acc = (T)((U)*acc + (U)x);               \
    else if (op == WEFT_REDUCE_PROD) *acc = (T)((U)*acc * (U)x);              \
    else if (op == WEFT_REDUCE_MAX) *acc = x > *acc ? x : *acc;               \
    else *acc = x < *acc ? x : *acc;                                          \
  }                                                                           \
  break;
      case WEFT_DTYPE_F32: REDUCE_AS(float, float)
      case WEFT_DTYPE_I32: REDUCE_AS(int32_t, uint32_t)
      case WEFT_DTYPE_I64: REDUCE_AS(int64_t, uint64_t)
      case WEFT_DTYPE_U8: REDUCE_AS(uint8_t, unsigned)
#undef REDUCE_AS
      default: break;
    }
  }
}

/* Index of the first differing byte, or -1. */
static long first_difference(const void* a, const void* b, size_t n) {
  const uint8_t *x = a, *y = b;
  for (size_t i = 0; i < n; i++)
    if (x[i] != y[i]) return (long)i;
  return -1;
}

#define SAME_BYTES(got, want, n, ...)                                                          \
  do {                                                                                         \
    long at_ = first_difference((got), (want), (n));                                           \
    CHECK(at_ < 0, __VA_ARGS__);                                                               \
    if (at_ >= 0) fprintf(stderr, "  first wrong byte at %ld of %zu\n", at_, (size_t)(n));     \
  } while (0)

/* ---- the collectives ---- */

typedef struct {
  weft_team* team;
  uint32_t me;
  uint64_t salt; /* a new one per call, so every call moves new data */
} ctx;

/* Every rank's input of n elements for the next call. */
static void all_inputs(ctx* c, int dtype, size_t n, void** in) {
  c->salt++;
  for (uint32_t r = 0; r < kRanks; r++) in[r] = input_of(dtype, n, c->salt, r);
}

static void free_inputs(void** in) {
  for (uint32_t r = 0; r < kRanks; r++) free(in[r]);
}

static void check_allreduce(ctx* c, int dtype, int op, size_t count, int in_place) {
  const size_t bytes = count * weft_dtype_size(dtype);
  void* in[kRanks];
  all_inputs(c, dtype, count, in);
  uint8_t* send = malloc(bytes + 1);
  uint8_t* out = malloc(bytes + 1);
  uint8_t* want = malloc(bytes + 1);
  memcpy(send, in[c->me], bytes);
  memset(out, kPoison, bytes + 1);
  uint8_t* recv = in_place ? send : out;
  EXPECT_OK(weft_team_allreduce(c->team, send, recv, count, dtype, op, kTimeoutMs));
  for (size_t i = 0; i < count; i++) reduce_element(dtype, op, in, i, want);
  SAME_BYTES(recv, want, bytes, "allreduce dtype %d op %d count %zu in place %d", dtype, op, count, in_place);
  if (!in_place) {
    CHECK(out[bytes] == kPoison, "allreduce wrote past its output");
    SAME_BYTES(send, in[c->me], bytes, "allreduce changed its send buffer");
  }
  free(send);
  free(out);
  free(want);
  free_inputs(in);
}

static void check_reduce_and_reduce_scatter(ctx* c, int dtype, int op, size_t count) {
  const size_t es = weft_dtype_size(dtype), bytes = count * es;
  const uint32_t root = (uint32_t)(c->salt % kRanks);
  void* in[kRanks];
  all_inputs(c, dtype, count * kRanks, in);
  uint8_t* want = malloc(bytes * kRanks + 1);
  uint8_t* out = malloc(bytes + 1);
  for (size_t i = 0; i < count * kRanks; i++) reduce_element(dtype, op, in, i, want);
  memset(out, kPoison, bytes + 1);
  EXPECT_OK(weft_team_reduce(c->team, in[c->me], out, count, dtype, op, root, 0)); /* 0: the team's timeout */
  if (c->me == root) SAME_BYTES(out, want, bytes, "reduce dtype %d op %d count %zu", dtype, op, count);
  memset(out, kPoison, bytes + 1);
  EXPECT_OK(weft_team_reduce_scatter(c->team, in[c->me], out, count, dtype, op, -1)); /* -1: the same */
  SAME_BYTES(out, want + c->me * bytes, bytes, "reduce_scatter dtype %d op %d count %zu", dtype, op, count);
  CHECK(out[bytes] == kPoison, "reduce_scatter wrote past its output");
  free(want);
  free(out);
  free_inputs(in);
}

/* broadcast, scatter, gather, allgather and alltoall: rank r's send buffer is kRanks blocks. */
static void check_movement(ctx* c, int dtype, size_t count) {
  const size_t block = count * weft_dtype_size(dtype), all = block * kRanks;
  const uint32_t me = c->me, root = (uint32_t)(c->salt % kRanks);
  void* in[kRanks];
  all_inputs(c, dtype, count * kRanks, in);
#define BLOCK(r, b) ((const uint8_t*)in[r] + (size_t)(b) * block)
  uint8_t* out = malloc(all + 1);
  uint8_t* buf = malloc(block + 1);

  memset(buf, kPoison, block + 1);
  memcpy(buf, BLOCK(me, 0), block);
  EXPECT_OK(weft_team_broadcast(c->team, buf, count, dtype, root, kTimeoutMs));
  SAME_BYTES(buf, BLOCK(root, 0), block, "broadcast from %u, dtype %d count %zu", root, dtype, count);
  CHECK(buf[block] == kPoison, "broadcast wrote past its buffer");

  memset(buf, kPoison, block + 1);
  EXPECT_OK(weft_team_scatter(c->team, me == root ? in[me] : NULL, buf, count, dtype, root, kTimeoutMs));
  SAME_BYTES(buf, BLOCK(root, me), block, "scatter from %u, count %zu", root, count);

  memset(out, kPoison, all + 1);
  EXPECT_OK(weft_team_gather(c->team, in[me], me == root ? out : NULL, count, dtype, root, kTimeoutMs));
  if (me == root)
    for (uint32_t r = 0; r < kRanks; r++) SAME_BYTES(out + r * block, BLOCK(r, 0), block, "gather from %u", r);

  memset(out, kPoison, all + 1);
  EXPECT_OK(weft_team_allgather(c->team, in[me], out, count, dtype, kTimeoutMs));
  for (uint32_t r = 0; r < kRanks; r++) SAME_BYTES(out + r * block, BLOCK(r, 0), block, "allgather from %u", r);
  memset(out, kPoison, all + 1);
  memcpy(out + me * block, BLOCK(me, 0), block);
  EXPECT_OK(weft_team_allgather(c->team, out + me * block, out, count, dtype, kTimeoutMs));
  for (uint32_t r = 0; r < kRanks; r++) SAME_BYTES(out + r * block, BLOCK(r, 0), block, "allgather in place from %u", r);
  CHECK(out[all] == kPoison, "allgather wrote past its output");

  memset(out, kPoison, all + 1);
  EXPECT_OK(weft_team_alltoall(c->team, in[me], out, count, dtype, kTimeoutMs));
  for (uint32_t r = 0; r < kRanks; r++) SAME_BYTES(out + r * block, BLOCK(r, me), block, "alltoall from %u", r);
  memcpy(out, in[me], all);
  EXPECT_OK(weft_team_alltoall(c->team, out, out, count, dtype, kTimeoutMs));
  for (uint32_t r = 0; r < kRanks; r++) SAME_BYTES(out + r * block, BLOCK(r, me), block, "alltoall in place from %u", r);
#undef BLOCK
  free(out);
  free(buf);
  free_inputs(in);
}

static void check_collectives(ctx* c) {
  /* One element, counts that are no multiple of the ranks, several steps of slot_bytes, and the
   * two-phase allreduce past one_shot_max_bytes. */
  static const size_t counts[] = {1, 7, 1001, 6000};
  static const int movers[] = {WEFT_DTYPE_U8, WEFT_DTYPE_BF16, WEFT_DTYPE_F16, WEFT_DTYPE_I64};
  for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
    const size_t n = counts[k];
    check_allreduce(c, WEFT_DTYPE_F32, WEFT_REDUCE_SUM, n, 0);
    check_allreduce(c, WEFT_DTYPE_I32, WEFT_REDUCE_SUM, n, 1);
    check_allreduce(c, WEFT_DTYPE_I64, WEFT_REDUCE_PROD, n, 0);
    check_allreduce(c, WEFT_DTYPE_U8, WEFT_REDUCE_MAX, n, 1);
    check_allreduce(c, WEFT_DTYPE_I32, WEFT_REDUCE_MIN, n, 0);
    check_reduce_and_reduce_scatter(c, WEFT_DTYPE_I64, WEFT_REDUCE_SUM, n);
    check_reduce_and_reduce_scatter(c, WEFT_DTYPE_F32, WEFT_REDUCE_MAX, n);
    check_movement(c, movers[k], n);
  }
}

/* ---- one-sided ---- */

/* Every rank puts a block into every other rank's heap and adds 1 to its signal; each waits for
 * kRanks-1 signals and finds every block, then reads its own block back from the next rank. */
static void check_puts_and_signals(ctx* c) {
  const uint32_t me = c->me, next = (me + 1) % kRanks;
  const size_t len = (64 << 10) + 3;
  uint64_t data = 0, sig = 0;
  EXPECT_OK(weft_symm_malloc(c->team, kRanks * len, kTimeoutMs, &data));
  EXPECT_OK(weft_symm_malloc(c->team, 8, kTimeoutMs, &sig));
  void *local = NULL, *local_sig = NULL;
  EXPECT_OK(weft_symm_local(c->team, data, &local));
  EXPECT_OK(weft_symm_local(c->team, sig, &local_sig));
  if (!local || !local_sig) return;
  memset(local, 0, kRanks * len);
  memset(local_sig, 0, 8);
  EXPECT_OK(weft_team_barrier(c->team, kTimeoutMs));

  const uint64_t salt = ++c->salt;
  uint8_t* block = malloc(len);
  for (uint32_t k = 1; k < kRanks; k++) { /* a different order on every rank */
    const uint32_t peer = (me + k) % kRanks;
    fill_input(WEFT_DTYPE_U8, block, len, salt + peer, me);
    EXPECT_OK(weft_symm_put_signal(c->team, peer, data + me * len, block, len, sig, 1, WEFT_SIGNAL_ADD));
  }
  EXPECT_OK(weft_symm_quiet(c->team));
  EXPECT_OK(weft_symm_wait_until(c->team, sig, WEFT_CMP_GE, kRanks - 1, kTimeoutMs));
  uint64_t value = 0;
  EXPECT_OK(weft_symm_signal_value(c->team, sig, &value));
  CHECK(value == kRanks - 1, "the signal reads %" PRIu64, value);
  for (uint32_t from = 0; from < kRanks; from++) {
    if (from == me) continue;
    fill_input(WEFT_DTYPE_U8, block, len, salt + me, from);
    SAME_BYTES((uint8_t*)local + from * len, block, len, "the block put by rank %u", from);
  }
  EXPECT_OK(weft_team_barrier(c->team, kTimeoutMs));

  /* Get back what this rank put into the next one, then overwrite it with a plain put. */
  uint8_t* back = malloc(len);
  memset(back, kPoison, len);
  EXPECT_OK(weft_symm_get(c->team, back, next, data + me * len, len));
  fill_input(WEFT_DTYPE_U8, block, len, salt + next, me);
  SAME_BYTES(back, block, len, "get from rank %u", next);
  fill_input(WEFT_DTYPE_U8, block, len, salt + 100, me);
  EXPECT_OK(weft_symm_put(c->team, next, data + me * len, block, len));
  EXPECT_OK(weft_symm_fence(c->team));
  memset(back, kPoison, len);
  EXPECT_OK(weft_symm_get(c->team, back, next, data + me * len, len));
  SAME_BYTES(back, block, len, "put then get at rank %u", next);
  void* mapped = NULL; /* one node: every peer's heap is mapped here */
  EXPECT_OK(weft_symm_peer_address(c->team, next, data + me * len, &mapped));
  if (mapped) SAME_BYTES(mapped, block, len, "the peer's heap as mapped here");

  /* Bad input: a rank outside the team, past the heap, a misaligned or unknown signal. */
  const uint64_t heap = weft_team_heap_bytes(c->team);
  EXPECT_CODE(weft_symm_put(c->team, kRanks, data, block, 8), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_get(c->team, back, kRanks + 7, data, 8), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_peer_address(c->team, kRanks, data, &mapped), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_put(c->team, next, heap - 8, block, 16), WEFT_E_OUT_OF_RANGE);
  EXPECT_CODE(weft_symm_get(c->team, back, next, UINT64_MAX - 4, 8), WEFT_E_OUT_OF_RANGE);
  EXPECT_CODE(weft_symm_local(c->team, heap, &mapped), WEFT_E_OUT_OF_RANGE);
  EXPECT_CODE(weft_symm_put_signal(c->team, next, data, block, 8, sig + 4, 1, WEFT_SIGNAL_SET), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_put_signal(c->team, next, data, block, 8, sig, 1, 7), WEFT_E_INVALID_ARGUMENT);
  CHECK(strstr(weft_last_error(), "signal_op 7") != NULL, "message: %s", weft_last_error());
  EXPECT_CODE(weft_symm_wait_until(c->team, sig, 6, 0, 100), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_wait_until(c->team, sig, WEFT_CMP_GT, 1000, 50), WEFT_E_TIMEOUT);
  EXPECT_CODE(weft_symm_signal_value(c->team, sig + 1, &value), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_signal_value(c->team, heap - 4, &value), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_put(c->team, next, data, NULL, 8), WEFT_E_INVALID_ARGUMENT);

  EXPECT_OK(weft_team_barrier(c->team, kTimeoutMs));
  EXPECT_OK(weft_symm_free(c->team, sig, kTimeoutMs));
  EXPECT_OK(weft_symm_free(c->team, data, kTimeoutMs));
  free(block);
  free(back);
}

/* ---- errors ---- */

static void check_null_arguments(weft_pool* pool, weft_team* team) {
  weft_team* t = NULL;
  uint64_t u64 = 0;
  uint32_t u32 = 0;
  void* p = NULL;
  const void* cp = NULL;
  size_t n = 0;
  int x = 0;
  EXPECT_CODE(weft_team_create(NULL, NULL, &t), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_create(pool, NULL, NULL), WEFT_E_INVALID_ARGUMENT);
  CHECK(strstr(weft_last_error(), "out is NULL") != NULL, "message: %s", weft_last_error());
  weft_team_options bad_context = WEFT_TEAM_OPTIONS_DEFAULT;
  bad_context.user_context_len = 4;
  EXPECT_CODE(weft_team_create(pool, &bad_context, &t), WEFT_E_INVALID_ARGUMENT);
  CHECK(t == NULL, "no team from a failed create");
  CHECK(weft_team_rank(NULL) == UINT32_MAX && weft_team_size(NULL) == 0 && weft_team_heap_bytes(NULL) == 0,
        "accessors of a NULL team");
  weft_team_free(NULL);
  EXPECT_CODE(weft_team_pool_rank(NULL, 0, &u32), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_pool_rank(team, 0, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_pool_rank(team, kRanks, &u32), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_user_context(team, 0, &cp, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_user_context(team, kRanks, &cp, &n), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_split(NULL, NULL, 0, 0, &t), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_split(team, NULL, 0, 0, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_malloc(NULL, 64, 0, &u64), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_malloc(team, 64, 0, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_free(NULL, 0, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_local(NULL, 0, &p), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_local(team, 0, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_peer_address(team, 0, 0, NULL), WEFT_E_INVALID_ARGUMENT);
  /* A team made without device_heap_bytes has no device heap. */
  EXPECT_CODE(weft_symm_device_malloc(NULL, 64, 0, &u64), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_device_local(team, 0, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_device_local(team, 0, &p), WEFT_E_NOT_SUPPORTED);
  EXPECT_CODE(weft_symm_device_peer_address(team, 0, 0, &p), WEFT_E_NOT_SUPPORTED);
  weft_team_set_stream(NULL, NULL);
  EXPECT_CODE(weft_team_device_synchronize(team, 0), WEFT_E_NOT_SUPPORTED);
  EXPECT_CODE(weft_team_device_synchronize(NULL, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_put(NULL, 0, 0, &x, 4), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_get(team, NULL, 0, 0, 4), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_put_signal(NULL, 0, 0, &x, 4, 0, 1, WEFT_SIGNAL_SET), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_wait_until(NULL, 0, WEFT_CMP_EQ, 0, 10), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_signal_value(team, 0, NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_fence(NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_symm_quiet(NULL), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_barrier(NULL, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_broadcast(NULL, &x, 1, WEFT_DTYPE_I32, 0, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_scatter(NULL, &x, &x, 1, WEFT_DTYPE_I32, 0, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_gather(NULL, &x, &x, 1, WEFT_DTYPE_I32, 0, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_allgather(NULL, &x, &x, 1, WEFT_DTYPE_I32, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_reduce(NULL, &x, &x, 1, WEFT_DTYPE_I32, WEFT_REDUCE_SUM, 0, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_reduce_scatter(NULL, &x, &x, 1, WEFT_DTYPE_I32, WEFT_REDUCE_SUM, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_allreduce(NULL, &x, &x, 1, WEFT_DTYPE_I32, WEFT_REDUCE_SUM, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_team_alltoall(NULL, &x, &x, 1, WEFT_DTYPE_I32, 0), WEFT_E_INVALID_ARGUMENT);
  CHECK(strstr(weft_last_error(), "team is NULL") != NULL, "message: %s", weft_last_error());
  CHECK(weft_dtype_size(WEFT_DTYPE_BF16) == 2 && weft_dtype_size(WEFT_DTYPE_I64) == 8 && weft_dtype_size(6) == 0 &&
            weft_dtype_size(-1) == 0,
        "weft_dtype_size");
}

/* Collective errors: each call is made by every rank, some with their own bad arguments. */
static void check_collective_errors(ctx* c) {
  const uint32_t me = c->me;
  float a[16], b[16];
  for (int i = 0; i < 16; i++) a[i] = 1.0f;
  /* A bad dtype, op or root on every rank: INVALID_ARGUMENT everywhere, naming the value. */
  EXPECT_CODE(weft_team_allreduce(c->team, a, b, 16, 42, WEFT_REDUCE_SUM, kTimeoutMs), WEFT_E_INVALID_ARGUMENT);
  CHECK(strstr(weft_last_error(), "dtype 42") != NULL, "message: %s", weft_last_error());
  EXPECT_CODE(weft_team_allgather(c->team, a, b, 1, -1000000, kTimeoutMs), WEFT_E_INVALID_ARGUMENT);
  CHECK(strstr(weft_last_error(), "dtype -1000000") != NULL, "message: %s", weft_last_error());
  EXPECT_CODE(weft_team_allreduce(c->team, a, b, 16, WEFT_DTYPE_F32, 9, kTimeoutMs), WEFT_E_INVALID_ARGUMENT);
  CHECK(strstr(weft_last_error(), "op 9") != NULL, "message: %s", weft_last_error());
  EXPECT_CODE(weft_team_broadcast(c->team, a, 16, WEFT_DTYPE_F32, kRanks, kTimeoutMs), WEFT_E_INVALID_ARGUMENT);
  CHECK(strstr(weft_last_error(), "root") != NULL, "message: %s", weft_last_error());
  /* A bad dtype on one rank: INVALID_ARGUMENT there, MISMATCH on the others, at once. */
  int rc = weft_team_allreduce(c->team, a, b, 16, me == 1 ? 77 : WEFT_DTYPE_F32, WEFT_REDUCE_SUM, kTimeoutMs);
  CHECK(rc == (me == 1 ? WEFT_E_INVALID_ARGUMENT : WEFT_E_MISMATCH), "one bad dtype gave %s", weft_error_string(rc));
  /* A NULL buffer on one rank, likewise. */
  rc = weft_team_allreduce(c->team, me == 2 ? NULL : a, b, 16, WEFT_DTYPE_F32, WEFT_REDUCE_SUM, kTimeoutMs);
  CHECK(rc == (me == 2 ? WEFT_E_INVALID_ARGUMENT : WEFT_E_MISMATCH), "one NULL buffer gave %s", weft_error_string(rc));
  /* Another count, or another collective, on one rank: MISMATCH everywhere. */
  EXPECT_CODE(weft_team_allreduce(c->team, a, b, me == 3 ? 15 : 16, WEFT_DTYPE_F32, WEFT_REDUCE_SUM, kTimeoutMs),
              WEFT_E_MISMATCH);
  EXPECT_CODE(me == 0 ? weft_team_barrier(c->team, kTimeoutMs)
                      : weft_team_allgather(c->team, a, b, 1, WEFT_DTYPE_F32, kTimeoutMs),
              WEFT_E_MISMATCH);
  /* Malloc: other sizes on one rank, more than the heap, freeing no block. */
  uint64_t off = 0;
  EXPECT_CODE(weft_symm_malloc(c->team, me == 0 ? 128 : 256, kTimeoutMs, &off), WEFT_E_MISMATCH);
  EXPECT_CODE(weft_symm_malloc(c->team, weft_team_heap_bytes(c->team) * 2, kTimeoutMs, &off), WEFT_E_POOL_FULL);
  EXPECT_OK(weft_symm_malloc(c->team, 1000, kTimeoutMs, &off));
  EXPECT_CODE(weft_symm_free(c->team, off + 64, kTimeoutMs), WEFT_E_INVALID_ADDRESS);
  EXPECT_OK(weft_symm_free(c->team, off, kTimeoutMs));
  /* The team goes on. */
  EXPECT_OK(weft_team_allreduce(c->team, a, b, 16, WEFT_DTYPE_F32, WEFT_REDUCE_SUM, kTimeoutMs));
  CHECK(b[0] == (float)kRanks && b[15] == (float)kRanks, "allreduce after the errors: %f", (double)b[0]);
}

/* ---- sub-teams ---- */

static void check_split(ctx* c) {
  weft_team* sub = (weft_team*)1;
  const uint32_t twice[] = {0, 0};
  EXPECT_CODE(weft_team_split(c->team, twice, 2, kTimeoutMs, &sub), WEFT_E_INVALID_ARGUMENT);
  const uint32_t pair[] = {kRanks - 1, 0};
  sub = (weft_team*)1;
  EXPECT_OK(weft_team_split(c->team, pair, 2, kTimeoutMs, &sub));
  const int member = c->me == 0 || c->me == kRanks - 1;
  CHECK((sub != NULL) == member, "membership of rank %u: %p", c->me, (void*)sub);
  if (!member || sub == NULL) return;
  CHECK(weft_team_size(sub) == 2 && weft_team_rank(sub) == (c->me == 0 ? 1u : 0u), "sub-team rank %u of %u",
        weft_team_rank(sub), weft_team_size(sub));
  int64_t mine[3], sum[3];
  fill_input(WEFT_DTYPE_I64, mine, 3, ++c->salt, c->me);
  EXPECT_OK(weft_team_allreduce(sub, mine, sum, 3, WEFT_DTYPE_I64, WEFT_REDUCE_SUM, kTimeoutMs));
  int64_t first[3], last[3];
  fill_input(WEFT_DTYPE_I64, first, 3, c->salt, 0);
  fill_input(WEFT_DTYPE_I64, last, 3, c->salt, kRanks - 1);
  for (int i = 0; i < 3; i++)
    CHECK(sum[i] == (int64_t)((uint64_t)first[i] + (uint64_t)last[i]), "sub-team sum %d", i);
  uint64_t off = 0;
  EXPECT_CODE(weft_symm_malloc(sub, 64, kTimeoutMs, &off), WEFT_E_NOT_SUPPORTED);
  weft_team_free(sub);
}

/* ---- one rank ---- */

static weft_team* create_team(weft_pool* pool) {
  weft_team_options opts = WEFT_TEAM_OPTIONS_DEFAULT;
  opts.heap_bytes = 4 << 20;
  opts.slot_bytes = 4096;         /* small steps: the larger counts run in several */
  opts.one_shot_max_bytes = 8192; /* and the larger allreduces in two phases */
  opts.timeout_ms = (uint32_t)kTimeoutMs;
  const uint32_t pool_rank = weft_pool_rank(pool);
  opts.user_context = &pool_rank;
  opts.user_context_len = sizeof pool_rank;
  weft_team* team = NULL;
  EXPECT_OK(weft_team_create(pool, &opts, &team));
  if (!team) return NULL;
  CHECK(weft_team_size(team) == kRanks && weft_team_rank(team) < kRanks, "rank %u of %u", weft_team_rank(team),
        weft_team_size(team));
  for (uint32_t r = 0; r < kRanks; r++) {
    uint32_t pr = UINT32_MAX, got = UINT32_MAX;
    const void* context = NULL;
    size_t len = 0;
    EXPECT_OK(weft_team_pool_rank(team, r, &pr));
    EXPECT_OK(weft_team_user_context(team, r, &context, &len));
    if (context && len == sizeof got) memcpy(&got, context, sizeof got);
    CHECK(len == sizeof got && got == pr, "rank %u's user context: %u, its pool rank %u", r, got, pr);
  }
  return team;
}

/* After the last checks one child kills itself; the others' next allreduce returns PEER_DOWN,
 * and so does every later call (the team is unusable). */
static void run_rank(weft_pool* pool, int victim) {
  EXPECT_OK(weft_pool_wait_for_peers(pool, kRanks, kTimeoutMs));
  EXPECT_OK(weft_pool_barrier(pool, kTimeoutMs));
  weft_team* team = create_team(pool);
  if (!team) return;
  ctx c = {team, weft_team_rank(team), 0};
  check_null_arguments(pool, team);
  check_collectives(&c);
  check_puts_and_signals(&c);
  check_collective_errors(&c);
  check_split(&c);
  EXPECT_OK(weft_team_barrier(team, kTimeoutMs));
  if (victim) {
    printf("c_symm_example [%s]: %d checks, %d failed; now killing itself\n", who, checks, failures);
    fflush(stdout);
    if (failures) _exit(1);
    raise(SIGKILL);
  }
  float v = 1.0f, out = 0.0f;
  EXPECT_CODE(weft_team_allreduce(team, &v, &out, 1, WEFT_DTYPE_F32, WEFT_REDUCE_SUM, 120000), WEFT_E_PEER_DOWN);
  EXPECT_CODE(weft_team_barrier(team, kTimeoutMs), WEFT_E_PEER_DOWN);
  weft_team_free(team);
}

static weft_pool* join_pool(const char* pool_name, int mode) {
  weft_config* cfg = weft_config_new();
  weft_pool* pool = NULL;
  CHECK(cfg != NULL, "weft_config_new");
  if (!cfg) return NULL;
  EXPECT_OK(weft_config_set(cfg, "pool_name", pool_name));
  EXPECT_OK(weft_config_set(cfg, "rank_size", "32MiB"));
  EXPECT_OK(weft_pool_join(cfg, mode, &pool));
  weft_config_free(cfg);
  return pool;
}

static int run_child(int index, const char* pool_name, int release_fd) {
  static char name[32];
  snprintf(name, sizeof name, "child %d", index);
  who = name;
  unsigned char go = 0;
  ssize_t got;
  do got = read(release_fd, &go, 1);
  while (got < 0 && errno == EINTR);
  if (got != 1 || go != 1) return 2; /* the host failed before hosting */
  weft_pool* pool = join_pool(pool_name, WEFT_JOIN_JOIN);
  if (pool) run_rank(pool, index == kVictimChild);
  weft_pool_free(pool);
  printf("c_symm_example [%s]: %d checks, %d failed\n", who, checks, failures);
  return failures || !pool ? 1 : 0;
}

static void wait_children(const pid_t* children) {
  for (int i = 0; i < kRanks - 1; i++) {
    if (children[i] <= 0) continue;
    int status = 0;
    while (waitpid(children[i], &status, 0) < 0 && errno == EINTR) {
    }
    if (i == kVictimChild)
      CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child %d (the victim) ended with status %d", i,
            status);
    else
      CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d exited with status %d", i,
            WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }
}

int main(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  run_seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
  printf("c_symm_example: seed %" PRIu64 "\n", run_seed);
  char pool_name[64];
  snprintf(pool_name, sizeof pool_name, "csymm-%ld-%04x", (long)getpid(), (unsigned)(run_seed & 0xFFFF));

  int release[2];
  if (pipe(release) != 0) {
    perror("pipe");
    return 1;
  }
  fflush(stdout);
  pid_t children[kRanks - 1];
  for (int i = 0; i < kRanks - 1; i++) {
    children[i] = fork();
    if (children[i] < 0) {
      perror("fork");
      return 1;
    }
    if (children[i] == 0) {
      close(release[1]);
      int rc = run_child(i, pool_name, release[0]);
      fflush(stdout);
      _exit(rc);
    }
  }
  close(release[0]);
  weft_pool* pool = join_pool(pool_name, WEFT_JOIN_HOST);
  /* One byte per child: 1 to join, 0 (or the pipe closing) when hosting failed. */
  const unsigned char go[kRanks - 1] = {pool ? 1 : 0, pool ? 1 : 0, pool ? 1 : 0};
  if (write(release[1], go, sizeof go) != (ssize_t)sizeof go) CHECK(0, "releasing the children");
  close(release[1]);
  if (pool) run_rank(pool, 0);
  wait_children(children); /* before leaving: this process hosts the pool's coordinator */
  weft_pool_free(pool);
  printf("c_symm_example [host]: %d checks, %d failed\n", checks, failures);
  if (failures == 0) printf("c_symm_example: OK\n");
  return failures ? 1 : 0;
}
