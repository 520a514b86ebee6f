// The CUDA path through the engine, on one GPU (and across two where present): all sixteen
// LH/LD/GH/GD directions with AUTO and explicit directions, random sizes from 1 B to 256 MiB
// at unaligned offsets, batches of 1 to 100 000 descriptors through the copy kernel, copies
// ordered on a caller's stream, concurrent callers, and bad input. Fresh random data for each
// check, poisoned destinations (with guard bytes around them), every byte compared.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <thread>

#include "engine/engine.h"
#include "gva/segment_table.h"
#include "mem/cuda/device_segment.h"
#include "mem/cuda/host_device_copy.h"
#include "mem/host_segment.h"
#include "tests/gpu/gpu_test_util.h"
#include "transport/cuda/copy_kernel.h"
#include "transport/cuda/cuda_transport.h"

namespace weft {
namespace {

using engine::CopyRequest;
using engine::Direction;
using gputest::Addr;
using gva::Medium;
using transport::EndKind;

constexpr uint64_t kSlice = 544ull << 20;  // two halves of 272 MiB: sources below, destinations above
constexpr uint64_t kHalf = kSlice / 2;
constexpr uint64_t kMaxLen = 256ull << 20;
constexpr uint64_t kGuard = 64;  // poisoned bytes checked on each side of a destination

class CudaCopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WEFT_REQUIRE_GPU();
    layout_ = *gva::Layout::Make(0x300000000000ull, kSlice, 4);
    table_ = std::make_unique<gva::SegmentTable>(layout_);
    engine::EngineOptions o;
    o.threads = 4;
    o.cuda_kernel_sms = kernel_sms_;
    engine_ = std::make_unique<engine::Engine>(o, *table_, metrics_);
    cuda_ = dynamic_cast<transport::cuda::CudaTransport*>(engine_->FindTransport("cuda"));
    ASSERT_NE(cuda_, nullptr) << "a GPU is visible but the engine has no cuda path";

    // Host slices: rank 0 is this process's memfd, rank 1 a same-node peer's (the same kind of
    // memfd, imported through a dup of its fd), both registered with CUDA as a pool would.
    for (uint32_t r = 0; r < 2; ++r) {
      auto seg = mem::HostSegment::Create("weft-gpu-test", kSlice, -1);
      ASSERT_TRUE(seg.ok()) << seg.status().ToString();
      std::shared_ptr<mem::HostSegment> mapped = std::move(*seg);
      if (r == 1) {
        auto imported = mem::HostSegment::Import(dup(mapped->fd()), kSlice);
        ASSERT_TRUE(imported.ok()) << imported.status().ToString();
        mapped = std::move(*imported);
      }
      ASSERT_TRUE(engine_->RegisterHostMemory(mapped->data(), kSlice).ok());
      host_[r] = mapped->data();
      engine::Engine* e = engine_.get();
      ASSERT_TRUE(table_->Attach({Medium::kHost, r, 0}, mapped->data(), kSlice, r == 0, "rank" + std::to_string(r),
                                 [mapped, e] { e->UnregisterHostMemory(mapped->data()); })
                      .ok());
    }
    // Device slices: rank 0 this process's VMM segment, rank 1 another segment exported as a
    // POSIX fd and imported again (what a same-node peer's slice looks like here).
    for (uint32_t r = 0; r < 2; ++r) {
      auto seg = mem::cuda::DeviceSegment::Create(0, kSlice);
      ASSERT_TRUE(seg.ok()) << seg.status().ToString();
      std::shared_ptr<mem::cuda::DeviceSegment> mapped = std::move(*seg);
      if (r == 1) {
        auto fd = mapped->ExportFd();
        ASSERT_TRUE(fd.ok()) << fd.status().ToString();
        auto imported = mem::cuda::DeviceSegment::Import(*fd, mapped->size(), 0);
        ASSERT_TRUE(imported.ok()) << imported.status().ToString();
        mapped = std::move(*imported);  // the creator's mapping goes; the import keeps the memory
      }
      dev_[r] = mapped->data();
      ASSERT_TRUE(table_->Attach({Medium::kDevice, r, 0}, mapped->data(), kSlice, r == 0, "rank" + std::to_string(r),
                                 [mapped] {})
                      .ok());
    }
    local_dev_src_ = std::make_unique<gputest::DeviceBuffer>(kHalf);
    local_dev_dst_ = std::make_unique<gputest::DeviceBuffer>(kHalf);
    pinned_src_ = std::make_unique<gputest::PinnedBuffer>(kHalf);
    pinned_dst_ = std::make_unique<gputest::PinnedBuffer>(kHalf);
    ASSERT_NE(local_dev_src_->ptr, nullptr);
    ASSERT_NE(local_dev_dst_->ptr, nullptr);
    ASSERT_NE(pinned_src_->ptr, nullptr);
    ASSERT_NE(pinned_dst_->ptr, nullptr);
    pageable_src_.resize(kHalf);
    pageable_dst_.resize(kHalf);
  }

  void TearDown() override {
    table_.reset();  // its release callbacks unregister host slices through the engine
    engine_.reset();
    local_dev_src_.reset();
    local_dev_dst_.reset();
    pinned_src_.reset();
    pinned_dst_.reset();
    if (!NoGpu()) {
      EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a CUDA error was left behind";
    }
  }

  static bool NoGpu() { return gputest::NoGpuReason().has_value(); }

  // An end of the given kind: the address for the engine and the bytes behind it. Sources lie
  // in the lower half of a slice, destinations in the upper half, so they never overlap.
  struct End {
    uint64_t addr;
    uint8_t* bytes;
  };
  End Pick(EndKind kind, bool dst, uint64_t off, uint32_t rank, bool pageable) {
    const uint64_t at = (dst ? kHalf : 0) + off;
    switch (kind) {
      case EndKind::kLH: {
        uint8_t* p = pageable ? (dst ? pageable_dst_.data() : pageable_src_.data())
                              : (dst ? pinned_dst_->data() : pinned_src_->data());
        return {Addr(p + off), p + off};
      }
      case EndKind::kLD: {
        uint8_t* p = dst ? local_dev_dst_->data() : local_dev_src_->data();
        return {Addr(p + off), p + off};
      }
      case EndKind::kGH: return {layout_.Encode({Medium::kHost, rank, at}), host_[rank] + at};
      case EndKind::kGD: return {layout_.Encode({Medium::kDevice, rank, at}), dev_[rank] + at};
    }
    return {0, nullptr};
  }

  // One checked copy: random source bytes, poisoned destination with guards, every byte compared.
  void CheckedCopy(EndKind sk, EndKind dk, uint64_t len, uint64_t src_off, uint64_t dst_off, uint64_t& state,
                   Direction dir) {
    const bool pageable = SplitMix64(state) % 4 == 0;
    End s = Pick(sk, false, src_off, SplitMix64(state) % 2, pageable);
    End d = Pick(dk, true, dst_off + kGuard, SplitMix64(state) % 2, pageable);
    const uint64_t seed = SplitMix64(state);
    gputest::Fill(s.bytes, len, seed);
    gputest::Poison(d.bytes - kGuard, len + 2 * kGuard);
    Status st = engine_->Copy(d.addr, s.addr, len, dir);
    ASSERT_TRUE(st.ok()) << st.ToString();
    auto bad = gputest::Mismatch(d.bytes, len, seed);
    ASSERT_FALSE(bad.has_value()) << "first wrong byte at " << *bad;
    ASSERT_TRUE(gputest::AllBytes(d.bytes - kGuard, kGuard)) << "bytes before the destination were written";
    ASSERT_TRUE(gputest::AllBytes(d.bytes + len, kGuard)) << "bytes after the destination were written";
  }

  uint32_t kernel_sms_ = 0;
  gva::Layout layout_;
  MetricsRegistry metrics_;
  std::unique_ptr<gva::SegmentTable> table_;
  std::unique_ptr<engine::Engine> engine_;
  transport::cuda::CudaTransport* cuda_ = nullptr;
  uint8_t* host_[2] = {};
  uint8_t* dev_[2] = {};
  std::unique_ptr<gputest::DeviceBuffer> local_dev_src_, local_dev_dst_;
  std::unique_ptr<gputest::PinnedBuffer> pinned_src_, pinned_dst_;
  std::vector<uint8_t> pageable_src_, pageable_dst_;
};

const EndKind kKinds[] = {EndKind::kLH, EndKind::kLD, EndKind::kGH, EndKind::kGD};

TEST_F(CudaCopyTest, EveryDirectionWithRandomSizesAndUnalignedOffsets) {
  uint64_t state = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << state);
  for (EndKind sk : kKinds) {
    for (EndKind dk : kKinds) {
      const Direction explicit_dir = engine::DirectionOf(sk, dk);
      SCOPED_TRACE(engine::DirectionName(explicit_dir));
      for (int i = 0; i < 5; ++i) {
        // Log-uniform sizes from 1 B up to 256 MiB (the largest once per direction).
        uint64_t len = i == 4 ? kMaxLen : std::max<uint64_t>(1, uint64_t{1} << (SplitMix64(state) % 27)) +
                                              SplitMix64(state) % 4096;
        len = std::min(len, kMaxLen);
        const uint64_t room = kHalf - kMaxLen - 2 * kGuard;
        const uint64_t so = SplitMix64(state) % room, doff = SplitMix64(state) % room;
        CheckedCopy(sk, dk, len, so, doff, state, i % 2 ? explicit_dir : Direction::kAuto);
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST_F(CudaCopyTest, AutoInfersDeviceKindsAndRoutesNameTheCudaPath) {
  End ld = Pick(EndKind::kLD, false, 0, 0, false);
  End gd = Pick(EndKind::kGD, true, 0, 1, false);
  End lh = Pick(EndKind::kLH, true, 0, 0, true);
  auto r = engine_->Route(gd.addr, ld.addr, 4096);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->src_kind, EndKind::kLD);
  EXPECT_EQ(r->dst_kind, EndKind::kGD);
  EXPECT_EQ(r->path, "cuda");
  r = engine_->Route(lh.addr, ld.addr, 4096);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->dst_kind, EndKind::kLH);
  EXPECT_EQ(r->path, "cuda");
  // Host to host never takes the cuda path.
  r = engine_->Route(Addr(pageable_dst_.data()), Addr(pageable_src_.data()), 4096);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->path, "cuda");
  // A stated direction that the addresses contradict.
  Status s = engine_->Copy(gd.addr, ld.addr, 16, Direction::kLH2GD);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
}

// Batches of scattered pages: every size of batch up to 100 000 descriptors, random unaligned
// page lengths and offsets, through the copy kernel where the cost model picks it.
TEST_F(CudaCopyTest, BatchesOfOneToHundredThousandDescriptors) {
  uint64_t state = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << state);
  for (size_t n : {size_t{1}, size_t{2}, size_t{17}, size_t{1000}, size_t{4096}, size_t{100000}}) {
    SCOPED_TRACE(testing::Message() << n << " descriptors");
    const int shape = static_cast<int>(SplitMix64(state) % 3);  // GD->GD, LD->LD, GD->LD
    uint8_t* src = shape == 1 ? local_dev_src_->data() : dev_[0];
    uint8_t* dst = shape == 0 ? dev_[1] + kHalf : local_dev_dst_->data();
    const uint64_t src_base = shape == 1 ? Addr(src) : layout_.Encode({Medium::kDevice, 0, 0});
    const uint64_t dst_base = shape == 0 ? layout_.Encode({Medium::kDevice, 1, kHalf}) : Addr(dst);
    const uint64_t region = 128ull << 20;
    const uint64_t max_len = std::min<uint64_t>(64 << 10, region / n);
    const uint64_t seed = SplitMix64(state);
    gputest::Fill(src, region, seed);
    gputest::Poison(dst, region);
    std::vector<uint8_t> src_host(region), expect(region, 0xA5);
    FillRandom(src_host.data(), region, seed);
    std::vector<CopyRequest> reqs;
    uint64_t at = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint64_t len = 1 + SplitMix64(state) % max_len;
      const uint64_t gap = SplitMix64(state) % 16;
      if (at + gap + len > region) break;
      const uint64_t s = SplitMix64(state) % (region - len);
      reqs.push_back({dst_base + at + gap, src_base + s, len});
      std::memcpy(expect.data() + at + gap, src_host.data() + s, len);
      at += gap + len;
    }
    // Shuffle so the destinations are scattered, not a running sequence.
    for (size_t i = reqs.size(); i > 1; --i) std::swap(reqs[i - 1], reqs[SplitMix64(state) % i]);
    auto results = engine_->CopyBatch(reqs);
    ASSERT_EQ(results.size(), reqs.size());
    for (size_t i = 0; i < results.size(); ++i) ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].ToString();
    std::vector<uint8_t> got = gputest::Read(dst, region);
    auto first = std::mismatch(got.begin(), got.end(), expect.begin());
    ASSERT_TRUE(first.first == got.end()) << "first wrong byte at " << (first.first - got.begin());
  }
}

TEST_F(CudaCopyTest, KvBatchIsOneKernelLaunch) {
  uint64_t state = FreshSeed();
  constexpr size_t kPages = 4096, kPage = 16 << 10;
  const uint64_t seed = SplitMix64(state);
  gputest::Fill(dev_[0], kPages * kPage, seed);
  gputest::Poison(dev_[1] + kHalf, kPages * kPage);
  std::vector<uint64_t> perm(kPages);
  for (size_t i = 0; i < kPages; ++i) perm[i] = i;
  for (size_t i = kPages; i > 1; --i) std::swap(perm[i - 1], perm[SplitMix64(state) % i]);
  std::vector<CopyRequest> reqs;
  for (size_t i = 0; i < kPages; ++i)
    reqs.push_back({layout_.Encode({Medium::kDevice, 1, kHalf + perm[i] * kPage}),
                    layout_.Encode({Medium::kDevice, 0, i * kPage}), kPage});
  const auto before = cuda_->stats();
  auto results = engine_->CopyBatch(reqs);
  const auto after = cuda_->stats();
  for (const Status& s : results) ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(after.kernel_launches - before.kernel_launches, 1u);
  EXPECT_EQ(after.ce_copies - before.ce_copies, 0u);
  std::vector<uint8_t> expect(kPages * kPage);
  FillRandom(expect.data(), expect.size(), seed);
  std::vector<uint8_t> got = gputest::Read(dev_[1] + kHalf, kPages * kPage);
  for (size_t i = 0; i < kPages; ++i)
    ASSERT_EQ(std::memcmp(got.data() + perm[i] * kPage, expect.data() + i * kPage, kPage), 0) << "page " << i;
}

// Engine::CopyPages: scattered pages given as indices, one launch. Random permutations each way
// (sources sometimes repeated), 1 to 100 000 pages of 16/64/256 KiB and odd sizes, GD and LD
// ends; fresh random data, poisoned destination, every byte compared.
struct PageCase {
  uint64_t page;
  size_t n;
  int shape;  // 0: GD->GD (pool slices), 1: LD->LD, 2: GD->LD, 3: LD->GD
};

class CudaPagesTest : public CudaCopyTest {
 protected:
  // Runs one case; `stream` null for the synchronous call.
  void RunCase(const PageCase& c, uint64_t& state, cudaStream_t stream = nullptr) {
    SCOPED_TRACE(testing::Message() << c.n << " pages of " << c.page << " B, shape " << c.shape);
    const uint64_t bytes = c.page * c.n;
    const bool src_gd = c.shape == 0 || c.shape == 2, dst_gd = c.shape == 0 || c.shape == 3;
    ASSERT_TRUE((!src_gd && !dst_gd) || bytes <= kHalf) << "case too large for a pool slice";
    std::unique_ptr<gputest::DeviceBuffer> lsrc, ldst;
    if (!src_gd) lsrc = std::make_unique<gputest::DeviceBuffer>(bytes);
    if (!dst_gd) ldst = std::make_unique<gputest::DeviceBuffer>(bytes);
    uint8_t* src = src_gd ? dev_[0] : lsrc->data();
    uint8_t* dst = dst_gd ? dev_[1] + kHalf : ldst->data();
    ASSERT_NE(src, nullptr);
    ASSERT_NE(dst, nullptr);
    const uint64_t src_base = src_gd ? layout_.Encode({Medium::kDevice, 0, 0}) : Addr(src);
    const uint64_t dst_base = dst_gd ? layout_.Encode({Medium::kDevice, 1, kHalf}) : Addr(dst);
    std::vector<uint32_t> d(c.n), sp(c.n);
    for (uint32_t i = 0; i < c.n; ++i) d[i] = sp[i] = i;
    for (size_t i = c.n; i > 1; --i) {
      std::swap(d[i - 1], d[SplitMix64(state) % i]);
      std::swap(sp[i - 1], sp[SplitMix64(state) % i]);
    }
    if (SplitMix64(state) % 2)  // some sources read twice: allowed (only destinations must not overlap)
      for (size_t i = 0; i < c.n / 8; ++i) sp[SplitMix64(state) % c.n] = sp[SplitMix64(state) % c.n];
    const uint64_t seed = SplitMix64(state);
    gputest::Fill(src, bytes, seed);
    gputest::Poison(dst, bytes);
    std::vector<uint8_t> src_host(bytes), expect(bytes);
    FillRandom(src_host.data(), bytes, seed);
    for (size_t i = 0; i < c.n; ++i) std::memcpy(expect.data() + d[i] * c.page, src_host.data() + sp[i] * c.page, c.page);
    const auto before = cuda_->stats();
    Status st = engine_->CopyPages(dst_base, src_base, c.page, d, sp, Direction::kAuto, stream);
    ASSERT_TRUE(st.ok()) << st.ToString();
    // The caller may reuse its lists at once, synchronous or not.
    std::fill(d.begin(), d.end(), 0u);
    std::fill(sp.begin(), sp.end(), 0u);
    if (stream) CUDA_OK(cudaStreamSynchronize(stream));
    const auto after = cuda_->stats();
    EXPECT_EQ(after.kernel_launches - before.kernel_launches, 1u);
    EXPECT_EQ(after.kernel_pages - before.kernel_pages, c.n);
    EXPECT_EQ(after.ce_copies - before.ce_copies, 0u);
    std::vector<uint8_t> got = gputest::Read(dst, bytes);
    auto first = std::mismatch(got.begin(), got.end(), expect.begin());
    ASSERT_TRUE(first.first == got.end()) << "first wrong byte at " << (first.first - got.begin()) << " (page "
                                          << (first.first - got.begin()) / c.page << ")";
  }
};

TEST_F(CudaPagesTest, CopyPagesRandomPermutationsOneToHundredThousandPages) {
  uint64_t state = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << state);
  const PageCase cases[] = {
      {16 << 10, 1, 0},      {16 << 10, 2, 1},      {16 << 10, 17, 2},     {16 << 10, 4096, 0},
      {16 << 10, 4096, 1},   {64 << 10, 4096, 0},   {64 << 10, 4096, 3},   {256 << 10, 4096, 1},
      {256 << 10, 1000, 0},  {16 << 10, 100000, 1}, {4100, 5000, 1},       {4099, 777, 2},
      {1, 100000, 1},        {(32 << 10) + 48, 300, 0},
  };
  for (const PageCase& c : cases) {
    RunCase(c, state);
    if (HasFatalFailure()) return;
  }
}

TEST_F(CudaPagesTest, CopyPagesOnTheCallersStream) {
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  uint64_t state = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << state);
  RunCase({16 << 10, 512, 1}, state, stream);
  RunCase({64 << 10, 300, 0}, state, stream);
  // Stream order: a memset enqueued before the pages must not land after them.
  constexpr size_t kPages = 256, kPage = 16 << 10;
  const uint64_t seed = SplitMix64(state);
  uint8_t* src = local_dev_src_->data();
  uint8_t* dst = local_dev_dst_->data();
  gputest::Fill(src, kPages * kPage, seed);
  gputest::Poison(dst, kPages * kPage);
  CUDA_OK(cudaMemsetAsync(dst, 0x22, kPages * kPage, stream));
  std::vector<uint32_t> idx(kPages);
  for (uint32_t i = 0; i < kPages; ++i) idx[i] = i;
  Status s = engine_->CopyPages(Addr(dst), Addr(src), kPage, idx, idx, Direction::kLD2LD, stream);
  ASSERT_TRUE(s.ok()) << s.ToString();
  gputest::PinnedBuffer back(kPages * kPage);
  CUDA_OK(cudaMemcpyAsync(back.data(), dst, kPages * kPage, cudaMemcpyDeviceToHost, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  ASSERT_FALSE(FirstMismatch(back.data(), kPages * kPage, seed).has_value());
  CUDA_OK(cudaStreamDestroy(stream));
}

TEST_F(CudaPagesTest, CopyPagesRefusesBadInputBeforeLaunching) {
  constexpr uint64_t kPage = 16 << 10;
  constexpr size_t kPages = 64;
  gputest::DeviceBuffer src(kPages * kPage), dst(kPages * kPage);
  gputest::Poison(dst.data(), kPages * kPage);
  std::vector<uint32_t> ok_idx(kPages), bad(kPages);
  for (uint32_t i = 0; i < kPages; ++i) ok_idx[i] = bad[i] = i;
  const auto before = cuda_->stats();
  // A source page one past a cudaMalloc allocation.
  bad[17] = kPages;
  Status s = engine_->CopyPages(Addr(dst.data()), Addr(src.data()), kPage, ok_idx, bad);
  EXPECT_EQ(s.code(), Code::kOutOfRange) << s.ToString();
  // A destination page past a pool device slice.
  std::vector<uint32_t> far = ok_idx;
  far[3] = static_cast<uint32_t>(kSlice / kPage);
  s = engine_->CopyPages(layout_.Encode({Medium::kDevice, 1, 0}), Addr(src.data()), kPage, far, ok_idx);
  EXPECT_EQ(s.code(), Code::kOutOfRange) << s.ToString();
  // Lists of different lengths, zero page size, a contradicted direction, a slot nobody holds.
  s = engine_->CopyPages(Addr(dst.data()), Addr(src.data()), kPage, std::span(ok_idx).first(3), ok_idx);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  s = engine_->CopyPages(Addr(dst.data()), Addr(src.data()), 0, ok_idx, ok_idx);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  s = engine_->CopyPages(Addr(dst.data()), Addr(src.data()), kPage, ok_idx, ok_idx, Direction::kGD2GD);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  s = engine_->CopyPages(layout_.Encode({Medium::kDevice, 3, 0}), Addr(src.data()), kPage, ok_idx, ok_idx);
  EXPECT_EQ(s.code(), Code::kInvalidAddress) << s.ToString();
  // Pageable host memory: the SMs cannot address it.
  s = engine_->CopyPages(Addr(dst.data()), Addr(pageable_src_.data()), kPage, ok_idx, ok_idx);
  EXPECT_EQ(s.code(), Code::kNotSupported) << s.ToString();
  const auto after = cuda_->stats();
  EXPECT_EQ(after.kernel_launches, before.kernel_launches) << "nothing may be launched for refused input";
  EXPECT_TRUE(gputest::AllBytes(dst.data(), kPages * kPage)) << "a refused call wrote to the destination";
  // Nothing sticky, and the next good call works.
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  uint64_t state = FreshSeed();
  RunCase({16 << 10, 64, 1}, state);
}

// Index pairs kept on the GPU (a block table): a random permutation GD->GD, every byte compared;
// a pair past the stated largest index is not copied and reported, the other pages are; pairs in
// host memory, a null pointer, a stated extent past the slice and a stream are refused before
// anything runs.
TEST_F(CudaPagesTest, CopyPagesWithIndexPairsInDeviceMemory) {
  constexpr uint64_t kPage = 16 << 10;
  constexpr uint32_t kPages = 1024;
  const uint64_t bytes = kPage * kPages;
  uint64_t state = FreshSeed();
  uint8_t* src = dev_[0];
  uint8_t* dst = dev_[1] + kHalf;
  const uint64_t src_base = layout_.Encode({Medium::kDevice, 0, 0});
  const uint64_t dst_base = layout_.Encode({Medium::kDevice, 1, kHalf});
  std::vector<uint32_t> d(kPages), sp(kPages);
  for (uint32_t i = 0; i < kPages; ++i) d[i] = sp[i] = i;
  for (size_t i = kPages; i > 1; --i) {
    std::swap(d[i - 1], d[SplitMix64(state) % i]);
    std::swap(sp[i - 1], sp[SplitMix64(state) % i]);
  }
  std::vector<uint32_t> pairs(2 * kPages);
  for (uint32_t i = 0; i < kPages; ++i) {
    pairs[2 * i] = d[i];
    pairs[2 * i + 1] = sp[i];
  }
  gputest::DeviceBuffer on_gpu(pairs.size() * sizeof(uint32_t));
  CUDA_OK(cudaMemcpy(on_gpu.data(), pairs.data(), pairs.size() * sizeof(uint32_t), cudaMemcpyHostToDevice));
  const auto* dev_pairs = reinterpret_cast<const uint32_t*>(on_gpu.data());
  const uint64_t seed = SplitMix64(state);
  gputest::Fill(src, bytes, seed);
  gputest::Poison(dst, bytes);
  std::vector<uint8_t> src_host(bytes), expect(bytes);
  FillRandom(src_host.data(), bytes, seed);
  for (uint32_t i = 0; i < kPages; ++i) std::memcpy(expect.data() + d[i] * kPage, src_host.data() + sp[i] * kPage, kPage);

  auto before = cuda_->stats();
  Status st = engine_->CopyPagesDeviceIndexed(dst_base, src_base, kPage, dev_pairs, kPages, kPages - 1, kPages - 1);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(cuda_->stats().kernel_launches - before.kernel_launches, 1u);
  EXPECT_TRUE(gputest::Read(dst, bytes) == expect) << "pages differ after a device-indexed copy";

  // Pair 10 points one page past the stated largest destination index: only it is skipped.
  gputest::Poison(dst, bytes);
  pairs[20] = kPages;
  CUDA_OK(cudaMemcpy(on_gpu.data(), pairs.data(), pairs.size() * sizeof(uint32_t), cudaMemcpyHostToDevice));
  st = engine_->CopyPagesDeviceIndexed(dst_base, src_base, kPage, dev_pairs, kPages, kPages - 1, kPages - 1);
  EXPECT_EQ(st.code(), Code::kOutOfRange) << st.ToString();
  std::vector<uint8_t> got = gputest::Read(dst, bytes);
  for (uint32_t i = 0; i < kPages; ++i) {
    const uint8_t* page = got.data() + d[i] * kPage;
    if (i == 10) {
      EXPECT_TRUE(std::all_of(page, page + kPage, [](uint8_t b) { return b == 0xA5; })) << "the skipped page was written";
    } else {
      ASSERT_EQ(std::memcmp(page, expect.data() + d[i] * kPage, kPage), 0) << "pair " << i;
    }
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);

  // Refused before launching.
  before = cuda_->stats();
  st = engine_->CopyPagesDeviceIndexed(dst_base, src_base, kPage, pairs.data(), kPages, kPages - 1, kPages - 1);
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << "pairs in host memory: " << st.ToString();
  st = engine_->CopyPagesDeviceIndexed(dst_base, src_base, kPage, nullptr, kPages, kPages - 1, kPages - 1);
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  st = engine_->CopyPagesDeviceIndexed(dst_base, src_base, kPage, dev_pairs, kPages,
                                       static_cast<uint32_t>(kHalf / kPage), kPages - 1);
  EXPECT_EQ(st.code(), Code::kOutOfRange) << "stated extent past the slice: " << st.ToString();
  EXPECT_EQ(cuda_->stats().kernel_launches, before.kernel_launches);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST_F(CudaCopyTest, CopiesOrderedOnTheCallersStream) {
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  uint64_t state = FreshSeed();
  constexpr size_t kPages = 512, kPage = 4096 + 3;
  const uint64_t seed = SplitMix64(state);
  uint8_t* src = local_dev_src_->data();
  uint8_t* dst = local_dev_dst_->data();
  gputest::Fill(src, kPages * kPage, seed);
  gputest::Poison(dst, kPages * kPage);
  // Stream order: a memset that the copies must follow, then the copies, then the read-back.
  CUDA_OK(cudaMemsetAsync(dst, 0x22, kPages * kPage, stream));
  std::vector<CopyRequest> reqs;
  for (size_t i = 0; i < kPages; ++i) reqs.push_back({Addr(dst + i * kPage), Addr(src + i * kPage), kPage});
  Status s = engine_->CopyBatchOnStream(reqs, stream);
  ASSERT_TRUE(s.ok()) << s.ToString();
  gputest::PinnedBuffer back(kPages * kPage);
  CUDA_OK(cudaMemcpyAsync(back.data(), dst, kPages * kPage, cudaMemcpyDeviceToHost, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  ASSERT_FALSE(FirstMismatch(back.data(), kPages * kPage, seed).has_value());
  // A single copy on the stream, device to pinned host.
  gputest::Poison(pinned_dst_->data(), 1 << 20);
  s = engine_->CopyOnStream(Addr(pinned_dst_->data()), Addr(src), 1 << 20, stream);
  ASSERT_TRUE(s.ok()) << s.ToString();
  CUDA_OK(cudaStreamSynchronize(stream));
  ASSERT_FALSE(FirstMismatch(pinned_dst_->data(), 1 << 20, seed).has_value());
  // Host-only copies have no stream path.
  s = engine_->CopyOnStream(Addr(pageable_dst_.data()), Addr(pageable_src_.data()), 16, stream);
  EXPECT_EQ(s.code(), Code::kNotSupported) << s.ToString();
  CUDA_OK(cudaStreamDestroy(stream));
}

TEST_F(CudaCopyTest, ConcurrentCallersOnSeveralStreams) {
  const uint64_t base_seed = FreshSeed();
  constexpr int kThreads = 4;
  constexpr uint64_t kPart = 16 << 20;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      uint64_t state = base_seed + t;
      for (int iter = 0; iter < 20; ++iter) {
        const uint64_t len = 1 + SplitMix64(state) % kPart;
        const uint64_t seed = SplitMix64(state);
        uint8_t* src = local_dev_src_->data() + t * kPart;
        uint8_t* dst = pinned_dst_->data() + t * kPart;
        gputest::Fill(src, len, seed);
        std::memset(dst, 0xA5, len);
        Status s = engine_->Copy(layout_.Encode({Medium::kDevice, 1, t * kPart}), Addr(src), len);  // LD -> GD
        if (s.ok()) s = engine_->Copy(Addr(dst), layout_.Encode({Medium::kDevice, 1, t * kPart}), len);  // GD -> LH
        if (!s.ok()) {
          errors[t] = s.ToString();
          return;
        }
        if (FirstMismatch(dst, len, seed)) {
          errors[t] = "wrong bytes at iteration " + std::to_string(iter);
          return;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_TRUE(errors[t].empty()) << "thread " << t << ": " << errors[t];
}

TEST_F(CudaCopyTest, BadInputGivesSpecificErrorsAndLeavesNoStickyError) {
  // A length past the device allocation.
  gputest::DeviceBuffer small(1 << 20);
  Status s = engine_->Copy(Addr(pinned_dst_->data()), Addr(small.data()), 2 << 20);
  EXPECT_EQ(s.code(), Code::kOutOfRange) << s.ToString();
  // Freed device memory.
  void* freed = nullptr;
  CUDA_OK(cudaMalloc(&freed, 4 << 20));
  CUDA_OK(cudaFree(freed));
  s = engine_->Copy(Addr(local_dev_dst_->data()), Addr(freed), 4096);
  EXPECT_TRUE(s.code() == Code::kNotRegistered || s.code() == Code::kInvalidArgument) << s.ToString();
  // Past the end of a device slice of the pool.
  s = engine_->Copy(Addr(local_dev_dst_->data()), layout_.Encode({Medium::kDevice, 0, kSlice - 10}), 100);
  EXPECT_EQ(s.code(), Code::kOutOfRange) << s.ToString();
  // A slot nobody holds.
  s = engine_->Copy(Addr(local_dev_dst_->data()), layout_.Encode({Medium::kDevice, 3, 0}), 100);
  EXPECT_EQ(s.code(), Code::kInvalidAddress) << s.ToString();
  // Device memory exhausted.
  auto huge = mem::cuda::DeviceSegment::Create(0, 1ull << 44);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), Code::kPoolFull) << huge.status().ToString();
  // A device that does not exist.
  auto nodev = mem::cuda::DeviceSegment::Create(gputest::DeviceCount() + 3, 1 << 20);
  EXPECT_EQ(nodev.status().code(), Code::kInvalidArgument) << nodev.status().ToString();
  // Importing more than was exported.
  auto seg = mem::cuda::DeviceSegment::Create(0, 2 << 20);
  ASSERT_TRUE(seg.ok());
  auto fd = (*seg)->ExportFd();
  ASSERT_TRUE(fd.ok());
  auto over = mem::cuda::DeviceSegment::Import(*fd, 64 << 20, 0);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), Code::kOutOfRange) << over.status().ToString();
  // A stream of another device.
  if (gputest::DeviceCount() >= 2) {
    cudaStream_t other;
    CUDA_OK(cudaSetDevice(1));
    CUDA_OK(cudaStreamCreate(&other));
    CUDA_OK(cudaSetDevice(0));
    s = engine_->CopyOnStream(Addr(local_dev_dst_->data()), Addr(local_dev_src_->data()), 4096, other);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
    CUDA_OK(cudaStreamDestroy(other));
  }
  // Nothing sticky: the runtime has no error pending and the next copy works.
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  uint64_t state = FreshSeed();
  CheckedCopy(EndKind::kLD, EndKind::kGD, 12345, 7, 3, state, Direction::kAuto);
}

TEST_F(CudaCopyTest, TwoGpusPeerCopies) {
  if (gputest::DeviceCount() < 2) GTEST_SKIP() << "one GPU: the two-GPU case needs nvidia-h200-x2";
  gputest::DeviceBuffer other(64 << 20, 1);
  cudaSetDevice(0);
  uint64_t state = FreshSeed();
  for (int i = 0; i < 8; ++i) {
    const uint64_t len = 1 + SplitMix64(state) % (32 << 20);
    const uint64_t seed = SplitMix64(state);
    gputest::Fill(local_dev_src_->data(), len, seed);
    gputest::Poison(other.data(), len);
    ASSERT_TRUE(engine_->Copy(Addr(other.data()), Addr(local_dev_src_->data()), len).ok());  // LD(0) -> LD(1)
    ASSERT_FALSE(gputest::Mismatch(other.data(), len, seed).has_value());
    gputest::Poison(dev_[1] + kHalf, len);
    ASSERT_TRUE(engine_->Copy(layout_.Encode({Medium::kDevice, 1, kHalf}), Addr(other.data()), len).ok());  // LD(1) -> GD(0)
    ASSERT_FALSE(gputest::Mismatch(dev_[1] + kHalf, len, seed).has_value());
  }  // Pages read from the other GPU over the link by the page kernel on GPU 0 (LD(1) -> LD(0)).
  constexpr uint64_t kPage = 16 << 10;
  constexpr uint32_t kPages = 2048;
  const uint64_t seed = SplitMix64(state);
  gputest::Fill(other.data(), kPages * kPage, seed);
  gputest::Poison(local_dev_dst_->data(), kPages * kPage);
  std::vector<uint32_t> d(kPages), sp(kPages);
  for (uint32_t i = 0; i < kPages; ++i) d[i] = sp[i] = i;
  for (size_t i = kPages; i > 1; --i) std::swap(d[i - 1], d[SplitMix64(state) % i]);
  Status s = engine_->CopyPages(Addr(local_dev_dst_->data()), Addr(other.data()), kPage, d, sp);
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::vector<uint8_t> src_host(kPages * kPage);
  FillRandom(src_host.data(), src_host.size(), seed);
  std::vector<uint8_t> got = gputest::Read(local_dev_dst_->data(), kPages * kPage);
  for (uint32_t i = 0; i < kPages; ++i)
    ASSERT_EQ(std::memcmp(got.data() + d[i] * kPage, src_host.data() + sp[i] * kPage, kPage), 0) << "page " << i;
}

// Every page-kernel variant (the lean kernel with one block per unit and with a persistent grid,
// with its index pairs read from mapped pinned memory or uploaded, the legacy kernel) and each of
// the lean kernel's instantiations: 16-byte aligned units with 32-bit offsets (the KV case),
// unaligned bases and odd page sizes (any access width), extents past 4 GiB (64-bit offsets). Transport-level calls, every destination byte compared.
TEST_F(CudaCopyTest, CopyPagesEveryKernelVariantAndOffsetWidth) {
  uint64_t state = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << state);
  // One buffer of 4 GiB + 64 bytes: sources in its first pages, destinations far up.
  constexpr uint64_t kBigBytes = (uint64_t{16384} + 256) * (256 << 10) + 64;
  gputest::DeviceBuffer big(kBigBytes);
  ASSERT_NE(big.ptr, nullptr) << "4 GiB of device memory";
  struct Variant {
    const char* name;
    transport::cuda::PageKernelVariant kernel;
    bool per_unit, mapped;
  } const variants[] = {{"lean, 1 block/unit, mapped indices", transport::cuda::PageKernelVariant::kLean, true, true},
                        {"lean, persistent", transport::cuda::PageKernelVariant::kLean, false, true},
                        {"lean, uploaded indices", transport::cuda::PageKernelVariant::kLean, true, false},
                        {"legacy", transport::cuda::PageKernelVariant::kLegacy, false, false}};
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.name);
    transport::cuda::CudaOptions co;
    co.page_kernel = v.kernel;
    co.page_grid_per_unit = v.per_unit;
    co.page_indices_mapped = v.mapped;
    auto ct = transport::cuda::CudaTransport::Create(co);
    ASSERT_TRUE(ct.ok()) << ct.status().ToString();
    struct Shape {
      uint64_t page;
      uint32_t pages;
      uint64_t src_skew, dst_skew;  // bytes added to each base
      uint32_t dst_first;           // added to every destination index; non-zero: both ends in `big`
    } const shapes[] = {{16 << 10, 3000, 0, 0, 0},      {64 << 10, 1000, 0, 0, 0},      {16 << 10, 500, 4, 4, 0},
                        {1000 + 3, 2000, 7, 1, 0},      {(1 << 20) + 16, 40, 16, 0, 0}, {256 << 10, 256, 0, 0, 16384},
                        {256 << 10, 256, 8, 8, 16384}, {16 << 10, 2000, 0, 0, 70000}};
    for (const Shape& sh : shapes) {
      SCOPED_TRACE(testing::Message() << sh.pages << " pages of " << sh.page << " B, skew " << sh.src_skew << "/"
                                      << sh.dst_skew << ", destination indices from " << sh.dst_first);
      const uint64_t bytes = sh.page * sh.pages;
      const bool in_big = sh.dst_first != 0;
      uint8_t* src = (in_big ? big.data() : local_dev_src_->data()) + sh.src_skew;
      uint8_t* dst = (in_big ? big.data() : local_dev_dst_->data()) + sh.dst_skew;
      ASSERT_LE(bytes + 64, in_big ? uint64_t{sh.dst_first} * sh.page : kHalf);
      ASSERT_LE((uint64_t{sh.dst_first} + sh.pages) * sh.page + sh.dst_skew, in_big ? kBigBytes : kHalf);
      std::vector<uint32_t> d(sh.pages), sp(sh.pages);
      for (uint32_t i = 0; i < sh.pages; ++i) d[i] = sp[i] = i;
      for (size_t i = sh.pages; i > 1; --i) {
        std::swap(d[i - 1], d[SplitMix64(state) % i]);
        std::swap(sp[i - 1], sp[SplitMix64(state) % i]);
      }
      for (uint32_t& x : d) x += sh.dst_first;
      const uint64_t seed = SplitMix64(state);
      gputest::Fill(src, bytes, seed);
      uint8_t* dst_region = dst + uint64_t{sh.dst_first} * sh.page;
      gputest::Poison(dst_region, bytes);
      uint32_t dmax = 0, smax = 0;
      for (uint32_t i = 0; i < sh.pages; ++i) dmax = std::max(dmax, d[i]), smax = std::max(smax, sp[i]);
      transport::PageCopy pc{transport::Endpoint{dst}, transport::Endpoint{src}, sh.page, (uint64_t{dmax} + 1) * sh.page,
                             (uint64_t{smax} + 1) * sh.page, d, sp};
      Status st = (*ct)->CopyPages(pc, nullptr, nullptr);
      ASSERT_TRUE(st.ok()) << st.ToString();
      std::vector<uint8_t> src_host(bytes);
      FillRandom(src_host.data(), bytes, seed);
      std::vector<uint8_t> got = gputest::Read(dst_region, bytes);
      for (uint32_t i = 0; i < sh.pages; ++i)
        ASSERT_EQ(std::memcmp(got.data() + (d[i] - sh.dst_first) * sh.page, src_host.data() + sp[i] * sh.page, sh.page), 0)
            << "page " << i;
      EXPECT_EQ((*ct)->stats().kernel_launches, 0u + (&sh - shapes) + 1);
    }
  }
}

class CudaGreenTest : public CudaCopyTest {
 protected:
  void SetUp() override {
    kernel_sms_ = 16;
    CudaCopyTest::SetUp();
  }
};

TEST_F(CudaGreenTest, KvBatchUnderAnSmBudget) {
  uint64_t state = FreshSeed();
  constexpr size_t kPages = 4096, kPage = 16 << 10;
  const uint64_t seed = SplitMix64(state);
  gputest::Fill(dev_[0], kPages * kPage, seed);
  gputest::Poison(local_dev_dst_->data(), kPages * kPage);
  std::vector<CopyRequest> reqs;
  for (size_t i = 0; i < kPages; ++i)
    reqs.push_back({Addr(local_dev_dst_->data() + (kPages - 1 - i) * kPage), layout_.Encode({Medium::kDevice, 0, i * kPage}),
                    kPage});
  for (const Status& s : engine_->CopyBatch(reqs)) ASSERT_TRUE(s.ok()) << s.ToString();
  std::vector<uint8_t> expect(kPages * kPage);
  FillRandom(expect.data(), expect.size(), seed);
  std::vector<uint8_t> got = gputest::Read(local_dev_dst_->data(), kPages * kPage);
  for (size_t i = 0; i < kPages; ++i)
    ASSERT_EQ(std::memcmp(got.data() + (kPages - 1 - i) * kPage, expect.data() + i * kPage, kPage), 0) << "page " << i;
  // The page batch under the same budget.
  std::vector<uint32_t> d(kPages), sp(kPages);
  for (uint32_t i = 0; i < kPages; ++i) d[i] = kPages - 1 - i, sp[i] = i;
  gputest::Poison(local_dev_dst_->data(), kPages * kPage);
  Status ps = engine_->CopyPages(Addr(local_dev_dst_->data()), layout_.Encode({Medium::kDevice, 0, 0}), kPage, d, sp);
  ASSERT_TRUE(ps.ok()) << ps.ToString();
  got = gputest::Read(local_dev_dst_->data(), kPages * kPage);
  for (size_t i = 0; i < kPages; ++i)
    ASSERT_EQ(std::memcmp(got.data() + (kPages - 1 - i) * kPage, expect.data() + i * kPage, kPage), 0) << "page " << i;
  RecordProperty("green_context", cuda_->green_context_active(0) ? "on" : "off");
  RecordProperty("kernel_sms", cuda_->kernel_sms(0));
  std::printf("copy kernel SM budget: green context %s, %d SMs\n", cuda_->green_context_active(0) ? "on" : "off",
              cuda_->kernel_sms(0));
}

// CopyHostDevice is synchronous: once it returns, a copy on another (non-blocking) stream sees
// the bytes. From pageable memory cudaMemcpy alone returns before its DMA lands, and the staged
// tcp path, which reads the device on weft's own streams, sent old bytes of a 4 KiB buffer that
// had just been filled this way (the bench's "CHECK bad 0").
TEST(HostDeviceCopy, BytesHaveLandedWhenCopyHostDeviceReturns) {
  WEFT_REQUIRE_GPU();
  constexpr size_t kBig = 1u << 20, kSmall = 4096;
  gputest::DeviceBuffer dev(kBig);
  ASSERT_NE(dev.data(), nullptr);
  mem::cuda::HostDeviceCopier copier;
  uint64_t state = 0x5eed0001;
  std::vector<uint8_t> big(kBig), small(kSmall), back(kSmall);
  for (int round = 0; round < 500; ++round) {
    // A large copy first (the bench's order), then a small one that the driver stages.
    FillRandom(big.data(), kBig, SplitMix64(state));
    ASSERT_TRUE(mem::cuda::CopyHostDevice(dev.data(), big.data(), kBig).ok());
    const uint64_t seed = SplitMix64(state);
    FillRandom(small.data(), kSmall, seed);
    ASSERT_TRUE(mem::cuda::CopyHostDevice(dev.data(), small.data(), kSmall).ok());
    std::fill(back.begin(), back.end(), 0xA5);
    Status s = copier.Copy(back.data(), dev.data(), kSmall);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(FirstMismatch(back.data(), kSmall, seed), std::nullopt) << "round " << round;
  }
}

}  // namespace
}  // namespace weft
