// Device segments shared between two processes on one GPU (and across two GPUs where present):
// the owner creates a VMM segment and sends its POSIX fd over a Unix socket (net's fd passing);
// the importer maps it, reads what the owner wrote and writes back through the weft engine
// (GD ends of a pool slice), and the owner checks every byte.
//
// CUDA must not be initialised before fork(), so the test process itself never calls CUDA: it
// forks the two peers, and each probes for a GPU on its own (exit 77: no GPU, skip).
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "base/random.h"
#include "engine/engine.h"
#include "gva/segment_table.h"
#include "mem/cuda/device_segment.h"
#include "net/unix_socket.h"
#include "tests/gpu/gpu_test_util.h"
#include "wire/control.h"

namespace weft {
namespace {

constexpr uint64_t kSize = 64ull << 20;
constexpr int kSkip = 77;

#define PEER_CHECK(cond, ...)                       \
  do {                                              \
    if (!(cond)) {                                  \
      std::fprintf(stderr, "peer %d: ", getpid());  \
      std::fprintf(stderr, __VA_ARGS__);            \
      std::fprintf(stderr, "\n");                   \
      return 1;                                     \
    }                                               \
  } while (0)

Status SendMsg(int fd, const std::string& text, std::vector<int> fds = {}) {
  return net::SendTextFrame(fd, text, fds, Deadline::After(std::chrono::seconds(60)));
}

Result<net::ReceivedFrame> RecvMsg(int fd, net::FrameReader& reader) {
  return net::ReceiveFrame(fd, reader, Deadline::After(std::chrono::seconds(60)));
}

std::string Text(const net::ReceivedFrame& f) { return std::string(f.payload.begin(), f.payload.end()); }

// The owner: creates the segment on GPU 0, fills it with seed A, sends the fd, waits, then
// checks that the upper half now holds seed B.
int Owner(int sock, uint64_t seed_a, uint64_t seed_b, bool need_two) {
  if (auto why = gputest::NoGpuReason()) {
    (void)SendMsg(sock, "skip: no CUDA GPU: " + *why);
    return kSkip;
  }
  if (need_two && gputest::DeviceCount() < 2) {
    (void)SendMsg(sock, "skip: one GPU");
    return kSkip;
  }
  auto seg = mem::cuda::DeviceSegment::Create(0, kSize);
  PEER_CHECK(seg.ok(), "create: %s", seg.status().ToString().c_str());
  std::vector<uint8_t> bytes(kSize / 2);
  FillRandom(bytes.data(), bytes.size(), seed_a);
  PEER_CHECK(cudaMemcpy((*seg)->data(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice) == cudaSuccess, "fill");
  PEER_CHECK(cudaMemset((*seg)->data() + kSize / 2, 0xA5, kSize / 2) == cudaSuccess, "poison");
  PEER_CHECK(cudaDeviceSynchronize() == cudaSuccess, "sync");
  auto fd = (*seg)->ExportFd();
  PEER_CHECK(fd.ok(), "export: %s", fd.status().ToString().c_str());
  Status s = SendMsg(sock, "fd " + std::to_string((*seg)->size()), {*fd});
  close(*fd);
  PEER_CHECK(s.ok(), "send: %s", s.ToString().c_str());
  net::FrameReader reader;
  auto reply = RecvMsg(sock, reader);
  PEER_CHECK(reply.ok(), "wait: %s", reply.status().ToString().c_str());
  PEER_CHECK(Text(*reply) == "written", "importer says: %s", Text(*reply).c_str());
  PEER_CHECK(cudaMemcpy(bytes.data(), (*seg)->data() + kSize / 2, kSize / 2, cudaMemcpyDeviceToHost) == cudaSuccess,
             "read back");
  auto bad = FirstMismatch(bytes.data(), bytes.size(), seed_b);
  PEER_CHECK(!bad.has_value(), "byte %zu of what the importer wrote is wrong", bad.value_or(0));
  return 0;
}

// The importer: maps the owner's segment as GD rank 1 of a pool, copies the lower half to a
// local device buffer on `device` (GD -> LD), checks it, and writes seed B into the upper half
// from host memory (LH -> GD).
int Importer(int sock, uint64_t seed_a, uint64_t seed_b, int device) {
  net::FrameReader reader;
  auto msg = RecvMsg(sock, reader);
  PEER_CHECK(msg.ok(), "receive: %s", msg.status().ToString().c_str());
  if (Text(*msg).rfind("skip", 0) == 0) return kSkip;
  PEER_CHECK(msg->fds.size() == 1, "expected one fd, got %zu", msg->fds.size());
  const uint64_t size = std::stoull(Text(*msg).substr(3));
  PEER_CHECK(cudaSetDevice(device) == cudaSuccess, "set device %d", device);
  auto seg = mem::cuda::DeviceSegment::Import(msg->fds[0].Release(), size, device);
  PEER_CHECK(seg.ok(), "import: %s", seg.status().ToString().c_str());
  PEER_CHECK((*seg)->imported() && (*seg)->home_device() == 0, "home device %d", (*seg)->home_device());

  auto layout = gva::Layout::Make(0x310000000000ull, size, 4);
  PEER_CHECK(layout.ok(), "layout");
  gva::SegmentTable table(*layout);
  MetricsRegistry metrics;
  engine::Engine engine(engine::EngineOptions{}, table, metrics);
  Status s = table.Attach({gva::Medium::kDevice, 1, 0}, (*seg)->data(), size, false, "owner", [] {});
  PEER_CHECK(s.ok(), "attach: %s", s.ToString().c_str());

  gputest::DeviceBuffer local(kSize / 2, device);
  PEER_CHECK(local.ptr, "cudaMalloc on GPU %d", device);
  s = engine.Copy(gputest::Addr(local.data()), layout->Encode({gva::Medium::kDevice, 1, 0}), kSize / 2);
  PEER_CHECK(s.ok(), "GD -> LD: %s", s.ToString().c_str());
  std::vector<uint8_t> bytes(kSize / 2);
  PEER_CHECK(cudaMemcpy(bytes.data(), local.data(), bytes.size(), cudaMemcpyDeviceToHost) == cudaSuccess, "read");
  auto bad = FirstMismatch(bytes.data(), bytes.size(), seed_a);
  PEER_CHECK(!bad.has_value(), "byte %zu of the owner's data is wrong", bad.value_or(0));

  FillRandom(bytes.data(), bytes.size(), seed_b);
  PEER_CHECK(engine.RegisterHostMemory(bytes.data(), bytes.size()).ok(), "register host");
  s = engine.Copy(layout->Encode({gva::Medium::kDevice, 1, kSize / 2}), gputest::Addr(bytes.data()), kSize / 2);
  engine.UnregisterHostMemory(bytes.data());
  PEER_CHECK(s.ok(), "LH -> GD: %s", s.ToString().c_str());
  table.Detach({gva::Medium::kDevice, 1, 0}, false);
  s = SendMsg(sock, "written");
  PEER_CHECK(s.ok(), "send: %s", s.ToString().c_str());
  return 0;
}

// Forks the two peers and returns their exit codes.
void RunPair(bool two_gpus, int* owner_rc, int* importer_rc) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  uint64_t state = FreshSeed();
  const uint64_t seed_a = SplitMix64(state), seed_b = SplitMix64(state);
  const pid_t owner = fork();
  ASSERT_GE(owner, 0);
  if (owner == 0) {
    close(sv[1]);
    _exit(Owner(sv[0], seed_a, seed_b, two_gpus));
  }
  const pid_t importer = fork();
  if (importer == 0) {
    close(sv[0]);
    _exit(Importer(sv[1], seed_a, seed_b, two_gpus ? 1 : 0));
  }
  close(sv[0]);
  close(sv[1]);
  int status = 0;
  *importer_rc = -1;
  if (importer > 0) {
    waitpid(importer, &status, 0);
    *importer_rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  waitpid(owner, &status, 0);
  *owner_rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  ASSERT_GT(importer, 0) << "fork failed";
}

TEST(DeviceSegmentIpcTest, TwoProcessesOneGpu) {
  int owner = 0, importer = 0;
  RunPair(false, &owner, &importer);
  if (owner == kSkip) GTEST_SKIP() << "no CUDA GPU: the peers found none (see their stderr)";
  EXPECT_EQ(owner, 0);
  EXPECT_EQ(importer, 0);
}

TEST(DeviceSegmentIpcTest, TwoProcessesTwoGpus) {
  int owner = 0, importer = 0;
  RunPair(true, &owner, &importer);
  if (owner == kSkip) GTEST_SKIP() << "no CUDA GPU or only one: the importer on GPU 1 needs two";
  EXPECT_EQ(owner, 0);
  EXPECT_EQ(importer, 0);
}

}  // namespace
}  // namespace weft
