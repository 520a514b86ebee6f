// The transfer engine between two processes on one host with device buffers on both ends: the
// cuda path (CUDA IPC, copies by the GPU over NVLink or PCIe peer-to-peer), on one GPU and on
// two. The owner's engine registers a cudaMalloc'd buffer; the other writes fresh random bytes
// into it with a notification (the owner compares every byte when told), reads them back into a
// poisoned device buffer and compares, checks the route says cuda, and after the owner
// unregisters the buffer a write is refused.
//
// CUDA must not be initialised before fork(), so the test process never calls CUDA: it forks the
// two engines, and each probes for a GPU on its own (exit 77: no GPU or too few, skip).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <string>

#include <weft/transfer_engine.h>

#include "base/random.h"
#include "tests/gpu/gpu_test_util.h"

namespace weft::gputest {
namespace {

using trans::Notification;
using trans::Opcode;
using trans::TransferEngine;

constexpr int kSkip = 77;
constexpr size_t kLen = (64u << 20) + 4093;

#define CHILD_CHECK(cond, ...)                        \
  do {                                                \
    if (!(cond)) {                                    \
      std::fprintf(stderr, "pid %d: ", getpid());     \
      std::fprintf(stderr, __VA_ARGS__);              \
      std::fprintf(stderr, "\n");                     \
      return 1;                                       \
    }                                                 \
  } while (0)

std::unique_ptr<TransferEngine> Engine() {
  trans::TransferEngineOptions o;
  o.local_name = "127.0.0.1";
  o.bind_host = "127.0.0.1";
  o.auth.cluster_secret = "gpu-trans-ipc-test";
  auto te = TransferEngine::Create(o);
  return te.ok() ? std::move(*te) : nullptr;
}

bool WriteLine(int fd, const std::string& line) {
  std::string l = line + "\n";
  return ::write(fd, l.data(), l.size()) == static_cast<ssize_t>(l.size());
}

std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') line += c;
  return line;
}

// The owner: a device buffer on `device`, registered; answers "check <seed>" notifications by
// comparing every byte, and "unregister" by unregistering.
int Owner(int device, int to_other, int from_other) {
  if (DeviceCount() <= device) return kSkip;
  auto te = Engine();
  CHILD_CHECK(te, "engine");
  DeviceBuffer buf(kLen, device);
  CHILD_CHECK(buf.ptr, "cudaMalloc on GPU %d", device);
  CHILD_CHECK(te->RegisterMemory(buf.ptr, kLen, "cuda:" + std::to_string(device)).ok(), "register");
  CHILD_CHECK(WriteLine(to_other, te->name() + " " + std::to_string(Addr(buf.ptr))), "hello");
  for (;;) {
    std::vector<Notification> got;
    for (int i = 0; i < 3000 && got.empty(); ++i) {
      got = te->TakeNotifications();
      if (got.empty()) ::usleep(10000);
    }
    CHILD_CHECK(!got.empty(), "no notification");
    std::istringstream in(got[0].message);
    std::string word;
    uint64_t seed = 0;
    in >> word >> seed;
    if (word == "check") {
      auto bad = Mismatch(buf.ptr, kLen, seed);
      CHILD_CHECK(WriteLine(to_other, bad ? "bad " + std::to_string(*bad) : "ok"), "verdict");
    } else if (word == "unregister") {
      CHILD_CHECK(te->UnregisterMemory(buf.ptr).ok(), "unregister");
      CHILD_CHECK(WriteLine(to_other, "unregistered"), "ack");
    } else {
      break;  // "bye"
    }
  }
  (void)ReadLine(from_other);
  return 0;
}

// The other engine: a device buffer on GPU 0.
int Writer(int to_owner, int from_owner) {
  if (DeviceCount() < 1) return kSkip;
  std::istringstream hello(ReadLine(from_owner));
  std::string name;
  uint64_t remote = 0;
  CHILD_CHECK(hello >> name >> remote, "the owner did not start");
  auto te = Engine();
  CHILD_CHECK(te, "engine");
  DeviceBuffer mine(kLen, 0);
  CHILD_CHECK(mine.ptr, "cudaMalloc");
  CHILD_CHECK(te->RegisterMemory(mine.ptr, kLen, "cuda:0").ok(), "register");
  auto h = te->OpenSegment(name);
  CHILD_CHECK(h.ok(), "open: %s", h.status().ToString().c_str());
  auto route = te->Route({Opcode::kWrite, mine.ptr, *h, remote, kLen});
  CHILD_CHECK(route.ok() && route->find("via cuda") != std::string::npos, "route: %s",
              route.ok() ? route->c_str() : route.status().ToString().c_str());
  const uint64_t seed = FreshSeed();
  Fill(mine.ptr, kLen, seed);
  auto res = te->Transfer({{{Opcode::kWrite, mine.ptr, *h, remote, kLen}}},
                          Notification{"writer", "check " + std::to_string(seed)});
  CHILD_CHECK(res[0].ok(), "write: %s", res[0].ToString().c_str());
  std::string verdict = ReadLine(from_owner);
  CHILD_CHECK(verdict == "ok", "the owner found: %s", verdict.c_str());
  Poison(mine.ptr, kLen, 0xA5);
  res = te->Transfer({{{Opcode::kRead, mine.ptr, *h, remote, kLen}}});
  CHILD_CHECK(res[0].ok(), "read: %s", res[0].ToString().c_str());
  auto bad = Mismatch(mine.ptr, kLen, seed);
  CHILD_CHECK(!bad, "read back differs at %zu", bad ? *bad : 0);
  // Unregistered by its owner: the stale mapping is refused, nothing written.
  res = te->Transfer({{{Opcode::kWrite, mine.ptr, *h, remote, 4096}}}, Notification{"writer", "unregister"});
  CHILD_CHECK(res[0].ok(), "write before unregister: %s", res[0].ToString().c_str());
  CHILD_CHECK(ReadLine(from_owner) == "unregistered", "unregister ack");
  res = te->Transfer({{{Opcode::kWrite, mine.ptr, *h, remote, 4096}}});
  CHILD_CHECK(res[0].code() == Code::kNotFound || res[0].code() == Code::kInvalidAddress,
              "write after unregister: %s", res[0].ToString().c_str());
  CHILD_CHECK(te->Notify(*h, {"writer", "bye"}).ok(), "bye");
  CHILD_CHECK(cudaGetLastError() == cudaSuccess, "a CUDA error was left pending");
  return 0;
}

void RunPair(int owner_device, int* rc_owner, int* rc_writer) {
  int to_writer[2], to_owner[2];
  ASSERT_EQ(::pipe(to_writer), 0);
  ASSERT_EQ(::pipe(to_owner), 0);
  // Each side keeps only its own ends, so a side that exits early ends the other's reads.
  const pid_t owner = fork();
  if (owner == 0) {
    ::close(to_writer[0]);
    ::close(to_owner[1]);
    _exit(Owner(owner_device, to_writer[1], to_owner[0]));
  }
  const pid_t writer = fork();
  if (writer == 0) {
    ::close(to_writer[1]);
    ::close(to_owner[0]);
    _exit(Writer(to_owner[1], to_writer[0]));
  }
  for (int fd : {to_writer[0], to_writer[1], to_owner[0], to_owner[1]}) ::close(fd);
  auto wait = [](pid_t pid) {
    int status = 0;
    if (pid <= 0 || waitpid(pid, &status, 0) != pid) return 1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  };
  *rc_writer = wait(writer);
  *rc_owner = wait(owner);
}

TEST(TransIpc, DeviceToDeviceOneGpu) {
  int owner = 0, writer = 0;
  RunPair(0, &owner, &writer);
  if (owner == kSkip || writer == kSkip) GTEST_SKIP() << "no CUDA GPU: the engines found none";
  EXPECT_EQ(owner, 0);
  EXPECT_EQ(writer, 0);
}

TEST(TransIpc, DeviceToDeviceTwoGpus) {
  int owner = 0, writer = 0;
  RunPair(1, &owner, &writer);
  if (owner == kSkip || writer == kSkip) GTEST_SKIP() << "fewer than two CUDA GPUs: the owner needs GPU 1";
  EXPECT_EQ(owner, 0);
  EXPECT_EQ(writer, 0);
}

}  // namespace
}  // namespace weft::gputest
