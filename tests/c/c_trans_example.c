/* The transfer engine's C API from plain C11: two engines in two processes (p2p, no directory),
 * a WRITE of fresh random bytes with a notification, a READ back into poisoned memory with every
 * byte compared on both sides, an asynchronous batch, and the error paths a caller can reach.
 * Prints a summary; exits nonzero on any failed check.
 *
 * The child is forked before this process touches weft (a process with weft's threads must not
 * fork). It starts its engine, registers a buffer, sends "<name> <address>" on a pipe, waits for
 * the parent's notification (whose message is the seed of the data), checks its buffer against
 * that seed and answers "ok" or "bad". */
#define _DEFAULT_SOURCE /* usleep */
#define _POSIX_C_SOURCE 200809L

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

static const char* who = "parent";
static int checks = 0;
static int failures = 0;


enum { kLen = 3 << 20 };

static uint64_t next_random(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void fill(uint8_t* p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; ++i) p[i] = (uint8_t)next_random(&seed);
}

static int matches(const uint8_t* p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != (uint8_t)next_random(&seed)) return 0;
  return 1;
}

static weft_config* secret_config(void) {
  weft_config* c = weft_config_new();
  if (c) weft_config_set(c, "cluster_secret", "c-trans-example-secret");
  return c;
}

static int read_line(int fd, char* buf, size_t size) {
  size_t n = 0;
  char ch;
  while (n + 1 < size && read(fd, &ch, 1) == 1 && ch != '\n') buf[n++] = ch;
  buf[n] = '\0';
  return (int)n;
}

static int child(int to_parent, int from_parent) {
  who = "child";
  weft_config* config = secret_config();
  weft_trans* engine = NULL;
  if (weft_trans_new("127.0.0.1", "P2PHANDSHAKE", "tcp", config, &engine) != WEFT_OK) {
    fprintf(stderr, "[child] weft_trans_new: %s\n", weft_last_error());
    return 2;
  }
  weft_config_free(config);
  uint8_t* mem = calloc(1, kLen);
  if (!mem || weft_trans_register(engine, mem, kLen, "cpu:0", 1) != WEFT_OK) return 3;
  char name[128], hello[256];
  weft_trans_name(engine, name, sizeof name);
  int n = snprintf(hello, sizeof hello, "%s %" PRIu64 "\n", name, (uint64_t)(uintptr_t)mem);
  if (write(to_parent, hello, (size_t)n) != n) return 4;

  char note_name[64], note_msg[64];
  size_t msg_len = 0;
  int got = 0;
  for (int i = 0; i < 3000 && got == 0; ++i) {
    got = weft_trans_take_notification(engine, note_name, sizeof note_name, note_msg, sizeof note_msg, &msg_len);
    if (got == 0) usleep(10000);
  }
  const char* verdict = "bad\n";
  if (got == 1 && strcmp(note_name, "c-parent") == 0) {
    uint64_t seed = strtoull(note_msg, NULL, 10);
    if (matches(mem, kLen, seed)) verdict = "ok\n";  /* the data was there before the notification */
  }
  if (write(to_parent, verdict, strlen(verdict)) < 0) return 5;
  char c;
  if (read(from_parent, &c, 1) < 0) return 6; /* until the parent is done */
  weft_trans_free(engine);
  free(mem);
  return 0;
}

int main(void) {
  int up[2], down[2];
  if (pipe(up) != 0 || pipe(down) != 0) return 1;
  pid_t pid = fork();
  if (pid < 0) return 1;
  if (pid == 0) {
    close(up[0]);
    close(down[1]);
    _exit(child(up[1], down[0]));
  }
  close(up[1]);
  close(down[0]);

  char hello[256];
  read_line(up[0], hello, sizeof hello);
  char peer[128] = "";
  uint64_t remote = 0;
  CHECK(sscanf(hello, "%127s %" SCNu64, peer, &remote) == 2, "child said '%s'", hello);

  weft_config* config = secret_config();
  weft_trans* engine = NULL;
  EXPECT_CODE(weft_trans_new("127.0.0.1", "P2PHANDSHAKE", "tcp", config, &engine), WEFT_OK);
  weft_config_free(config);
  if (!engine) return 1;
  CHECK(weft_trans_rpc_port(engine) > 0, "rpc port %d", weft_trans_rpc_port(engine));
  uint8_t* mem = malloc(kLen);
  EXPECT_CODE(weft_trans_register(engine, mem, kLen, "*", 1), WEFT_OK);
  uint64_t segment = 0;
  EXPECT_CODE(weft_trans_open_segment(engine, peer, &segment), WEFT_OK);

  uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
  fill(mem, kLen, seed);
  char seed_text[32];
  snprintf(seed_text, sizeof seed_text, "%" PRIu64, seed);
  /* WRITE with a notification, asynchronously: submit, poll, wait. */
  weft_trans_request w = {WEFT_TRANS_WRITE, mem, segment, remote, kLen};
  uint64_t batch = 0;
  EXPECT_CODE(weft_trans_submit(engine, &w, 1, "c-parent", seed_text, &batch), WEFT_OK);
  CHECK(batch != 0, "batch id 0");
  int state = -1, result = 1;
  int rc = weft_trans_status(engine, batch, &state, &result, 1);
  CHECK(rc == 1 || rc == WEFT_OK, "status returned %d", rc);
  EXPECT_CODE(weft_trans_wait(engine, batch, -1, &result, 1), WEFT_OK);
  EXPECT_CODE(weft_trans_status(engine, batch, &state, &result, 1), WEFT_OK);
  CHECK(state == WEFT_TRANS_COMPLETED && result == WEFT_OK, "state %d result %d", state, result);
  EXPECT_CODE(weft_trans_free_batch(engine, batch), WEFT_OK);
  EXPECT_CODE(weft_trans_free_batch(engine, batch), WEFT_E_NOT_FOUND);
  char verdict[16];
  read_line(up[0], verdict, sizeof verdict);
  CHECK(strcmp(verdict, "ok") == 0, "the child saw '%s' after the notification", verdict);

  /* READ back into poisoned memory. */
  memset(mem, 0xA5, kLen);
  weft_trans_request r = {WEFT_TRANS_READ, mem, segment, remote, kLen};
  int results[1] = {1};
  EXPECT_CODE(weft_trans_transfer(engine, &r, 1, results), WEFT_OK);
  CHECK(results[0] == WEFT_OK, "result %d", results[0]);
  CHECK(matches(mem, kLen, seed), "READ brought back other bytes");

  /* Errors. */
  uint8_t unregistered[64];
  weft_trans_request bad = {WEFT_TRANS_WRITE, unregistered, segment, remote, 64};
  EXPECT_CODE(weft_trans_transfer(engine, &bad, 1, NULL), WEFT_E_NOT_REGISTERED);
  CHECK(strstr(weft_last_error(), "registered") != NULL, "message: %s", weft_last_error());
  bad = (weft_trans_request){WEFT_TRANS_WRITE, mem, segment, remote, 0};
  EXPECT_CODE(weft_trans_transfer(engine, &bad, 1, NULL), WEFT_E_INVALID_ARGUMENT);
  bad = (weft_trans_request){7, mem, segment, remote, 8};
  EXPECT_CODE(weft_trans_transfer(engine, &bad, 1, NULL), WEFT_E_INVALID_ARGUMENT);
  bad = (weft_trans_request){WEFT_TRANS_READ, mem, segment + 100, remote, 8};
  EXPECT_CODE(weft_trans_transfer(engine, &bad, 1, NULL), WEFT_E_NOT_FOUND);
  bad = (weft_trans_request){WEFT_TRANS_READ, mem, segment, remote + kLen, 8};
  EXPECT_CODE(weft_trans_transfer(engine, &bad, 1, results), WEFT_E_INVALID_ADDRESS);
  CHECK(results[0] == WEFT_E_INVALID_ADDRESS, "per-request result %d", results[0]);
  EXPECT_CODE(weft_trans_register(engine, mem + 8, 8, "*", 1), WEFT_E_ALREADY_EXISTS);
  EXPECT_CODE(weft_trans_register(engine, unregistered, 64, "cuda:0", 1), WEFT_E_NOT_SUPPORTED);
  EXPECT_CODE(weft_trans_unregister(engine, unregistered), WEFT_E_NOT_FOUND);
  EXPECT_CODE(weft_trans_open_segment(engine, "not-a-host-port", &segment), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_trans_open_segment(NULL, peer, &segment), WEFT_E_INVALID_ARGUMENT);
  EXPECT_CODE(weft_trans_status(engine, 987654, NULL, NULL, 0), WEFT_E_NOT_FOUND);
  EXPECT_CODE(weft_trans_probe(engine, peer), WEFT_OK);
  EXPECT_CODE(weft_trans_take_notification(engine, NULL, 0, NULL, 0, NULL), 0);
  weft_trans* refused = NULL;
  EXPECT_CODE(weft_trans_new("127.0.0.1", "P2PHANDSHAKE", "nvlink", NULL, &refused), WEFT_E_NOT_SUPPORTED);
  CHECK(refused == NULL, "an engine was returned for a refused protocol");

  close(down[1]); /* the child exits */
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child exit status %d", status);
  /* The peer is gone: an error, not a hang. */
  rc = weft_trans_transfer(engine, &r, 1, NULL);
  CHECK(rc < 0, "a transfer to a dead peer returned %d", rc);

  EXPECT_CODE(weft_trans_unregister(engine, mem), WEFT_OK);
  weft_trans_free(engine);
  free(mem);
  printf("c_trans_example: %d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
