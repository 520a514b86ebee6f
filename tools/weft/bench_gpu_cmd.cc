// `weft bench-gpu`: the device directions of the engine, each against the raw CUDA baseline for
// the same work measured in the same run:
//   * LH/GH <-> LD over PCIe (8, 64, 256 MiB) against cudaMemcpyAsync from pinned memory;
//   * KV batches (4096 pages of 16/64/256 KiB at scattered offsets, GD->GD and LD->LD) against
//     one cudaMemcpyAsync per page, and against the large-copy bandwidth of the same bytes;
//   * small-copy latency against cudaMemcpyAsync + stream synchronisation;
//   * the same pages through Engine::CopyPages (bases + page indices, one launch), through the
//     transport with each page-kernel variant (lean / legacy, one block per unit / persistent,
//     indices mapped / uploaded), and the page kernel alone (events) and with launch + sync;
//   * the KV batch with the copy kernel held to 16 SMs (green context), when available;
//   * with two GPUs: GD->GD across GPUs against cudaMemcpyPeerAsync (8 MiB split into the raw copy
//     between the same mappings and the transport alone), a page batch over the link, and the
//     same copies with the GPU 1 segment owned by a second process (forked at start, fd passed);
//   * a compute-bound GEMM (bench_gemm.cu) alone and with KV batches copied meanwhile, with the
//     copy kernel on all SMs, on 16, and on 16 with the GEMM on the other SMs;
//   * the cost model's inputs (copy-engine latency and submit time, kernel latency).
// Prints a table and writes JSON (--json). Times are medians over --reps runs after warm-up;
// each synchronous call is timed on the host clock (it returns after the GPU is done).
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tools/weft/commands.h"

#if WEFT_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "base/clock.h"
#include "base/random.h"
#include "engine/engine.h"
#include "gva/segment_table.h"
#include "mem/cuda/cuda_api.h"
#include "mem/cuda/device_segment.h"
#include "transport/cuda/copy_kernel.h"
#include "transport/cuda/cuda_transport.h"
#include "net/unix_socket.h"
#include "tools/weft/bench_gemm.h"
#include "wire/control.h"

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace weft::tools {

#if WEFT_HAVE_CUDA
namespace {

struct Row {
  std::string group, name;
  uint64_t bytes = 0;      // per operation
  double weft = 0;         // GB/s, or µs for latency rows
  double baseline = 0;
  std::string unit;        // "GB/s" or "us"
  std::string baseline_name;
  std::string note;
  double ratio() const {
    if (weft <= 0 || baseline <= 0) return 0;
    return unit == "us" ? baseline / weft : weft / baseline;  // > 1: weft is better
  }
};

template <typename F>
double MedianNanos(int warmup, int reps, F&& f) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  t.reserve(reps);
  for (int i = 0; i < reps; ++i) {
    const uint64_t t0 = NowNanos();
    f();
    t.push_back(static_cast<double>(NowNanos() - t0));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Medians of a and b measured in alternation (a, b, a, b, ...), so that drift of the machine
// (clocks, other tenants) touches both alike.
template <typename A, typename B>
std::pair<double, double> MedianPairNanos(int warmup, int reps, A&& a, B&& b) {
  for (int i = 0; i < warmup; ++i) a(), b();
  std::vector<double> ta, tb;
  for (int i = 0; i < reps; ++i) {
    uint64_t t0 = NowNanos();
    a();
    uint64_t t1 = NowNanos();
    b();
    uint64_t t2 = NowNanos();
    ta.push_back(static_cast<double>(t1 - t0));
    tb.push_back(static_cast<double>(t2 - t1));
  }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  return {ta[ta.size() / 2], tb[tb.size() / 2]};
}

double Gbps(uint64_t bytes, double ns) { return ns > 0 ? static_cast<double>(bytes) / ns : 0; }

#define BENCH_CUDA(expr)                                                                   \
  do {                                                                                     \
    cudaError_t e_ = (expr);                                                               \
    if (e_ != cudaSuccess) {                                                               \
      fmt::print(stderr, "weft bench-gpu: {}: {}\n", #expr, cudaGetErrorName(e_));         \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

struct Bench {
  int reps = 20;
  bool quick = false;
  std::vector<Row> rows;
  bool failed = false;

  void Add(Row r) {
    fmt::print("{:<10} {:<34} {:>10.2f} {:>10.2f} {:<5} {:>6.3f}  {}\n", r.group, r.name, r.weft, r.baseline, r.unit,
               r.ratio(), r.note);
    std::fflush(stdout);
    rows.push_back(std::move(r));
  }
  void Check(const Status& s, const char* what) {
    if (!s.ok()) {
      fmt::print(stderr, "weft bench-gpu: {}: {}\n", what, s.ToString());
      failed = true;
    }
  }
};

// A second process for the cross-process rows: it owns a device segment on a GPU the bench asks
// for and passes its fd over a socketpair, as a same-node peer of a pool does. Forked before this
// process makes any CUDA call (CUDA does not survive fork); it touches CUDA only when asked.
Status SendText(int fd, const std::string& text, std::vector<int> fds = {}) {
  return net::SendTextFrame(fd, text, fds, Deadline::After(std::chrono::seconds(60)));
}

Result<net::ReceivedFrame> RecvText(int fd, net::FrameReader& reader) {
  return net::ReceiveFrame(fd, reader, Deadline::After(std::chrono::seconds(60)));
}

std::string TextOf(const net::ReceivedFrame& f) { return std::string(f.payload.begin(), f.payload.end()); }

// The helper's loop: "segment <device> <bytes>" -> "fd <bytes>" with the fd attached (or "none"
// / "error ..."); "quit" or a closed socket ends it.
int PeerHelperMain(int sock) {
  net::FrameReader reader;
  std::vector<std::unique_ptr<mem::cuda::DeviceSegment>> keep;
  for (;;) {
    auto msg = RecvText(sock, reader);
    if (!msg.ok()) return 0;
    const std::string text = TextOf(*msg);
    int device = -1;
    unsigned long long bytes = 0;
    if (std::sscanf(text.c_str(), "segment %d %llu", &device, &bytes) != 2) return 0;
    auto n = mem::cuda::Probe();
    if (!n.ok() || device >= *n) {
      (void)SendText(sock, "none");
      continue;
    }
    auto seg = mem::cuda::DeviceSegment::Create(device, bytes);
    if (!seg.ok()) {
      (void)SendText(sock, "error " + seg.status().ToString());
      continue;
    }
    cudaMemset((*seg)->data(), 5, (*seg)->size());
    cudaDeviceSynchronize();
    auto fd = (*seg)->ExportFd();
    if (!fd.ok()) {
      (void)SendText(sock, "error " + fd.status().ToString());
      continue;
    }
    (void)SendText(sock, fmt::format("fd {}", (*seg)->size()), {*fd});
    close(*fd);
    keep.push_back(std::move(*seg));
  }
}

struct PeerHelper {
  pid_t pid = -1;
  int sock = -1;
  net::FrameReader reader;

  static PeerHelper Start() {
    PeerHelper h;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return h;
    const pid_t pid = fork();
    if (pid == 0) {
      close(sv[0]);
      _exit(PeerHelperMain(sv[1]));
    }
    close(sv[1]);
    if (pid < 0) {
      close(sv[0]);
      return h;
    }
    h.pid = pid;
    h.sock = sv[0];
    return h;
  }
  // A segment of `bytes` on `device` owned by the helper, imported here for GPU `here`.
  Result<std::unique_ptr<mem::cuda::DeviceSegment>> Segment(int device, uint64_t bytes, int here) {
    if (pid <= 0) return Error(Code::kUnavailable, "no helper process");
    WEFT_RETURN_IF_ERROR(SendText(sock, fmt::format("segment {} {}", device, bytes)));
    WEFT_ASSIGN_OR_RETURN(net::ReceivedFrame f, RecvText(sock, reader));
    unsigned long long size = 0;
    if (std::sscanf(TextOf(f).c_str(), "fd %llu", &size) != 1 || f.fds.empty())
      return Error(Code::kUnavailable, "helper process: {}", TextOf(f));
    return mem::cuda::DeviceSegment::Import(f.fds[0].Release(), size, here);
  }
  ~PeerHelper() {
    if (sock >= 0) {
      (void)SendText(sock, "quit");
      close(sock);
    }
    if (pid > 0) {
      int status = 0;
      waitpid(pid, &status, 0);
    }
  }
  PeerHelper() = default;
  PeerHelper(PeerHelper&& o) noexcept : pid(o.pid), sock(o.sock) {
    o.pid = -1;
    o.sock = -1;
  }
  PeerHelper& operator=(PeerHelper&&) = delete;
};

int RunBenchGpu(const std::string& json_path, int reps, bool quick) {
  // Before any CUDA call: a forked process must not inherit an initialised CUDA.
  PeerHelper helper = PeerHelper::Start();
  auto n = mem::cuda::Probe();
  if (!n.ok()) {
    fmt::print("weft bench-gpu: skipped: {}\n", n.status().message());
    return 0;
  }
  Bench b;
  b.reps = reps;
  b.quick = quick;
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  fmt::print("GPU 0: {} ({} SMs), {} GPU(s) visible\n", prop.name, prop.multiProcessorCount, *n);

  const uint64_t kBig = 256ull << 20;
  const uint64_t kKvMax = 4096ull * (256 << 10);  // 1 GiB: the largest KV batch
  const uint64_t slice = kKvMax * 2;

  auto layout = *gva::Layout::Make(0x320000000000ull, slice, 4);
  gva::SegmentTable table(layout);
  MetricsRegistry metrics;
  engine::EngineOptions eo;
  eo.threads = 4;
  engine::Engine engine(eo, table, metrics);
  auto* cuda = dynamic_cast<transport::cuda::CudaTransport*>(engine.FindTransport("cuda"));
  if (!cuda) {
    fmt::print(stderr, "weft bench-gpu: the engine has no cuda path\n");
    return 1;
  }

  // Pool slices: GH rank 0 (memfd-like host memory, registered), GD rank 0 (own) and rank 1
  // (exported and imported again, as a same-node peer's).
  std::vector<std::unique_ptr<mem::cuda::DeviceSegment>> dsegs;
  for (uint32_t r = 0; r < 2; ++r) {
    auto seg = mem::cuda::DeviceSegment::Create(0, slice);
    if (!seg.ok()) {
      fmt::print(stderr, "weft bench-gpu: {}\n", seg.status().ToString());
      return 1;
    }
    if (r == 1) {
      auto fd = (*seg)->ExportFd();
      auto imported = fd.ok() ? mem::cuda::DeviceSegment::Import(*fd, (*seg)->size(), 0)
                              : Result<std::unique_ptr<mem::cuda::DeviceSegment>>(fd.status());
      if (!imported.ok()) {
        fmt::print(stderr, "weft bench-gpu: import: {}\n", imported.status().ToString());
        return 1;
      }
      seg = std::move(imported);
    }
    // As the pool attaches its device slices: with their GPU, so copies need no pointer query.
    b.Check(table.Attach({gva::Medium::kDevice, r, 0}, (*seg)->data(), (*seg)->size(), r == 0, "rank", [] {},
                         (*seg)->home_device()),
            "attach");
    dsegs.push_back(std::move(*seg));
  }
  std::vector<uint8_t> gh(kBig);
  FillRandom(gh.data(), gh.size(), FreshSeed());
  b.Check(engine.RegisterHostMemory(gh.data(), gh.size()), "register host slice");
  b.Check(table.Attach({gva::Medium::kHost, 0, 0}, gh.data(), gh.size(), true, "rank0", [] {}), "attach host");

  void *pinned = nullptr, *ld = nullptr, *ld2 = nullptr;
  BENCH_CUDA(cudaMallocHost(&pinned, kBig));
  BENCH_CUDA(cudaMalloc(&ld, kKvMax * 2));
  BENCH_CUDA(cudaMalloc(&ld2, kKvMax * 2));
  FillRandom(pinned, kBig, FreshSeed());
  BENCH_CUDA(cudaMemset(ld, 1, kKvMax * 2));
  BENCH_CUDA(cudaMemset(ld2, 2, kKvMax * 2));
  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto addr = [](const void* p) { return reinterpret_cast<uint64_t>(p); };
  auto baseline_copy = [&](void* dst, const void* src, uint64_t len) {
    cudaMemcpyAsync(dst, src, len, cudaMemcpyDefault, stream);
    cudaStreamSynchronize(stream);
  };

  fmt::print("\n{:<10} {:<34} {:>10} {:>10} {:<5} {:>6}  {}\n", "group", "case", "weft", "baseline", "unit", "ratio",
             "note");

  // 1. PCIe: LH / GH <-> LD against cudaMemcpy from pinned memory.
  for (uint64_t size : {uint64_t{8} << 20, uint64_t{64} << 20, kBig}) {
    if (quick && size == kBig) continue;
    const int r = size >= kBig ? std::max(5, reps / 2) : reps;
    const uint64_t gh_addr = layout.Encode({gva::Medium::kHost, 0, 0});
    struct Case {
      const char* name;
      uint64_t dst, src;
      void *bdst;
      const void* bsrc;
    } cases[] = {
        {"LH->LD", addr(ld), addr(pinned), ld, pinned},
        {"LD->LH", addr(pinned), addr(ld), pinned, ld},
        {"GH->LD", addr(ld), gh_addr, ld, pinned},
        {"LD->GH", gh_addr, addr(ld), pinned, ld},
    };
    for (const Case& c : cases) {
      double base = MedianNanos(2, r, [&] { baseline_copy(c.bdst, c.bsrc, size); });
      double ours = MedianNanos(2, r, [&] { b.Check(engine.Copy(c.dst, c.src, size), c.name); });
      b.Add({"pcie", fmt::format("{} {} MiB", c.name, size >> 20), size, Gbps(size, ours), Gbps(size, base), "GB/s",
             "cudaMemcpyAsync pinned", "copy engine"});
    }
  }

  // 2. KV batches: 4096 scattered pages, GD->GD and LD->LD, against one cudaMemcpyAsync per page
  // and against one large copy of the same bytes.
  uint64_t state = FreshSeed();
  auto kv = [&](engine::Engine& eng, const char* group, uint64_t page, bool gd, const std::string& note) {
    constexpr size_t kPages = 4096;
    const uint64_t total = kPages * page;
    // Scattered: page i goes from a random slot of the source region to another random slot.
    std::vector<uint64_t> sp(kPages), dp(kPages);
    for (size_t i = 0; i < kPages; ++i) sp[i] = dp[i] = i;
    for (size_t i = kPages; i > 1; --i) {
      std::swap(sp[i - 1], sp[SplitMix64(state) % i]);
      std::swap(dp[i - 1], dp[SplitMix64(state) % i]);
    }
    // Slots are spread over twice the bytes so pages are not adjacent.
    std::vector<engine::CopyRequest> reqs(kPages);
    std::vector<std::pair<uint8_t*, const uint8_t*>> raw(kPages);
    uint8_t* src_base = gd ? dsegs[0]->data() : static_cast<uint8_t*>(ld);
    uint8_t* dst_base = gd ? dsegs[1]->data() : static_cast<uint8_t*>(ld2);
    for (size_t i = 0; i < kPages; ++i) {
      const uint64_t so = sp[i] * 2 * page, doff = dp[i] * 2 * page;
      reqs[i] = gd ? engine::CopyRequest{layout.Encode({gva::Medium::kDevice, 1, doff}),
                                         layout.Encode({gva::Medium::kDevice, 0, so}), page}
                   : engine::CopyRequest{addr(dst_base + doff), addr(src_base + so), page};
      raw[i] = {dst_base + doff, src_base + so};
    }
    const int r = std::max(5, reps / 2);
    double per_page = MedianNanos(1, r, [&] {
      for (auto& [d, s] : raw) cudaMemcpyAsync(d, s, page, cudaMemcpyDeviceToDevice, stream);
      cudaStreamSynchronize(stream);
    });
    double large = MedianNanos(2, r, [&] { baseline_copy(dst_base, src_base, total); });
    double ours = MedianNanos(2, r, [&] {
      for (const Status& s : eng.CopyBatch(reqs)) b.Check(s, "kv batch");
    });
    // The same pages through the page-batch API: bases and indices (slot k is page 2k).
    std::vector<uint32_t> di(kPages), si(kPages);
    for (size_t i = 0; i < kPages; ++i) {
      di[i] = static_cast<uint32_t>(dp[i] * 2);
      si[i] = static_cast<uint32_t>(sp[i] * 2);
    }
    const uint64_t dbase = gd ? layout.Encode({gva::Medium::kDevice, 1, 0}) : addr(dst_base);
    const uint64_t sbase = gd ? layout.Encode({gva::Medium::kDevice, 0, 0}) : addr(src_base);
    double pages = MedianNanos(2, r, [&] { b.Check(eng.CopyPages(dbase, sbase, page, di, si), "copy pages"); });
    const std::string name = fmt::format("{} 4096x{}KiB", gd ? "GD->GD" : "LD->LD", page >> 10);
    b.Add({group, name + " vs per-page", total, Gbps(total, ours), Gbps(total, per_page), "GB/s",
           "cudaMemcpyAsync per page", note + ", CopyBatch"});
    b.Add({group, name + " vs large copy", total, Gbps(total, ours), Gbps(total, large), "GB/s",
           "one cudaMemcpyAsync", note + ", CopyBatch"});
    b.Add({group, name + " pages vs per-page", total, Gbps(total, pages), Gbps(total, per_page), "GB/s",
           "cudaMemcpyAsync per page", "Engine::CopyPages"});
    b.Add({group, name + " pages vs large", total, Gbps(total, pages), Gbps(total, large), "GB/s",
           "one cudaMemcpyAsync", "Engine::CopyPages"});
    if (&eng != &engine) return;
    {
      // The same pages with the (dst, src) pairs already in device memory (a block table kept on
      // the GPU): nothing to scan or upload, the GPU checks each pair against the stated maxima.
      std::vector<uint32_t> pairs(2 * kPages);
      uint32_t max_d = 0, max_s = 0;
      for (size_t i = 0; i < kPages; ++i) {
        pairs[2 * i] = di[i];
        pairs[2 * i + 1] = si[i];
        max_d = std::max(max_d, di[i]);
        max_s = std::max(max_s, si[i]);
      }
      void* dev_pairs = nullptr;
      if (cudaMalloc(&dev_pairs, pairs.size() * sizeof(uint32_t)) != cudaSuccess ||
          cudaMemcpy(dev_pairs, pairs.data(), pairs.size() * sizeof(uint32_t), cudaMemcpyHostToDevice) != cudaSuccess) {
        b.Check(Error(Code::kCuda, "{}", cudaGetErrorString(cudaGetLastError())), "index pairs on the GPU");
        if (dev_pairs) cudaFree(dev_pairs);
        return;
      }
      double dev_idx = MedianNanos(2, r, [&] {
        b.Check(eng.CopyPagesDeviceIndexed(dbase, sbase, page, static_cast<const uint32_t*>(dev_pairs), kPages, max_d,
                                           max_s),
                "copy pages, pairs on the GPU");
      });
      cudaFree(dev_pairs);
      b.Add({group, name + " pages gpu idx vs large", total, Gbps(total, dev_idx), Gbps(total, large), "GB/s",
             "one cudaMemcpyAsync", "Engine::CopyPagesDeviceIndexed (pairs in device memory)"});
    }
    // The transport's CopyPages alone (ends resolved beforehand, as the engine hands them over),
    // for each page-kernel variant and grid: the default (lean kernel, persistent grid), the lean
    // kernel with one block per unit, and the kernel before it (legacy).
    struct Variant {
      const char* name;
      transport::cuda::PageKernelVariant kernel;
      bool per_unit, mapped;
    } const variants[] = {{"lean", transport::cuda::PageKernelVariant::kLean, true, true},
                          {"lean uploaded idx", transport::cuda::PageKernelVariant::kLean, true, false},
                          {"lean persistent", transport::cuda::PageKernelVariant::kLean, false, true},
                          {"legacy", transport::cuda::PageKernelVariant::kLegacy, false, false}};
    const uint64_t extent = (uint64_t{2} * kPages) * page;
    for (const Variant& v : variants) {
      transport::cuda::CudaOptions co;
      co.page_kernel = v.kernel;
      co.page_grid_per_unit = v.per_unit;
      co.page_indices_mapped = v.mapped;
      auto ct = transport::cuda::CudaTransport::Create(co);
      if (!ct.ok()) break;
      transport::PageCopy pc{transport::Endpoint{dst_base}, transport::Endpoint{src_base}, page, extent, extent, di, si};
      double t = MedianNanos(2, r, [&] { b.Check((*ct)->CopyPages(pc, nullptr, nullptr), "transport pages"); });
      b.Add({group, fmt::format("{} pages transport {}", name, v.name), total, Gbps(total, t), Gbps(total, large),
             "GB/s", "one cudaMemcpyAsync",
             fmt::format("CudaTransport::CopyPages, {}, indices {}", v.name, v.mapped ? "read from mapped pinned memory" : "uploaded")});
    }
    // The page kernel alone (index pairs on the GPU, events), same variants: the GPU time
    // without upload, launch submit and synchronisation.
    {
      std::vector<uint32_t> pairs(2 * kPages);
      for (size_t i = 0; i < kPages; ++i) {
        pairs[2 * i] = di[i];
        pairs[2 * i + 1] = si[i];
      }
      void* didx = nullptr;
      if (cudaMalloc(&didx, pairs.size() * 4) != cudaSuccess) return;
      cudaMemcpy(didx, pairs.data(), pairs.size() * 4, cudaMemcpyHostToDevice);
      cudaEvent_t e0, e1;
      cudaEventCreate(&e0);
      cudaEventCreate(&e1);
      for (const Variant& v : variants) {
        if (!v.mapped && v.kernel == transport::cuda::PageKernelVariant::kLean) continue;  // same kernel as "lean"
        transport::cuda::PageCopyParams pp{addr(dst_base), addr(src_base), page, static_cast<const uint32_t*>(didx),
                                           0, 0, 0, extent < (uint64_t{1} << 32), nullptr, 0, 0};
        const int per_sm = transport::cuda::PageKernelBlocksPerSm(v.kernel, pp.offsets32,
                                                                  transport::cuda::PageUnitsAligned(pp));
        const auto pl = transport::cuda::PlanPages(page, kPages, prop.multiProcessorCount, std::min(per_sm, 8));
        pp.units = static_cast<uint32_t>(pl.units);
        pp.chunk = pl.chunk;
        pp.chunks_per_page = pl.chunks_per_page;
        const uint32_t grid = v.per_unit ? pp.units : pl.grid;
        std::vector<double> times;
        for (int i = 0; i < r + 2; ++i) {
          cudaEventRecord(e0, stream);
          transport::cuda::LaunchPageKernel(pp, grid, stream, v.kernel);
          cudaEventRecord(e1, stream);
          cudaEventSynchronize(e1);
          float ms = 0;
          cudaEventElapsedTime(&ms, e0, e1);
          if (i >= 2) times.push_back(ms * 1e6);
        }
        std::sort(times.begin(), times.end());
        b.Add({group, fmt::format("{} page kernel {}", name, v.name), total, Gbps(total, times[times.size() / 2]),
               Gbps(total, large), "GB/s", "one cudaMemcpyAsync",
               fmt::format("{} blocks, {} resident/SM, {}KiB units, events", grid, per_sm, pl.chunk >> 10)});
        if (&v != &variants[0]) continue;
        // The default kernel launched and waited for on the host clock, indices already on the
        // GPU: the fixed cost of launch and synchronisation without the upload.
        double ls = MedianNanos(2, r, [&] {
          transport::cuda::LaunchPageKernel(pp, grid, stream, v.kernel);
          cudaStreamSynchronize(stream);
        });
        b.Add({group, fmt::format("{} page kernel+launch+sync", name), total, Gbps(total, ls), Gbps(total, large), "GB/s",
               "one cudaMemcpyAsync", fmt::format("host clock; {:.1f} us vs {:.1f} us for the large copy", ls / 1000,
                                                  large / 1000)});
      }
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
      cudaFree(didx);
    }
    // Where the time goes: the transport alone (addresses resolved beforehand), and the kernel
    // alone (descriptors in device memory, timed with events).
    auto* t = dynamic_cast<transport::cuda::CudaTransport*>(eng.FindTransport("cuda"));
    std::vector<transport::CopyItem> items(kPages);
    for (size_t i = 0; i < kPages; ++i)
      items[i] = transport::CopyItem{transport::Endpoint{raw[i].first}, transport::Endpoint{const_cast<uint8_t*>(raw[i].second)}, page};
    std::vector<Status> st(kPages);
    double tr = MedianNanos(2, r, [&] {
      t->CopyBatch(items, st);
      for (const Status& s : st) b.Check(s, "transport batch");
    });
    b.Add({group, name + " transport only", total, Gbps(total, tr), Gbps(total, large), "GB/s", "one cudaMemcpyAsync",
           "CudaTransport::CopyBatch"});
    std::vector<transport::cuda::DeviceCopyDesc> descs;
    const uint32_t chunk = transport::cuda::ChooseChunk(total, kPages, prop.multiProcessorCount);
    for (auto& [d, s] : raw) transport::cuda::PackDescriptors(addr(d), addr(s), page, chunk, descs);
    void* ddesc = nullptr;
    if (cudaMalloc(&ddesc, descs.size() * sizeof(descs[0])) != cudaSuccess) return;
    cudaMemcpy(ddesc, descs.data(), descs.size() * sizeof(descs[0]), cudaMemcpyHostToDevice);
    const uint32_t grid = transport::cuda::ChooseGrid(descs.size(), prop.multiProcessorCount,
                                                      transport::cuda::kCopyKernelBlocksPerSm);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    std::vector<double> times;
    for (int i = 0; i < r + 2; ++i) {
      cudaEventRecord(e0, stream);
      transport::cuda::LaunchCopyKernel(static_cast<transport::cuda::DeviceCopyDesc*>(ddesc),
                                        static_cast<uint32_t>(descs.size()), grid, stream);
      cudaEventRecord(e1, stream);
      cudaEventSynchronize(e1);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      if (i >= 2) times.push_back(ms * 1e6);
    }
    std::sort(times.begin(), times.end());
    b.Add({group, name + " kernel only", total, Gbps(total, times[times.size() / 2]), Gbps(total, large), "GB/s",
           "one cudaMemcpyAsync", fmt::format("{} blocks, events", grid)});
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(ddesc);
  };
  for (uint64_t page : {uint64_t{16} << 10, uint64_t{64} << 10, uint64_t{256} << 10}) {
    // --quick keeps every page size for GD->GD (the KV case) and LD->LD at 16 KiB only.
    kv(engine, "kv", page, true, "copy kernel");
    if (!quick || page == (16 << 10)) kv(engine, "kv", page, false, "copy kernel");
  }

  // 3. Small-copy latency against cudaMemcpyAsync + synchronize.
  for (uint64_t size : {uint64_t{8}, uint64_t{4096}, uint64_t{65536}}) {
    const int r = std::max(50, reps * 10);
    struct Case {
      const char* name;
      void* dst;
      const void* src;
    } cases[] = {{"LD->LD", ld2, ld}, {"LH->LD", ld, pinned}, {"LD->LH", pinned, ld}};
    for (const Case& c : cases) {
      double base = MedianNanos(10, r, [&] { baseline_copy(c.dst, c.src, size); });
      double ours = MedianNanos(10, r, [&] { b.Check(engine.Copy(addr(c.dst), addr(c.src), size), c.name); });
      b.Add({"latency", fmt::format("{} {} B", c.name, size), size, ours / 1000, base / 1000, "us",
             "cudaMemcpyAsync+sync", "copy engine"});
    }
  }

  // 4. The KV batch with the copy kernel held to 16 SMs.
  {
    engine::EngineOptions go = eo;
    go.cuda_kernel_sms = 16;
    engine::Engine green(go, table, metrics);
    auto* gc = dynamic_cast<transport::cuda::CudaTransport*>(green.FindTransport("cuda"));
    const bool on = gc && gc->green_context_active(0);
    const std::string note = on ? fmt::format("green ctx, {} SMs", gc->kernel_sms(0)) : "green ctx unavailable: all SMs";
    kv(green, "kv-16sm", 16 << 10, true, note);
    if (!quick) kv(green, "kv-16sm", 256 << 10, true, note);
  }

  // 4b. Two GPUs: GD on GPU 1 (a device segment exported and imported again, as a same-node peer's
  // slice is) to GD on GPU 0 over the link, against cudaMemcpyPeerAsync between cudaMalloc
  // buffers; and a page batch read across the link by GPU 0's page kernel.
  if (*n >= 2) {
    int can = 0;
    cudaDeviceCanAccessPeer(&can, 0, 1);
    const uint64_t psize = 512ull << 20;
    auto seg = mem::cuda::DeviceSegment::Create(1, psize);
    std::unique_ptr<mem::cuda::DeviceSegment> peer_seg;
    if (seg.ok()) {
      auto fd = (*seg)->ExportFd();
      auto imp = fd.ok() ? mem::cuda::DeviceSegment::Import(*fd, (*seg)->size(), 0)
                         : Result<std::unique_ptr<mem::cuda::DeviceSegment>>(fd.status());
      if (imp.ok()) peer_seg = std::move(*imp);
      else b.Check(imp.status(), "import GPU 1 segment");
    } else {
      b.Check(seg.status(), "GPU 1 segment");
    }
    void* p1 = nullptr;
    cudaSetDevice(1);
    BENCH_CUDA(cudaMalloc(&p1, psize));
    BENCH_CUDA(cudaMemset(p1, 3, psize));
    cudaSetDevice(0);
    // The baseline of every row below: cudaMemcpyPeerAsync of `bytes` between cudaMalloc buffers
    // (GPU 1 -> GPU 0 when `pull`), alternated call by call with `ours`.
    auto versus_peer = [&](uint64_t bytes, bool pull, int r, auto&& ours) {
      return MedianPairNanos(
          5, r,
          [&] {
            if (pull) cudaMemcpyPeerAsync(ld, 0, p1, 1, bytes, stream);
            else cudaMemcpyPeerAsync(p1, 1, ld, 0, bytes, stream);
            cudaStreamSynchronize(stream);
          },
          ours);
    };
    if (peer_seg) {
      BENCH_CUDA(cudaMemset(peer_seg->data(), 4, psize));
      b.Check(table.Attach({gva::Medium::kDevice, 2, 0}, peer_seg->data(), peer_seg->size(), false, "rank2", [] {},
                           peer_seg->home_device()),
              "attach GPU 1 segment");
      const uint64_t g2 = layout.Encode({gva::Medium::kDevice, 2, 0});
      const uint64_t g0 = layout.Encode({gva::Medium::kDevice, 0, 0});
      for (uint64_t size : {uint64_t{8} << 20, uint64_t{64} << 20, uint64_t{256} << 20}) {
        // 8 MiB calls take ~30 µs: many alternated repetitions, so that 1 µs differences show.
        const int r = size <= (8u << 20) ? 200 : std::max(5, reps / 2);
        auto [base, ours] = versus_peer(size, true, r, [&] { b.Check(engine.Copy(g0, g2, size), "GD(1)->GD(0)"); });
        b.Add({"nvlink", fmt::format("GD(1)->GD(0) {} MiB", size >> 20), size, Gbps(size, ours), Gbps(size, base), "GB/s",
               "cudaMemcpyPeerAsync", can ? "peer access" : "no peer access"});
        if (size == (uint64_t{8} << 20)) {
          // Where an 8 MiB call's time goes: the same bytes between the same two mappings by a
          // raw cudaMemcpyAsync (the driver's cost of VMM memory against cudaMalloc memory), and
          // the transport alone (the engine's resolution and pins left out).
          double raw = MedianNanos(5, r, [&] { baseline_copy(dsegs[0]->data(), peer_seg->data(), size); });
          b.Add({"nvlink", "GD(1)->GD(0) 8 MiB raw on segments", size, Gbps(size, raw), Gbps(size, base), "GB/s",
                 "cudaMemcpyPeerAsync", "cudaMemcpyAsync between the two mappings"});
          transport::Endpoint d0{dsegs[0]->data()}, s2{peer_seg->data()};
          double tr = MedianNanos(5, r, [&] { b.Check(cuda->Copy(d0, s2, size), "transport GD(1)->GD(0)"); });
          // Just below the engine's split size (8 MiB): the inline path of Engine::Copy instead
          // of a job, same link.
          auto [base_m, ours_m] = versus_peer(size - 4096, true, r,
              [&] { b.Check(engine.Copy(g0, g2, size - 4096), "GD(1)->GD(0) 8 MiB - 4 KiB"); });
          b.Add({"nvlink", "GD(1)->GD(0) 8 MiB-4KiB", size - 4096, Gbps(size - 4096, ours_m), Gbps(size - 4096, base_m),
                 "GB/s", "cudaMemcpyPeerAsync", "below EngineOptions::split_bytes: inline Engine::Copy"});
          b.Add({"nvlink", "GD(1)->GD(0) 8 MiB transport", size, Gbps(size, tr), Gbps(size, base), "GB/s",
                 "cudaMemcpyPeerAsync", "CudaTransport::Copy"});
        }
        auto [back, ours_back] = versus_peer(size, false, r,
            [&] { b.Check(engine.Copy(g2, g0, size), "GD(0)->GD(1)"); });
        b.Add({"nvlink", fmt::format("GD(0)->GD(1) {} MiB", size >> 20), size, Gbps(size, ours_back), Gbps(size, back),
               "GB/s", "cudaMemcpyPeerAsync", can ? "peer access" : "no peer access"});
        if (size == (uint64_t{8} << 20)) {
          // The push direction split the same way: raw cudaMemcpyAsync between the two mappings
          // on a stream of GPU 0 (the GPU weft runs it on), and the transport alone.
          auto [back_r, raw] = versus_peer(size, false, r,
              [&] { baseline_copy(peer_seg->data(), dsegs[0]->data(), size); });
          b.Add({"nvlink", "GD(0)->GD(1) 8 MiB raw on segments", size, Gbps(size, raw), Gbps(size, back_r), "GB/s",
                 "cudaMemcpyPeerAsync", "cudaMemcpyAsync between the two mappings"});
          transport::Endpoint d2{peer_seg->data()}, s0{dsegs[0]->data()};
          auto [back_t, tr] = versus_peer(size, false, r,
              [&] { b.Check(cuda->Copy(d2, s0, size), "transport GD(0)->GD(1)"); });
          b.Add({"nvlink", "GD(0)->GD(1) 8 MiB transport", size, Gbps(size, tr), Gbps(size, back_t), "GB/s",
                 "cudaMemcpyPeerAsync", "CudaTransport::Copy"});
        }
      }
      // 4096 pages of 64 KiB, GPU 1 -> GPU 0, scattered, through CopyPages (GPU 0's SMs read over
      // the link), against one cudaMemcpyPeerAsync of the same bytes.
      constexpr uint32_t kPages = 4096;
      const uint64_t page = 64 << 10, total = kPages * page;
      std::vector<uint32_t> di(kPages), si(kPages);
      for (uint32_t i = 0; i < kPages; ++i) di[i] = si[i] = i;
      for (size_t i = kPages; i > 1; --i) {
        std::swap(di[i - 1], di[SplitMix64(state) % i]);
        std::swap(si[i - 1], si[SplitMix64(state) % i]);
      }
      const int r = std::max(5, reps / 2);
      double base = MedianNanos(2, r, [&] {
        cudaMemcpyPeerAsync(ld, 0, p1, 1, total, stream);
        cudaStreamSynchronize(stream);
      });
      double ours = MedianNanos(2, r, [&] { b.Check(engine.CopyPages(g0, g2, page, di, si), "pages GPU1->GPU0"); });
      b.Add({"nvlink", "GD(1)->GD(0) pages 4096x64KiB", total, Gbps(total, ours), Gbps(total, base), "GB/s",
             "cudaMemcpyPeerAsync (one copy)", "Engine::CopyPages"});
      table.Detach({gva::Medium::kDevice, 2, 0}, false);
    }
    // Two processes: GD on GPU 1 owned by the helper process (its device segment's fd passed
    // over the socketpair and imported here), to and from GD on GPU 0 (this process's own
    // segment), against cudaMemcpyPeerAsync between cudaMalloc buffers of this process.
    auto other = helper.Segment(1, 256ull << 20, 0);
    if (!other.ok()) {
      b.Check(other.status(), "segment of the helper process");
    } else {
      b.Check(table.Attach({gva::Medium::kDevice, 3, 0}, (*other)->data(), (*other)->size(), false, "rank3", [] {},
                           (*other)->home_device()),
              "attach the helper's segment");
      const uint64_t g3 = layout.Encode({gva::Medium::kDevice, 3, 0});
      const uint64_t g0 = layout.Encode({gva::Medium::kDevice, 0, 0});
      for (uint64_t size : {uint64_t{8} << 20, uint64_t{64} << 20, uint64_t{256} << 20}) {
        const int r = size <= (8u << 20) ? 200 : std::max(5, reps / 2);
        auto [base, ours] = versus_peer(size, true, r,
            [&] { b.Check(engine.Copy(g0, g3, size), "GD(1, other process)->GD(0)"); });
        b.Add({"ipc", fmt::format("GD(1,proc 2)->GD(0) {} MiB", size >> 20), size, Gbps(size, ours), Gbps(size, base),
               "GB/s", "cudaMemcpyPeerAsync", "segment of another process, fd passed"});
        auto [back, ours_back] = versus_peer(size, false, r,
            [&] { b.Check(engine.Copy(g3, g0, size), "GD(0)->GD(1, other process)"); });
        b.Add({"ipc", fmt::format("GD(0)->GD(1,proc 2) {} MiB", size >> 20), size, Gbps(size, ours_back),
               Gbps(size, back), "GB/s", "cudaMemcpyPeerAsync", "segment of another process, fd passed"});
      }
      table.Detach({gva::Medium::kDevice, 3, 0}, false);
    }
    cudaFree(p1);
  }

  // 4c. A compute-bound GEMM alone, then with KV page batches (CopyPages, 4096 x 16 KiB GD->GD)
  // copied over and over while it runs: by an engine whose copy kernel may use every SM, and by
  // one held to 16 SMs. Reported: the GEMM's slowdown and the KV bandwidth during the GEMM
  // against the same engine's KV bandwidth alone.
  {
    constexpr int kDim = 4096, kGemms = 3;
    const size_t mat = size_t{kDim} * kDim * sizeof(float);
    float *ga = nullptr, *gb = nullptr, *gc = nullptr;
    BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(&ga), mat));
    BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(&gb), mat));
    BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(&gc), mat));
    BENCH_CUDA(cudaMemset(ga, 0x3c, mat));  // ~0.01 in every element
    BENCH_CUDA(cudaMemset(gb, 0x3c, mat));
    cudaStream_t gs;
    BENCH_CUDA(cudaStreamCreateWithFlags(&gs, cudaStreamNonBlocking));
    cudaEvent_t g0, g1;
    cudaEventCreate(&g0);
    cudaEventCreate(&g1);
    auto gemms = [&] {
      cudaEventRecord(g0, gs);
      for (int i = 0; i < kGemms; ++i) LaunchBenchGemm(ga, gb, gc, kDim, kDim, kDim, gs);
      cudaEventRecord(g1, gs);
    };
    auto gemm_us = [&] {
      float ms = 0;
      cudaEventElapsedTime(&ms, g0, g1);
      return ms * 1000.0;
    };
    std::vector<double> alone;
    for (int i = 0; i < 5; ++i) {
      gemms();
      cudaEventSynchronize(g1);
      if (i >= 1) alone.push_back(gemm_us());
    }
    std::sort(alone.begin(), alone.end());
    const double gemm_alone = alone[alone.size() / 2];
    const double tflops = 2.0 * kDim * kDim * double(kDim) * kGemms / (gemm_alone * 1e-6) / 1e12;
    b.Add({"gemm", fmt::format("{}x GEMM {}^3 FP32 alone", kGemms, kDim), 0, gemm_alone, 0, "us", "",
           fmt::format("{:.1f} TFLOP/s", tflops)});

    constexpr size_t kPages = 4096;
    const uint64_t page = 16 << 10, total = kPages * page;
    std::vector<uint32_t> di(kPages), si(kPages);
    for (uint32_t i = 0; i < kPages; ++i) di[i] = si[i] = 2 * i;
    for (size_t i = kPages; i > 1; --i) {
      std::swap(di[i - 1], di[SplitMix64(state) % i]);
      std::swap(si[i - 1], si[SplitMix64(state) % i]);
    }
    const uint64_t dbase = layout.Encode({gva::Medium::kDevice, 1, 0}), sbase = layout.Encode({gva::Medium::kDevice, 0, 0});
    engine::EngineOptions go = eo;
    go.cuda_kernel_sms = 16;
    engine::Engine budget(go, table, metrics);
    auto* bc = dynamic_cast<transport::cuda::CudaTransport*>(budget.FindTransport("cuda"));
    const bool green_on = bc && bc->green_context_active(0);
    struct Who {
      engine::Engine* eng;
      std::string name;
    } const whos[] = {{&engine, "all SMs"}, {&budget, green_on ? fmt::format("{} SMs", bc->kernel_sms(0)) : "16 SMs (no green ctx: all)"}};
    for (const Who& w : whos) {
      const int r = std::max(5, reps / 2);
      double kv_alone = MedianNanos(2, r, [&] { b.Check(w.eng->CopyPages(dbase, sbase, page, di, si), "kv alone"); });
      std::vector<std::pair<double, double>> runs;  // (GEMM µs, KV GB/s)
      for (int i = 0; i < 3; ++i) {
        gemms();
        uint64_t batches = 0;
        const uint64_t t0 = NowNanos();
        while (cudaEventQuery(g1) == cudaErrorNotReady) {
          b.Check(w.eng->CopyPages(dbase, sbase, page, di, si), "kv during gemm");
          ++batches;
        }
        const uint64_t t1 = NowNanos();
        (void)cudaGetLastError();
        runs.emplace_back(gemm_us(), Gbps(batches * total, static_cast<double>(t1 - t0)));
      }
      std::sort(runs.begin(), runs.end());
      const auto [gemm_with, kv_with] = runs[runs.size() / 2];
      b.Add({"gemm", fmt::format("GEMM with KV, copy kernel {}", w.name), 0, gemm_with, gemm_alone, "us",
             "GEMM alone", fmt::format("GEMM {:.2f}x slower", gemm_with / gemm_alone)});
      b.Add({"gemm", fmt::format("KV during GEMM, {}", w.name), total, kv_with, Gbps(total, kv_alone), "GB/s",
             "same engine, no GEMM", "Engine::CopyPages 4096x16KiB GD->GD, back to back"});
    }
    // The budget as an application would use it: the GEMM on the SMs the copy kernel does not
    // have (a green context over the rest of the split), the KV batches on their 16.
    CUgreenCtx rest_ctx = nullptr;
    cudaStream_t rest_stream = nullptr;
    int rest_sms = 0;
    if (auto api = mem::cuda::LoadDriverApi(); api.ok() && (*api)->has_green_contexts() && green_on) {
      const auto& d = **api;
      CUdevice cu = 0;
      CUdevResource all{}, part{}, rest{};
      unsigned groups = 1;
      CUdevResourceDesc desc = nullptr;
      CUstream cs = nullptr;
      if (d.DeviceGet(&cu, 0) == CUDA_SUCCESS && d.DeviceGetDevResource(cu, &all, CU_DEV_RESOURCE_TYPE_SM) == CUDA_SUCCESS &&
          d.DevSmResourceSplitByCount(&part, &groups, &all, &rest, 0, 16) == CUDA_SUCCESS &&
          d.DevResourceGenerateDesc(&desc, &rest, 1) == CUDA_SUCCESS &&
          d.GreenCtxCreate(&rest_ctx, desc, cu, CU_GREEN_CTX_DEFAULT_STREAM) == CUDA_SUCCESS &&
          d.GreenCtxStreamCreate(&cs, rest_ctx, CU_STREAM_NON_BLOCKING, 0) == CUDA_SUCCESS) {
        rest_stream = reinterpret_cast<cudaStream_t>(cs);
        rest_sms = static_cast<int>(rest.sm.smCount);
      }
      (void)cudaGetLastError();
    }
    if (rest_stream) {
      auto rest_gemms = [&] {
        cudaEventRecord(g0, rest_stream);
        for (int i = 0; i < kGemms; ++i) LaunchBenchGemm(ga, gb, gc, kDim, kDim, kDim, rest_stream);
        cudaEventRecord(g1, rest_stream);
      };
      std::vector<double> ra;
      for (int i = 0; i < 4; ++i) {
        rest_gemms();
        cudaEventSynchronize(g1);
        if (i >= 1) ra.push_back(gemm_us());
      }
      std::sort(ra.begin(), ra.end());
      const double rest_alone = ra[ra.size() / 2];
      b.Add({"gemm", fmt::format("GEMM on the other {} SMs alone", rest_sms), 0, rest_alone, gemm_alone, "us",
             "GEMM alone, all SMs", "green context over the SMs the copy kernel does not use"});
      const int r = std::max(5, reps / 2);
      double kv_alone = MedianNanos(2, r, [&] { b.Check(budget.CopyPages(dbase, sbase, page, di, si), "kv alone"); });
      std::vector<std::pair<double, double>> runs;
      for (int i = 0; i < 3; ++i) {
        rest_gemms();
        uint64_t batches = 0;
        const uint64_t t0 = NowNanos();
        while (cudaEventQuery(g1) == cudaErrorNotReady) {
          b.Check(budget.CopyPages(dbase, sbase, page, di, si), "kv during gemm");
          ++batches;
        }
        const uint64_t t1 = NowNanos();
        (void)cudaGetLastError();
        runs.emplace_back(gemm_us(), Gbps(batches * total, static_cast<double>(t1 - t0)));
      }
      std::sort(runs.begin(), runs.end());
      const auto [gemm_with, kv_with] = runs[runs.size() / 2];
      b.Add({"gemm", fmt::format("GEMM({} SMs) with KV(16 SMs)", rest_sms), 0, gemm_with, rest_alone, "us",
             "the same GEMM alone", fmt::format("GEMM {:.2f}x slower", gemm_with / rest_alone)});
      b.Add({"gemm", "KV(16 SMs) during GEMM on the rest", total, kv_with, Gbps(total, kv_alone), "GB/s",
             "same engine, no GEMM", "Engine::CopyPages 4096x16KiB GD->GD, back to back"});
      cudaStreamDestroy(rest_stream);
      (*mem::cuda::LoadDriverApi())->GreenCtxDestroy(rest_ctx);
    }
    cudaEventDestroy(g0);
    cudaEventDestroy(g1);
    cudaStreamDestroy(gs);
    cudaFree(ga);
    cudaFree(gb);
    cudaFree(gc);
  }

  // 5. The cost model's inputs, for docs/gpu.md and CostModel's defaults.
  {
    const int r = std::max(100, reps * 10);
    double ce_lat = MedianNanos(10, r, [&] { baseline_copy(ld2, ld, 16); });
    constexpr int kSubmits = 256;
    double submit = MedianNanos(2, 10, [&] {
      for (int i = 0; i < kSubmits; ++i) cudaMemcpyAsync(static_cast<uint8_t*>(ld2) + i * 64, static_cast<uint8_t*>(ld) + i * 64, 16, cudaMemcpyDeviceToDevice, stream);
      cudaStreamSynchronize(stream);
    });
    std::vector<engine::CopyRequest> two = {{addr(ld2), addr(ld), 16}, {addr(static_cast<uint8_t*>(ld2) + 4096), addr(static_cast<uint8_t*>(ld) + 4096), 16}};
    const auto before = cuda->stats();
    double kernel_lat = MedianNanos(10, r, [&] { (void)engine.CopyBatch(two); });
    const auto after = cuda->stats();
    b.Add({"model", "copy-engine latency (16 B)", 16, ce_lat / 1000, 0, "us", "", "CostModel::ce_latency_ns"});
    b.Add({"model", "copy-engine submit (per copy)", 16, (submit - ce_lat) / (kSubmits - 1) / 1000, 0, "us", "",
           "CostModel::ce_submit_ns"});
    b.Add({"model", "2-copy batch (engine)", 32, kernel_lat / 1000, 0, "us", "",
           after.kernel_launches > before.kernel_launches ? "copy kernel" : "copy engine"});
    // The kernel's fixed cost: a transport whose model always picks the kernel.
    transport::cuda::CudaOptions forced;
    forced.model.kernel_latency_ns = 0;
    forced.model.kernel_per_desc_ns = 0;
    if (auto ft = transport::cuda::CudaTransport::Create(forced); ft.ok()) {
      std::vector<transport::CopyItem> items = {
          {transport::Endpoint{static_cast<uint8_t*>(ld2)}, transport::Endpoint{static_cast<uint8_t*>(ld)}, 16},
          {transport::Endpoint{static_cast<uint8_t*>(ld2) + 4096}, transport::Endpoint{static_cast<uint8_t*>(ld) + 4096}, 16}};
      std::vector<Status> st(2);
      double k = MedianNanos(10, r, [&] { (*ft)->CopyBatch(items, st); });
      b.Add({"model", "kernel batch latency (2x16 B)", 32, k / 1000, 0, "us", "",
             (*ft)->stats().kernel_launches ? "CostModel::kernel_latency_ns" : "kernel not used?"});
    }
  }

  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{\"gpu\": \"" << prop.name << "\", \"sms\": " << prop.multiProcessorCount << ", \"rows\": [\n";
    for (size_t i = 0; i < b.rows.size(); ++i) {
      const Row& r = b.rows[i];
      out << fmt::format("  {{\"group\": \"{}\", \"case\": \"{}\", \"bytes\": {}, \"weft\": {:.4f}, \"baseline\": {:.4f}, "
                         "\"unit\": \"{}\", \"ratio\": {:.4f}, \"baseline_is\": \"{}\", \"note\": \"{}\"}}{}\n",
                         r.group, r.name, r.bytes, r.weft, r.baseline, r.unit, r.ratio(), r.baseline_name, r.note,
                         i + 1 < b.rows.size() ? "," : "");
    }
    out << "]}\n";
  }
  table.Detach({gva::Medium::kHost, 0, 0}, false);
  engine.UnregisterHostMemory(gh.data());
  cudaStreamDestroy(stream);
  cudaFree(ld);
  cudaFree(ld2);
  cudaFreeHost(pinned);
  return b.failed ? 1 : 0;
}

}  // namespace
#endif

int RunDeviceBench(const std::string& json_path, int reps, bool quick) {
#if WEFT_HAVE_CUDA
  return RunBenchGpu(json_path, std::max(3, reps), quick);
#else
  (void)json_path;
  (void)reps;
  (void)quick;
  fmt::print("weft bench-gpu: this weft was built without CUDA (no nvcc at build time)\n");
  return 0;
#endif
}

void AddBenchGpu(CLI::App& app, Runner* run) {
  struct Options {
    std::string json;
    int reps = 20;
    bool quick = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("bench-gpu", "Benchmark the device paths against raw CUDA (needs a GPU)");
  cmd->add_option("--json", o->json, "Write the results as JSON to this file");
  cmd->add_option("--reps", o->reps, "Timed repetitions per case (median reported)");
  cmd->add_flag("--quick", o->quick, "Fewer sizes");
  cmd->callback([=] {
    *run = [=]() -> int { return RunDeviceBench(o->json, o->reps, o->quick); };
  });
}

}  // namespace weft::tools
