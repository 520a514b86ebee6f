// The transfer engine with real device memory (cudaMalloc'd buffers) on both ends, two engines
// in this process over tcp: host <-> device and device <-> device in both directions, random
// unaligned sizes, fresh random data, poisoned destinations, every byte compared; a device
// address registered as "*" is recognised. Skips with a message where no GPU is usable.
#include <gtest/gtest.h>

#include "api/trans/transfer_engine.h"
#include "tests/gpu/gpu_test_util.h"

namespace weft::gputest {
namespace {

using trans::Opcode;
using trans::TransferEngine;

std::unique_ptr<TransferEngine> Engine() {
  trans::TransferEngineOptions o;
  o.local_name = "127.0.0.1";
  o.bind_host = "127.0.0.1";
  o.auth.cluster_secret = "gpu-trans-test";
  auto te = TransferEngine::Create(o);
  EXPECT_TRUE(te.ok()) << te.status().ToString();
  return te.ok() ? std::move(*te) : nullptr;
}

struct DeviceBuffer {
  explicit DeviceBuffer(size_t n) : size(n) {
    if (cudaMalloc(&ptr, n) != cudaSuccess) ptr = nullptr;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  void* ptr = nullptr;
  size_t size;
};

TEST(TransDevice, HostAndDeviceBuffersInEveryDirection) {
  WEFT_REQUIRE_GPU();
  constexpr size_t kSize = 48u << 20;
  DeviceBuffer dev_a(kSize), dev_b(kSize);
  ASSERT_TRUE(dev_a.ptr && dev_b.ptr);
  std::vector<uint8_t> host_a(kSize), host_b(kSize);
  auto a = Engine();
  auto b = Engine();
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->RegisterMemory(dev_a.ptr, kSize, "cuda:0").ok());
  ASSERT_TRUE(a->RegisterMemory(host_a.data(), kSize, "cpu:0").ok());
  ASSERT_TRUE(b->RegisterMemory(dev_b.ptr, kSize).ok());  // "*": recognised as device memory
  ASSERT_TRUE(b->RegisterMemory(host_b.data(), kSize, "cpu:0").ok());
  EXPECT_EQ(a->RegisterMemory(host_b.data(), 64, "cuda:0").code(), Code::kInvalidArgument);
  auto h = a->OpenSegment(b->name());
  ASSERT_TRUE(h.ok()) << h.status().ToString();

  uint64_t state = FreshSeed();
  struct End {
    const char* name;
    uint8_t* local;
    uint8_t* remote;
  };
  const End ends[] = {{"host->device", host_a.data(), static_cast<uint8_t*>(dev_b.ptr)},
                      {"device->host", static_cast<uint8_t*>(dev_a.ptr), host_b.data()},
                      {"device->device", static_cast<uint8_t*>(dev_a.ptr), static_cast<uint8_t*>(dev_b.ptr)}};
  for (const End& e : ends) {
    for (size_t len : {size_t{1}, size_t{4099}, size_t{(1u << 20) + 17}, size_t{(33u << 20) + 5}}) {
      SCOPED_TRACE(::testing::Message() << e.name << " " << len << " bytes");
      const size_t off_l = SplitMix64(state) % 4096, off_r = SplitMix64(state) % 4096;
      const uint64_t seed = FreshSeed();
      Fill(e.local + off_l, len, seed);
      Poison(e.remote + off_r, len);
      auto w = a->Transfer({{{Opcode::kWrite, e.local + off_l, *h, Addr(e.remote + off_r), len}}});
      ASSERT_TRUE(w[0].ok()) << w[0].ToString();
      EXPECT_FALSE(Mismatch(e.remote + off_r, len, seed).has_value()) << "WRITE";
      Poison(e.local + off_l, len, 0x5A);
      auto r = a->Transfer({{{Opcode::kRead, e.local + off_l, *h, Addr(e.remote + off_r), len}}});
      ASSERT_TRUE(r[0].ok()) << r[0].ToString();
      EXPECT_FALSE(Mismatch(e.local + off_l, len, seed).has_value()) << "READ";
    }
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // no error left behind
}

}  // namespace
}  // namespace weft::gputest
