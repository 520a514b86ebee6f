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

constexpr uint64_t kBig = 256ull << 20;             // the largest PCIe copy
constexpr uint64_t kKvMax = 4096ull * (256 << 10);  // 1 GiB: the largest KV batch
constexpr uint64_t kSlice = kKvMax * 2;             // a rank's share: room for the largest batch's slots

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

// A device segment exported and imported again on GPU 0, as a same-node peer's slice is.
Result<std::unique_ptr<mem::cuda::DeviceSegment>> Reimport(const mem::cuda::DeviceSegment& seg) {
  auto fd = seg.ExportFd();
  return fd.ok() ? mem::cuda::DeviceSegment::Import(*fd, seg.size(), 0)
                 : Result<std::unique_ptr<mem::cuda::DeviceSegment>>(fd.status());
}

// What every section measures with: the engine under test over a table of pool slices (GH rank
// 0, GD ranks 0 and 1), and the raw buffers of the baselines with their stream. The members are
// declared in the order they are made, so the slices outlive the engine that copies between them.
struct Rig {
  Bench& b;
  const cudaDeviceProp& prop;
  gva::Layout layout;
  gva::SegmentTable table;
  MetricsRegistry metrics;
  engine::EngineOptions eo;
  engine::Engine engine;
  transport::cuda::CudaTransport* cuda = nullptr;
  std::vector<std::unique_ptr<mem::cuda::DeviceSegment>> dsegs;
  std::vector<uint8_t> gh;
  void *pinned = nullptr, *ld = nullptr, *ld2 = nullptr;
  cudaStream_t stream = nullptr;
  uint64_t state = 0;  // draws the scatter of the page batches

  Rig(Bench& bench, const cudaDeviceProp& p)
      : b(bench),
        prop(p),
        layout(*gva::Layout::Make(0x320000000000ull, kSlice, 4)),
        table(layout),
        eo(FourThreads()),
        engine(eo, table, metrics) {}

  static engine::EngineOptions FourThreads() {
    engine::EngineOptions o;
    o.threads = 4;
    return o;
  }

  // The slices and the baselines' buffers; 1 (after a message) when one cannot be made.
  int Setup() {
    cuda = dynamic_cast<transport::cuda::CudaTransport*>(engine.FindTransport("cuda"));
    if (!cuda) {
      fmt::print(stderr, "weft bench-gpu: the engine has no cuda path\n");
      return 1;
    }
    if (int rc = AttachDeviceSlices(); rc != 0) return rc;
    gh.resize(kBig);
    FillRandom(gh.data(), gh.size(), FreshSeed());
    b.Check(engine.RegisterHostMemory(gh.data(), gh.size()), "register host slice");
    b.Check(table.Attach({gva::Medium::kHost, 0, 0}, gh.data(), gh.size(), true, "rank0", [] {}), "attach host");

    BENCH_CUDA(cudaMallocHost(&pinned, kBig));
    BENCH_CUDA(cudaMalloc(&ld, kKvMax * 2));
    BENCH_CUDA(cudaMalloc(&ld2, kKvMax * 2));
    FillRandom(pinned, kBig, FreshSeed());
    BENCH_CUDA(cudaMemset(ld, 1, kKvMax * 2));
    BENCH_CUDA(cudaMemset(ld2, 2, kKvMax * 2));
    BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    return 0;
  }

  // GD rank 0 (own) and rank 1 (exported and imported again, as a same-node peer's).
  int AttachDeviceSlices() {
    for (uint32_t r = 0; r < 2; ++r) {
      auto seg = mem::cuda::DeviceSegment::Create(0, kSlice);
      if (!seg.ok()) {
        fmt::print(stderr, "weft bench-gpu: {}\n", seg.status().ToString());
        return 1;
      }
      if (r == 1) {
        auto imported = Reimport(**seg);
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
    return 0;
  }

  // After the last section (an early error return leaves all this to the process's exit).
  void Teardown() {
    table.Detach({gva::Medium::kHost, 0, 0}, false);
    engine.UnregisterHostMemory(gh.data());
    cudaStreamDestroy(stream);
    cudaFree(ld);
    cudaFree(ld2);
    cudaFreeHost(pinned);
  }

  void BaselineCopy(void* dst, const void* src, uint64_t len) const {
    cudaMemcpyAsync(dst, src, len, cudaMemcpyDefault, stream);
    cudaStreamSynchronize(stream);
  }

  uint64_t DeviceGva(uint32_t rank, uint64_t offset = 0) const {
    return layout.Encode({gva::Medium::kDevice, rank, offset});
  }
};

// Shuffles a and b, each with its own permutation, from one stream of draws taken alternately
// (a's swap, then b's), as every page batch of the bench scatters its two index lists.
template <typename T>
void ShuffleBoth(std::vector<T>& a, std::vector<T>& b, uint64_t& state) {
  for (size_t i = a.size(); i > 1; --i) {
    std::swap(a[i - 1], a[SplitMix64(state) % i]);
    std::swap(b[i - 1], b[SplitMix64(state) % i]);
  }
}

// Median GPU time of `launch` on `stream` between two events, over `reps` runs after two
// warm-up runs.
template <typename F>
double MedianEventNanos(cudaStream_t stream, cudaEvent_t e0, cudaEvent_t e1, int reps, F&& launch) {
  std::vector<double> times;
  for (int i = 0; i < reps + 2; ++i) {
    cudaEventRecord(e0, stream);
    launch();
    cudaEventRecord(e1, stream);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i >= 2) times.push_back(ms * 1e6);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// 1. PCIe: LH / GH <-> LD against cudaMemcpy from pinned memory.
void BenchPcie(Rig& rig) {
  Bench& b = rig.b;
  for (uint64_t size : {uint64_t{8} << 20, uint64_t{64} << 20, kBig}) {
    if (b.quick && size == kBig) continue;
    const int r = size >= kBig ? std::max(5, b.reps / 2) : b.reps;
    const uint64_t gh_addr = rig.layout.Encode({gva::Medium::kHost, 0, 0});
    struct Case {
      const char* name;
      uint64_t dst, src;
      void *bdst;
      const void* bsrc;
    } cases[] = {
        {"LH->LD", Addr(rig.ld), Addr(rig.pinned), rig.ld, rig.pinned},
        {"LD->LH", Addr(rig.pinned), Addr(rig.ld), rig.pinned, rig.ld},
        {"GH->LD", Addr(rig.ld), gh_addr, rig.ld, rig.pinned},
        {"LD->GH", gh_addr, Addr(rig.ld), rig.pinned, rig.ld},
    };
    for (const Case& c : cases) {
      double base = MedianNanos(2, r, [&] { rig.BaselineCopy(c.bdst, c.bsrc, size); });
      double ours = MedianNanos(2, r, [&] { b.Check(rig.engine.Copy(c.dst, c.src, size), c.name); });
      b.Add({"pcie", fmt::format("{} {} MiB", c.name, size >> 20), size, Gbps(size, ours), Gbps(size, base), "GB/s",
             "cudaMemcpyAsync pinned", "copy engine"});
    }
  }
}

// A KV batch: 4096 pages from scattered slots of a source region to scattered slots of a
// destination region, GD rank 0 -> GD rank 1 or LD -> LD. Slots are spread over twice the bytes
// so pages are not adjacent: slot k is page 2k.
constexpr size_t kKvPages = 4096;

struct KvBatch {
  uint64_t page = 0, total = 0;
  uint8_t *src_base = nullptr, *dst_base = nullptr;
  std::vector<engine::CopyRequest> reqs;                 // for CopyBatch
  std::vector<std::pair<uint8_t*, const uint8_t*>> raw;  // (dst, src) of each page, for the baselines
  std::vector<uint32_t> di, si;                          // page indices, for CopyPages
  uint64_t dbase = 0, sbase = 0;                         // their bases: GVAs for GD, pointers for LD
  std::string name;                                      // "GD->GD 4096x16KiB"
};

KvBatch MakeKvBatch(Rig& rig, uint64_t page, bool gd) {
  KvBatch k;
  k.page = page;
  k.total = kKvPages * page;
  // Scattered: page i goes from a random slot of the source region to another random slot.
  std::vector<uint64_t> sp(kKvPages), dp(kKvPages);
  for (size_t i = 0; i < kKvPages; ++i) sp[i] = dp[i] = i;
  ShuffleBoth(sp, dp, rig.state);
  k.src_base = gd ? rig.dsegs[0]->data() : static_cast<uint8_t*>(rig.ld);
  k.dst_base = gd ? rig.dsegs[1]->data() : static_cast<uint8_t*>(rig.ld2);
  k.reqs.resize(kKvPages);
  k.raw.resize(kKvPages);
  for (size_t i = 0; i < kKvPages; ++i) {
    const uint64_t so = sp[i] * 2 * page, doff = dp[i] * 2 * page;
    k.reqs[i] = gd ? engine::CopyRequest{rig.DeviceGva(1, doff), rig.DeviceGva(0, so), page}
                   : engine::CopyRequest{Addr(k.dst_base + doff), Addr(k.src_base + so), page};
    k.raw[i] = {k.dst_base + doff, k.src_base + so};
  }
  k.di.resize(kKvPages);
  k.si.resize(kKvPages);
  for (size_t i = 0; i < kKvPages; ++i) {
    k.di[i] = static_cast<uint32_t>(dp[i] * 2);
    k.si[i] = static_cast<uint32_t>(sp[i] * 2);
  }
  k.dbase = gd ? rig.DeviceGva(1) : Addr(k.dst_base);
  k.sbase = gd ? rig.DeviceGva(0) : Addr(k.src_base);
  k.name = fmt::format("{} 4096x{}KiB", gd ? "GD->GD" : "LD->LD", page >> 10);
  return k;
}

// The batch's (dst, src) index pairs one after the other, as they sit in device memory.
std::vector<uint32_t> IndexPairs(const KvBatch& k) {
  std::vector<uint32_t> pairs(2 * kKvPages);
  for (size_t i = 0; i < kKvPages; ++i) {
    pairs[2 * i] = k.di[i];
    pairs[2 * i + 1] = k.si[i];
  }
  return pairs;
}

// The closer looks at a KV batch of the engine under test: each row is the batch's bytes
// through one piece of the path, against one large copy of the same bytes.
struct KvLook {
  Rig& rig;
  const char* group;
  const KvBatch& k;
  int r;         // timed repetitions
  double large;  // ns of the large copy

  void AddVersusLarge(const std::string& name, double ns, const std::string& note) const {
    rig.b.Add({group, name, k.total, Gbps(k.total, ns), Gbps(k.total, large), "GB/s", "one cudaMemcpyAsync", note});
  }
};

// The page kernel's variants and grids: the default (lean kernel, persistent grid), the lean
// kernel with one block per unit, and the kernel before it (legacy).
struct PageVariant {
  const char* name;
  transport::cuda::PageKernelVariant kernel;
  bool per_unit, mapped;
};
constexpr PageVariant kPageVariants[] = {{"lean", transport::cuda::PageKernelVariant::kLean, true, true},
                                         {"lean uploaded idx", transport::cuda::PageKernelVariant::kLean, true, false},
                                         {"lean persistent", transport::cuda::PageKernelVariant::kLean, false, true},
                                         {"legacy", transport::cuda::PageKernelVariant::kLegacy, false, false}};

// The same pages with the (dst, src) pairs already in device memory (a block table kept on the
// GPU): nothing to scan or upload, the GPU checks each pair against the stated maxima. false when
// the pairs could not be put on the GPU: the batch's other closer looks are skipped then.
bool BenchKvDeviceIndexed(const KvLook& l) {
  Bench& b = l.rig.b;
  const KvBatch& k = l.k;
  const std::vector<uint32_t> pairs = IndexPairs(k);
  const uint32_t max_d = *std::max_element(k.di.begin(), k.di.end());
  const uint32_t max_s = *std::max_element(k.si.begin(), k.si.end());
  void* dev_pairs = nullptr;
  if (cudaMalloc(&dev_pairs, pairs.size() * sizeof(uint32_t)) != cudaSuccess ||
      cudaMemcpy(dev_pairs, pairs.data(), pairs.size() * sizeof(uint32_t), cudaMemcpyHostToDevice) != cudaSuccess) {
    b.Check(Error(Code::kCuda, "{}", cudaGetErrorString(cudaGetLastError())), "index pairs on the GPU");
    if (dev_pairs) cudaFree(dev_pairs);
    return false;
  }
  double dev_idx = MedianNanos(2, l.r, [&] {
    b.Check(l.rig.engine.CopyPagesDeviceIndexed(k.dbase, k.sbase, k.page, static_cast<const uint32_t*>(dev_pairs),
                                                kKvPages, max_d, max_s),
            "copy pages, pairs on the GPU");
  });
  cudaFree(dev_pairs);
  l.AddVersusLarge(k.name + " pages gpu idx vs large", dev_idx,
                   "Engine::CopyPagesDeviceIndexed (pairs in device memory)");
  return true;
}

// The transport's CopyPages alone (ends resolved beforehand, as the engine hands them over),
// for each page-kernel variant and grid.
void BenchKvTransportPages(const KvLook& l) {
  const KvBatch& k = l.k;
  const uint64_t extent = (uint64_t{2} * kKvPages) * k.page;
  for (const PageVariant& v : kPageVariants) {
    transport::cuda::CudaOptions co;
    co.page_kernel = v.kernel;
    co.page_grid_per_unit = v.per_unit;
    co.page_indices_mapped = v.mapped;
    auto ct = transport::cuda::CudaTransport::Create(co);
    if (!ct.ok()) break;
    transport::PageCopy pc{transport::Endpoint{k.dst_base}, transport::Endpoint{k.src_base}, k.page, extent, extent,
                           k.di, k.si};
    double t = MedianNanos(2, l.r, [&] { l.rig.b.Check((*ct)->CopyPages(pc, nullptr, nullptr), "transport pages"); });
    l.AddVersusLarge(fmt::format("{} pages transport {}", k.name, v.name), t,
                     fmt::format("CudaTransport::CopyPages, {}, indices {}", v.name,
                                 v.mapped ? "read from mapped pinned memory" : "uploaded"));
  }
}

// One variant of the page kernel launched by hand over index pairs already on the GPU (`didx`),
// timed with events; for the default variant also with launch and synchronisation.
void BenchPageKernelVariant(const KvLook& l, const PageVariant& v, const uint32_t* didx, cudaEvent_t e0,
                            cudaEvent_t e1) {
  const KvBatch& k = l.k;
  cudaStream_t stream = l.rig.stream;
  const uint64_t extent = (uint64_t{2} * kKvPages) * k.page;
  transport::cuda::PageCopyParams pp{Addr(k.dst_base), Addr(k.src_base), k.page, didx, 0, 0, 0,
                                     extent < (uint64_t{1} << 32), nullptr, 0, 0};
  const int per_sm =
      transport::cuda::PageKernelBlocksPerSm(v.kernel, pp.offsets32, transport::cuda::PageUnitsAligned(pp));
  const auto pl = transport::cuda::PlanPages(k.page, kKvPages, l.rig.prop.multiProcessorCount, std::min(per_sm, 8));
  pp.units = static_cast<uint32_t>(pl.units);
  pp.chunk = pl.chunk;
  pp.chunks_per_page = pl.chunks_per_page;
  const uint32_t grid = v.per_unit ? pp.units : pl.grid;
  double t =
      MedianEventNanos(stream, e0, e1, l.r, [&] { transport::cuda::LaunchPageKernel(pp, grid, stream, v.kernel); });
  l.AddVersusLarge(fmt::format("{} page kernel {}", k.name, v.name), t,
                   fmt::format("{} blocks, {} resident/SM, {}KiB units, events", grid, per_sm, pl.chunk >> 10));
  if (&v != &kPageVariants[0]) return;
  // The default kernel launched and waited for on the host clock, indices already on the
  // GPU: the fixed cost of launch and synchronisation without the upload.
  double ls = MedianNanos(2, l.r, [&] {
    transport::cuda::LaunchPageKernel(pp, grid, stream, v.kernel);
    cudaStreamSynchronize(stream);
  });
  l.AddVersusLarge(fmt::format("{} page kernel+launch+sync", k.name), ls,
                   fmt::format("host clock; {:.1f} us vs {:.1f} us for the large copy", ls / 1000, l.large / 1000));
}

// The page kernel alone (index pairs on the GPU, events), same variants: the GPU time
// without upload, launch submit and synchronisation. false when the pairs found no device
// memory: the batch's other closer looks are skipped then.
bool BenchKvPageKernel(const KvLook& l) {
  const std::vector<uint32_t> pairs = IndexPairs(l.k);
  void* didx = nullptr;
  if (cudaMalloc(&didx, pairs.size() * 4) != cudaSuccess) return false;
  cudaMemcpy(didx, pairs.data(), pairs.size() * 4, cudaMemcpyHostToDevice);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  for (const PageVariant& v : kPageVariants) {
    if (!v.mapped && v.kernel == transport::cuda::PageKernelVariant::kLean) continue;  // same kernel as "lean"
    BenchPageKernelVariant(l, v, static_cast<const uint32_t*>(didx), e0, e1);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(didx);
  return true;
}

// Where the time goes: the transport alone (addresses resolved beforehand).
void BenchKvTransportOnly(const KvLook& l) {
  const KvBatch& k = l.k;
  std::vector<transport::CopyItem> items(kKvPages);
  for (size_t i = 0; i < kKvPages; ++i)
    items[i] = transport::CopyItem{transport::Endpoint{k.raw[i].first},
                                   transport::Endpoint{const_cast<uint8_t*>(k.raw[i].second)}, k.page};
  std::vector<Status> st(kKvPages);
  double tr = MedianNanos(2, l.r, [&] {
    l.rig.cuda->CopyBatch(items, st);
    for (const Status& s : st) l.rig.b.Check(s, "transport batch");
  });
  l.AddVersusLarge(k.name + " transport only", tr, "CudaTransport::CopyBatch");
}

// And the copy kernel alone (descriptors in device memory, timed with events).
void BenchKvCopyKernelOnly(const KvLook& l) {
  const KvBatch& k = l.k;
  const int sms = l.rig.prop.multiProcessorCount;
  std::vector<transport::cuda::DeviceCopyDesc> descs;
  const uint32_t chunk = transport::cuda::ChooseChunk(k.total, kKvPages, sms);
  for (auto& [d, s] : k.raw) transport::cuda::PackDescriptors(Addr(d), Addr(s), k.page, chunk, descs);
  void* ddesc = nullptr;
  if (cudaMalloc(&ddesc, descs.size() * sizeof(descs[0])) != cudaSuccess) return;
  cudaMemcpy(ddesc, descs.data(), descs.size() * sizeof(descs[0]), cudaMemcpyHostToDevice);
  const uint32_t grid = transport::cuda::ChooseGrid(descs.size(), sms, transport::cuda::kCopyKernelBlocksPerSm);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  double t = MedianEventNanos(l.rig.stream, e0, e1, l.r, [&] {
    transport::cuda::LaunchCopyKernel(static_cast<transport::cuda::DeviceCopyDesc*>(ddesc),
                                      static_cast<uint32_t>(descs.size()), grid, l.rig.stream);
  });
  l.AddVersusLarge(k.name + " kernel only", t, fmt::format("{} blocks, events", grid));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(ddesc);
}

// One KV batch through `eng`'s CopyBatch and CopyPages, against one cudaMemcpyAsync per page and
// against one large copy of the same bytes; then, for the engine under test, the closer looks.
void BenchKv(Rig& rig, engine::Engine& eng, const char* group, uint64_t page, bool gd, const std::string& note) {
  Bench& b = rig.b;
  const KvBatch k = MakeKvBatch(rig, page, gd);
  const uint64_t total = k.total;
  const int r = std::max(5, b.reps / 2);
  double per_page = MedianNanos(1, r, [&] {
    for (auto& [d, s] : k.raw) cudaMemcpyAsync(d, s, page, cudaMemcpyDeviceToDevice, rig.stream);
    cudaStreamSynchronize(rig.stream);
  });
  double large = MedianNanos(2, r, [&] { rig.BaselineCopy(k.dst_base, k.src_base, total); });
  double ours = MedianNanos(2, r, [&] {
    for (const Status& s : eng.CopyBatch(k.reqs)) b.Check(s, "kv batch");
  });
  // The same pages through the page-batch API: bases and indices.
  double pages = MedianNanos(2, r, [&] { b.Check(eng.CopyPages(k.dbase, k.sbase, page, k.di, k.si), "copy pages"); });
  b.Add({group, k.name + " vs per-page", total, Gbps(total, ours), Gbps(total, per_page), "GB/s",
         "cudaMemcpyAsync per page", note + ", CopyBatch"});
  b.Add({group, k.name + " vs large copy", total, Gbps(total, ours), Gbps(total, large), "GB/s",
         "one cudaMemcpyAsync", note + ", CopyBatch"});
  b.Add({group, k.name + " pages vs per-page", total, Gbps(total, pages), Gbps(total, per_page), "GB/s",
         "cudaMemcpyAsync per page", "Engine::CopyPages"});
  b.Add({group, k.name + " pages vs large", total, Gbps(total, pages), Gbps(total, large), "GB/s",
         "one cudaMemcpyAsync", "Engine::CopyPages"});
  if (&eng != &rig.engine) return;
  const KvLook look{rig, group, k, r, large};
  if (!BenchKvDeviceIndexed(look)) return;
  BenchKvTransportPages(look);
  if (!BenchKvPageKernel(look)) return;
  BenchKvTransportOnly(look);
  BenchKvCopyKernelOnly(look);
}

// 2. KV batches: 4096 scattered pages, GD->GD and LD->LD, against one cudaMemcpyAsync per page
// and against one large copy of the same bytes.
void BenchKvBatches(Rig& rig) {
  for (uint64_t page : {uint64_t{16} << 10, uint64_t{64} << 10, uint64_t{256} << 10}) {
    // --quick keeps every page size for GD->GD (the KV case) and LD->LD at 16 KiB only.
    BenchKv(rig, rig.engine, "kv", page, true, "copy kernel");
    if (!rig.b.quick || page == (16 << 10)) BenchKv(rig, rig.engine, "kv", page, false, "copy kernel");
  }
}

// 3. Small-copy latency against cudaMemcpyAsync + synchronize.
void BenchLatency(Rig& rig) {
  Bench& b = rig.b;
  for (uint64_t size : {uint64_t{8}, uint64_t{4096}, uint64_t{65536}}) {
    const int r = std::max(50, b.reps * 10);
    struct Case {
      const char* name;
      void* dst;
      const void* src;
    } cases[] = {{"LD->LD", rig.ld2, rig.ld}, {"LH->LD", rig.ld, rig.pinned}, {"LD->LH", rig.pinned, rig.ld}};
    for (const Case& c : cases) {
      double base = MedianNanos(10, r, [&] { rig.BaselineCopy(c.dst, c.src, size); });
      double ours = MedianNanos(10, r, [&] { b.Check(rig.engine.Copy(Addr(c.dst), Addr(c.src), size), c.name); });
      b.Add({"latency", fmt::format("{} {} B", c.name, size), size, ours / 1000, base / 1000, "us",
             "cudaMemcpyAsync+sync", "copy engine"});
    }
  }
}

// 4. The KV batch with the copy kernel held to 16 SMs.
void BenchKvOn16Sms(Rig& rig) {
  engine::EngineOptions go = rig.eo;
  go.cuda_kernel_sms = 16;
  engine::Engine green(go, rig.table, rig.metrics);
  auto* gc = dynamic_cast<transport::cuda::CudaTransport*>(green.FindTransport("cuda"));
  const bool on = gc && gc->green_context_active(0);
  const std::string note = on ? fmt::format("green ctx, {} SMs", gc->kernel_sms(0)) : "green ctx unavailable: all SMs";
  BenchKv(rig, green, "kv-16sm", 16 << 10, true, note);
  if (!rig.b.quick) BenchKv(rig, green, "kv-16sm", 256 << 10, true, note);
}

// The baseline of every two-GPU row: cudaMemcpyPeerAsync of `bytes` between cudaMalloc buffers
// (p1 on GPU 1 -> ld on GPU 0 when `pull`), alternated call by call with `ours`.
struct PeerBaseline {
  Rig& rig;
  void* p1;

  template <typename F>
  std::pair<double, double> Versus(uint64_t bytes, bool pull, int r, F&& ours) const {
    return MedianPairNanos(
        5, r,
        [&] {
          if (pull) cudaMemcpyPeerAsync(rig.ld, 0, p1, 1, bytes, rig.stream);
          else cudaMemcpyPeerAsync(p1, 1, rig.ld, 0, bytes, rig.stream);
          cudaStreamSynchronize(rig.stream);
        },
        ours);
  }
};

// Where an 8 MiB pull's time goes: the same bytes between the same two mappings by a raw
// cudaMemcpyAsync (the driver's cost of VMM memory against cudaMalloc memory), and the
// transport alone (the engine's resolution and pins left out). `base`: the pull's baseline.
void BenchNvlinkPullParts(Rig& rig, const PeerBaseline& peer, const mem::cuda::DeviceSegment& seg, int r,
                          double base) {
  Bench& b = rig.b;
  const uint64_t size = uint64_t{8} << 20;
  const uint64_t g2 = rig.DeviceGva(2), g0 = rig.DeviceGva(0);
  double raw = MedianNanos(5, r, [&] { rig.BaselineCopy(rig.dsegs[0]->data(), seg.data(), size); });
  b.Add({"nvlink", "GD(1)->GD(0) 8 MiB raw on segments", size, Gbps(size, raw), Gbps(size, base), "GB/s",
         "cudaMemcpyPeerAsync", "cudaMemcpyAsync between the two mappings"});
  transport::Endpoint d0{rig.dsegs[0]->data()}, s2{seg.data()};
  double tr = MedianNanos(5, r, [&] { b.Check(rig.cuda->Copy(d0, s2, size), "transport GD(1)->GD(0)"); });
  // Just below the engine's split size (8 MiB): the inline path of Engine::Copy instead
  // of a job, same link.
  auto [base_m, ours_m] = peer.Versus(size - 4096, true, r,
      [&] { b.Check(rig.engine.Copy(g0, g2, size - 4096), "GD(1)->GD(0) 8 MiB - 4 KiB"); });
  b.Add({"nvlink", "GD(1)->GD(0) 8 MiB-4KiB", size - 4096, Gbps(size - 4096, ours_m), Gbps(size - 4096, base_m),
         "GB/s", "cudaMemcpyPeerAsync", "below EngineOptions::split_bytes: inline Engine::Copy"});
  b.Add({"nvlink", "GD(1)->GD(0) 8 MiB transport", size, Gbps(size, tr), Gbps(size, base), "GB/s",
         "cudaMemcpyPeerAsync", "CudaTransport::Copy"});
}

// The push direction split the same way: raw cudaMemcpyAsync between the two mappings
// on a stream of GPU 0 (the GPU weft runs it on), and the transport alone.
void BenchNvlinkPushParts(Rig& rig, const PeerBaseline& peer, const mem::cuda::DeviceSegment& seg, int r) {
  Bench& b = rig.b;
  const uint64_t size = uint64_t{8} << 20;
  auto [back_r, raw] = peer.Versus(size, false, r,
      [&] { rig.BaselineCopy(seg.data(), rig.dsegs[0]->data(), size); });
  b.Add({"nvlink", "GD(0)->GD(1) 8 MiB raw on segments", size, Gbps(size, raw), Gbps(size, back_r), "GB/s",
         "cudaMemcpyPeerAsync", "cudaMemcpyAsync between the two mappings"});
  transport::Endpoint d2{seg.data()}, s0{rig.dsegs[0]->data()};
  auto [back_t, tr] = peer.Versus(size, false, r,
      [&] { b.Check(rig.cuda->Copy(d2, s0, size), "transport GD(0)->GD(1)"); });
  b.Add({"nvlink", "GD(0)->GD(1) 8 MiB transport", size, Gbps(size, tr), Gbps(size, back_t), "GB/s",
         "cudaMemcpyPeerAsync", "CudaTransport::Copy"});
}

// 4096 pages of 64 KiB, GPU 1 -> GPU 0, scattered, through CopyPages (GPU 0's SMs read over
// the link), against one cudaMemcpyPeerAsync of the same bytes.
void BenchNvlinkPages(Rig& rig, const PeerBaseline& peer) {
  Bench& b = rig.b;
  constexpr uint32_t kPages = 4096;
  const uint64_t page = 64 << 10, total = kPages * page;
  const uint64_t g2 = rig.DeviceGva(2), g0 = rig.DeviceGva(0);
  std::vector<uint32_t> di(kPages), si(kPages);
  for (uint32_t i = 0; i < kPages; ++i) di[i] = si[i] = i;
  ShuffleBoth(di, si, rig.state);
  const int r = std::max(5, b.reps / 2);
  double base = MedianNanos(2, r, [&] {
    cudaMemcpyPeerAsync(rig.ld, 0, peer.p1, 1, total, rig.stream);
    cudaStreamSynchronize(rig.stream);
  });
  double ours = MedianNanos(2, r, [&] { b.Check(rig.engine.CopyPages(g0, g2, page, di, si), "pages GPU1->GPU0"); });
  b.Add({"nvlink", "GD(1)->GD(0) pages 4096x64KiB", total, Gbps(total, ours), Gbps(total, base), "GB/s",
         "cudaMemcpyPeerAsync (one copy)", "Engine::CopyPages"});
}

// GD on GPU 1 (`seg`, this process's) to and from GD on GPU 0 over the link, attached as rank 2
// for the duration.
void BenchNvlink(Rig& rig, const PeerBaseline& peer, const mem::cuda::DeviceSegment& seg, bool peer_access) {
  Bench& b = rig.b;
  b.Check(rig.table.Attach({gva::Medium::kDevice, 2, 0}, seg.data(), seg.size(), false, "rank2", [] {},
                           seg.home_device()),
          "attach GPU 1 segment");
  const uint64_t g2 = rig.DeviceGva(2), g0 = rig.DeviceGva(0);
  const char* access = peer_access ? "peer access" : "no peer access";
  for (uint64_t size : {uint64_t{8} << 20, uint64_t{64} << 20, uint64_t{256} << 20}) {
    // 8 MiB calls take ~30 µs: many alternated repetitions, so that 1 µs differences show.
    const int r = size <= (8u << 20) ? 200 : std::max(5, b.reps / 2);
    auto [base, ours] = peer.Versus(size, true, r, [&] { b.Check(rig.engine.Copy(g0, g2, size), "GD(1)->GD(0)"); });
    b.Add({"nvlink", fmt::format("GD(1)->GD(0) {} MiB", size >> 20), size, Gbps(size, ours), Gbps(size, base), "GB/s",
           "cudaMemcpyPeerAsync", access});
    if (size == (uint64_t{8} << 20)) BenchNvlinkPullParts(rig, peer, seg, r, base);
    auto [back, ours_back] = peer.Versus(size, false, r,
        [&] { b.Check(rig.engine.Copy(g2, g0, size), "GD(0)->GD(1)"); });
    b.Add({"nvlink", fmt::format("GD(0)->GD(1) {} MiB", size >> 20), size, Gbps(size, ours_back), Gbps(size, back),
           "GB/s", "cudaMemcpyPeerAsync", access});
    if (size == (uint64_t{8} << 20)) BenchNvlinkPushParts(rig, peer, seg, r);
  }
  BenchNvlinkPages(rig, peer);
  rig.table.Detach({gva::Medium::kDevice, 2, 0}, false);
}

// Two processes: GD on GPU 1 owned by the helper process (`other`: its device segment's fd
// passed over the socketpair and imported here), to and from GD on GPU 0 (this process's own
// segment), against cudaMemcpyPeerAsync between cudaMalloc buffers of this process.
void BenchTwoProcesses(Rig& rig, const PeerBaseline& peer,
                       const Result<std::unique_ptr<mem::cuda::DeviceSegment>>& other) {
  Bench& b = rig.b;
  if (!other.ok()) {
    b.Check(other.status(), "segment of the helper process");
    return;
  }
  b.Check(rig.table.Attach({gva::Medium::kDevice, 3, 0}, (*other)->data(), (*other)->size(), false, "rank3", [] {},
                           (*other)->home_device()),
          "attach the helper's segment");
  const uint64_t g3 = rig.DeviceGva(3), g0 = rig.DeviceGva(0);
  for (uint64_t size : {uint64_t{8} << 20, uint64_t{64} << 20, uint64_t{256} << 20}) {
    const int r = size <= (8u << 20) ? 200 : std::max(5, b.reps / 2);
    auto [base, ours] = peer.Versus(size, true, r,
        [&] { b.Check(rig.engine.Copy(g0, g3, size), "GD(1, other process)->GD(0)"); });
    b.Add({"ipc", fmt::format("GD(1,proc 2)->GD(0) {} MiB", size >> 20), size, Gbps(size, ours), Gbps(size, base),
           "GB/s", "cudaMemcpyPeerAsync", "segment of another process, fd passed"});
    auto [back, ours_back] = peer.Versus(size, false, r,
        [&] { b.Check(rig.engine.Copy(g3, g0, size), "GD(0)->GD(1, other process)"); });
    b.Add({"ipc", fmt::format("GD(0)->GD(1,proc 2) {} MiB", size >> 20), size, Gbps(size, ours_back),
           Gbps(size, back), "GB/s", "cudaMemcpyPeerAsync", "segment of another process, fd passed"});
  }
  rig.table.Detach({gva::Medium::kDevice, 3, 0}, false);
}

// 4b. Two GPUs: GD on GPU 1 (a device segment exported and imported again, as a same-node peer's
// slice is) to GD on GPU 0 over the link, against cudaMemcpyPeerAsync between cudaMalloc
// buffers; a page batch read across the link by GPU 0's page kernel; and the same copies with
// the GPU 1 segment owned by a second process. 1 (after a message) when a CUDA call fails.
int BenchTwoGpus(Rig& rig, PeerHelper& helper) {
  int can = 0;
  cudaDeviceCanAccessPeer(&can, 0, 1);
  const uint64_t psize = 512ull << 20;
  auto seg = mem::cuda::DeviceSegment::Create(1, psize);
  std::unique_ptr<mem::cuda::DeviceSegment> peer_seg;
  if (seg.ok()) {
    auto imp = Reimport(**seg);
    if (imp.ok()) peer_seg = std::move(*imp);
    else rig.b.Check(imp.status(), "import GPU 1 segment");
  } else {
    rig.b.Check(seg.status(), "GPU 1 segment");
  }
  void* p1 = nullptr;
  cudaSetDevice(1);
  BENCH_CUDA(cudaMalloc(&p1, psize));
  BENCH_CUDA(cudaMemset(p1, 3, psize));
  cudaSetDevice(0);
  const PeerBaseline peer{rig, p1};
  if (peer_seg) {
    BENCH_CUDA(cudaMemset(peer_seg->data(), 4, psize));
    BenchNvlink(rig, peer, *peer_seg, can != 0);
  }
  auto other = helper.Segment(1, 256ull << 20, 0);
  BenchTwoProcesses(rig, peer, other);
  cudaFree(p1);
  return 0;
}

// The compute of 4c: kGemms FP32 GEMMs of kDim^3 back to back, between events g0 and g1.
struct Gemm {
  static constexpr int kDim = 4096, kGemms = 3;
  float *ga = nullptr, *gb = nullptr, *gc = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t g0 = nullptr, g1 = nullptr;

  // 1 (after a message) when a buffer or the stream cannot be made.
  int Create() {
    const size_t mat = size_t{kDim} * kDim * sizeof(float);
    BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(&ga), mat));
    BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(&gb), mat));
    BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(&gc), mat));
    BENCH_CUDA(cudaMemset(ga, 0x3c, mat));  // ~0.01 in every element
    BENCH_CUDA(cudaMemset(gb, 0x3c, mat));
    BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cudaEventCreate(&g0);
    cudaEventCreate(&g1);
    return 0;
  }
  void Destroy() {
    cudaEventDestroy(g0);
    cudaEventDestroy(g1);
    cudaStreamDestroy(stream);
    cudaFree(ga);
    cudaFree(gb);
    cudaFree(gc);
  }
  void Launch(cudaStream_t s) {
    cudaEventRecord(g0, s);
    for (int i = 0; i < kGemms; ++i) LaunchBenchGemm(ga, gb, gc, kDim, kDim, kDim, s);
    cudaEventRecord(g1, s);
  }
  // The last launch's time, once it is done.
  double Micros() const {
    float ms = 0;
    cudaEventElapsedTime(&ms, g0, g1);
    return ms * 1000.0;
  }
  // The median of `runs` launches on `s` alone, the first left out (warm-up).
  double MedianAloneMicros(cudaStream_t s, int runs) {
    std::vector<double> t;
    for (int i = 0; i < runs; ++i) {
      Launch(s);
      cudaEventSynchronize(g1);
      if (i >= 1) t.push_back(Micros());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

// The KV page batch copied while the GEMM runs: 4096 x 16 KiB, GD rank 0 -> GD rank 1, scattered.
struct GemmKv {
  static constexpr size_t kPages = 4096;
  uint64_t page = 16 << 10, total = kPages * page;
  std::vector<uint32_t> di, si;
  uint64_t dbase = 0, sbase = 0;
};

GemmKv MakeGemmKv(Rig& rig) {
  GemmKv kv;
  kv.di.resize(GemmKv::kPages);
  kv.si.resize(GemmKv::kPages);
  for (uint32_t i = 0; i < GemmKv::kPages; ++i) kv.di[i] = kv.si[i] = 2 * i;
  ShuffleBoth(kv.di, kv.si, rig.state);
  kv.dbase = rig.DeviceGva(1);
  kv.sbase = rig.DeviceGva(0);
  return kv;
}

// The batch on `eng` with no GEMM: what its bandwidth during the GEMM is held against.
double KvAloneNanos(Rig& rig, engine::Engine& eng, const GemmKv& kv) {
  const int r = std::max(5, rig.b.reps / 2);
  return MedianNanos(2, r, [&] { rig.b.Check(eng.CopyPages(kv.dbase, kv.sbase, kv.page, kv.di, kv.si), "kv alone"); });
}

// The GEMM launched on `s`, and the batch copied by `eng` back to back until the GEMM is done;
// of three such runs, the median (GEMM µs, KV GB/s).
std::pair<double, double> GemmWithKv(Rig& rig, Gemm& g, cudaStream_t s, engine::Engine& eng, const GemmKv& kv) {
  std::vector<std::pair<double, double>> runs;  // (GEMM µs, KV GB/s)
  for (int i = 0; i < 3; ++i) {
    g.Launch(s);
    uint64_t batches = 0;
    const uint64_t t0 = NowNanos();
    while (cudaEventQuery(g.g1) == cudaErrorNotReady) {
      rig.b.Check(eng.CopyPages(kv.dbase, kv.sbase, kv.page, kv.di, kv.si), "kv during gemm");
      ++batches;
    }
    const uint64_t t1 = NowNanos();
    (void)cudaGetLastError();
    runs.emplace_back(g.Micros(), Gbps(batches * kv.total, static_cast<double>(t1 - t0)));
  }
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

// The GEMM on all SMs with `eng`'s KV batches beside it (`who`: the SMs its copy kernel may use).
void BenchGemmBesideKv(Rig& rig, Gemm& g, const GemmKv& kv, engine::Engine& eng, const std::string& who,
                       double gemm_alone) {
  Bench& b = rig.b;
  double kv_alone = KvAloneNanos(rig, eng, kv);
  const auto [gemm_with, kv_with] = GemmWithKv(rig, g, g.stream, eng, kv);
  b.Add({"gemm", fmt::format("GEMM with KV, copy kernel {}", who), 0, gemm_with, gemm_alone, "us",
         "GEMM alone", fmt::format("GEMM {:.2f}x slower", gemm_with / gemm_alone)});
  b.Add({"gemm", fmt::format("KV during GEMM, {}", who), kv.total, kv_with, Gbps(kv.total, kv_alone), "GB/s",
         "same engine, no GEMM", "Engine::CopyPages 4096x16KiB GD->GD, back to back"});
}

// A green context over the SMs of GPU 0 left over when 16 are split off, and a stream on it.
struct RestOfSms {
  CUgreenCtx ctx = nullptr;
  cudaStream_t stream = nullptr;  // none where the driver or the split did not allow it
  int sms = 0;
};

RestOfSms SplitOffRest(bool green_on) {
  RestOfSms split;
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
        d.GreenCtxCreate(&split.ctx, desc, cu, CU_GREEN_CTX_DEFAULT_STREAM) == CUDA_SUCCESS &&
        d.GreenCtxStreamCreate(&cs, split.ctx, CU_STREAM_NON_BLOCKING, 0) == CUDA_SUCCESS) {
      split.stream = reinterpret_cast<cudaStream_t>(cs);
      split.sms = static_cast<int>(rest.sm.smCount);
    }
    (void)cudaGetLastError();
  }
  return split;
}

// The budget as an application would use it: the GEMM on the SMs the copy kernel does not
// have (a green context over the rest of the split), the KV batches on their 16 (`budget`).
void BenchGemmOnRest(Rig& rig, Gemm& g, const GemmKv& kv, engine::Engine& budget, bool green_on,
                     double gemm_alone) {
  Bench& b = rig.b;
  const RestOfSms rest = SplitOffRest(green_on);
  if (!rest.stream) return;
  const double rest_alone = g.MedianAloneMicros(rest.stream, 4);
  b.Add({"gemm", fmt::format("GEMM on the other {} SMs alone", rest.sms), 0, rest_alone, gemm_alone, "us",
         "GEMM alone, all SMs", "green context over the SMs the copy kernel does not use"});
  double kv_alone = KvAloneNanos(rig, budget, kv);
  const auto [gemm_with, kv_with] = GemmWithKv(rig, g, rest.stream, budget, kv);
  b.Add({"gemm", fmt::format("GEMM({} SMs) with KV(16 SMs)", rest.sms), 0, gemm_with, rest_alone, "us",
         "the same GEMM alone", fmt::format("GEMM {:.2f}x slower", gemm_with / rest_alone)});
  b.Add({"gemm", "KV(16 SMs) during GEMM on the rest", kv.total, kv_with, Gbps(kv.total, kv_alone), "GB/s",
         "same engine, no GEMM", "Engine::CopyPages 4096x16KiB GD->GD, back to back"});
  cudaStreamDestroy(rest.stream);
  (*mem::cuda::LoadDriverApi())->GreenCtxDestroy(rest.ctx);
}

// 4c. A compute-bound GEMM alone, then with KV page batches (CopyPages, 4096 x 16 KiB GD->GD)
// copied over and over while it runs: by an engine whose copy kernel may use every SM, and by
// one held to 16 SMs. Reported: the GEMM's slowdown and the KV bandwidth during the GEMM
// against the same engine's KV bandwidth alone. 1 (after a message) when a CUDA call fails.
int BenchGemm(Rig& rig) {
  Gemm g;
  if (int rc = g.Create(); rc != 0) return rc;
  const double gemm_alone = g.MedianAloneMicros(g.stream, 5);
  constexpr int kDim = Gemm::kDim, kGemms = Gemm::kGemms;
  const double tflops = 2.0 * kDim * kDim * double(kDim) * kGemms / (gemm_alone * 1e-6) / 1e12;
  rig.b.Add({"gemm", fmt::format("{}x GEMM {}^3 FP32 alone", kGemms, kDim), 0, gemm_alone, 0, "us", "",
             fmt::format("{:.1f} TFLOP/s", tflops)});

  const GemmKv kv = MakeGemmKv(rig);
  engine::EngineOptions go = rig.eo;
  go.cuda_kernel_sms = 16;
  engine::Engine budget(go, rig.table, rig.metrics);
  auto* bc = dynamic_cast<transport::cuda::CudaTransport*>(budget.FindTransport("cuda"));
  const bool green_on = bc && bc->green_context_active(0);
  BenchGemmBesideKv(rig, g, kv, rig.engine, "all SMs", gemm_alone);
  BenchGemmBesideKv(rig, g, kv, budget,
                    green_on ? fmt::format("{} SMs", bc->kernel_sms(0)) : "16 SMs (no green ctx: all)", gemm_alone);
  BenchGemmOnRest(rig, g, kv, budget, green_on, gemm_alone);
  g.Destroy();
  return 0;
}

// 5. The cost model's inputs, for docs/gpu.md and CostModel's defaults.
void BenchCostModel(Rig& rig) {
  Bench& b = rig.b;
  uint8_t* const ld = static_cast<uint8_t*>(rig.ld);
  uint8_t* const ld2 = static_cast<uint8_t*>(rig.ld2);
  const int r = std::max(100, b.reps * 10);
  double ce_lat = MedianNanos(10, r, [&] { rig.BaselineCopy(ld2, ld, 16); });
  constexpr int kSubmits = 256;
  double submit = MedianNanos(2, 10, [&] {
    for (int i = 0; i < kSubmits; ++i) cudaMemcpyAsync(ld2 + i * 64, ld + i * 64, 16, cudaMemcpyDeviceToDevice, rig.stream);
    cudaStreamSynchronize(rig.stream);
  });
  std::vector<engine::CopyRequest> two = {{Addr(ld2), Addr(ld), 16}, {Addr(ld2 + 4096), Addr(ld + 4096), 16}};
  const auto before = rig.cuda->stats();
  double kernel_lat = MedianNanos(10, r, [&] { (void)rig.engine.CopyBatch(two); });
  const auto after = rig.cuda->stats();
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
    std::vector<transport::CopyItem> items = {{transport::Endpoint{ld2}, transport::Endpoint{ld}, 16},
                                              {transport::Endpoint{ld2 + 4096}, transport::Endpoint{ld + 4096}, 16}};
    std::vector<Status> st(2);
    double k = MedianNanos(10, r, [&] { (*ft)->CopyBatch(items, st); });
    b.Add({"model", "kernel batch latency (2x16 B)", 32, k / 1000, 0, "us", "",
           (*ft)->stats().kernel_launches ? "CostModel::kernel_latency_ns" : "kernel not used?"});
  }
}

void WriteJson(const std::string& path, const cudaDeviceProp& prop, const std::vector<Row>& rows) {
  std::ofstream out(path);
  out << "{\"gpu\": \"" << prop.name << "\", \"sms\": " << prop.multiProcessorCount << ", \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    out << fmt::format("  {{\"group\": \"{}\", \"case\": \"{}\", \"bytes\": {}, \"weft\": {:.4f}, \"baseline\": {:.4f}, "
                       "\"unit\": \"{}\", \"ratio\": {:.4f}, \"baseline_is\": \"{}\", \"note\": \"{}\"}}{}\n",
                       r.group, r.name, r.bytes, r.weft, r.baseline, r.unit, r.ratio(), r.baseline_name, r.note,
                       i + 1 < rows.size() ? "," : "");
  }
  out << "]}\n";
}

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

  Rig rig(b, prop);
  if (int rc = rig.Setup(); rc != 0) return rc;
  fmt::print("\n{:<10} {:<34} {:>10} {:>10} {:<5} {:>6}  {}\n", "group", "case", "weft", "baseline", "unit", "ratio",
             "note");
  BenchPcie(rig);
  rig.state = FreshSeed();
  BenchKvBatches(rig);
  BenchLatency(rig);
  BenchKvOn16Sms(rig);
  if (*n >= 2) {
    if (int rc = BenchTwoGpus(rig, helper); rc != 0) return rc;
  }
  if (int rc = BenchGemm(rig); rc != 0) return rc;
  BenchCostModel(rig);

  if (!json_path.empty()) WriteJson(json_path, prop, b.rows);
  rig.Teardown();
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
