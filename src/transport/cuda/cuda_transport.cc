#include "transport/cuda/cuda_transport.h"

#include "transport/cuda/ipc_regions.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "base/log.h"
#include "mem/cuda/cuda_api.h"
#include "transport/cuda/copy_kernel.h"

namespace weft::transport::cuda {

using mem::cuda::CudaStatus;
using mem::cuda::DriverApi;

namespace {

// What one end of a copy is, as CUDA sees it now (nothing cached: memory can be freed and
// reused between two copies).
struct EndInfo {
  bool device = false;   // HBM (or managed memory)
  int dev = -1;          // its GPU
  bool pinned = false;   // host memory the GPU can DMA (cudaHostRegister / cudaMallocHost)
  bool mapped = false;   // host memory the SMs can address at the same pointer
  // CUDA's process-wide unique id of the allocation (never reused after a free), 0 if unknown:
  // the key under which a reachability answer may be kept across calls.
  uint64_t buffer_id = 0;
};

// True when [p, p+len) starts and ends in memory this process may read: a cheap guard so that a
// freed device pointer (which CUDA then reports as plain host memory) becomes an error value
// instead of a fault in the driver's staging memcpy.
bool Readable(const void* p, uint64_t len) {
  char byte;
  const uint8_t* ends[2] = {static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + (len ? len - 1 : 0)};
  for (const uint8_t* at : ends) {
    iovec local{&byte, 1};
    iovec remote{const_cast<uint8_t*>(at), 1};
    // EFAULT is the answer we look for; where the call itself is refused (seccomp), we cannot
    // tell and let the copy go on.
    if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != 1 && errno == EFAULT) return false;
  }
  return true;
}

struct Lane {
  int device = 0;
  cudaStream_t stream = nullptr;
  bool green = false;
  DeviceCopyDesc* host_desc = nullptr;  // pinned staging for descriptors
  DeviceCopyDesc* dev_desc = nullptr;
  size_t cap = 0;  // descriptors both buffers hold
  uint32_t* host_idx = nullptr;  // pinned staging for page indices (CopyPages): dst list, then src
  uint32_t* dev_idx = nullptr;
  size_t idx_cap = 0;  // indices both buffers hold
};

struct DeviceState {
  int sm_count = 0;
  std::vector<bool> peer;  // peer[j]: this GPU's SMs can reach GPU j's cudaMalloc memory
  std::mutex mu;
  std::vector<Lane*> free_lanes, free_green;
  std::vector<std::unique_ptr<Lane>> lanes;
  bool green_tried = false;
  bool green_broken = false;  // a launch on the green stream failed: run unrestricted
  CUgreenCtx green = nullptr;
  int green_sms = 0;
  // Resident blocks per SM of each page-kernel instantiation [variant][offsets32][aligned]
  // (asked once at Create: the persistent grid must fit in one wave).
  int page_blocks[2][2][2] = {};
};

}  // namespace

struct CudaTransport::Impl {
  CudaOptions options;
  std::shared_ptr<const DriverApi> api;
  std::unique_ptr<IpcRegions> ipc;  // with options.node_id
  int devices = 0;
  std::unique_ptr<DeviceState[]> dev;
  // In the engine's metrics registry when one is given (CudaOptions::metrics), else kept here.
  Counter own_counters[4];
  Counter* ce_copies = &own_counters[0];
  Counter* kernel_launches = &own_counters[1];
  Counter* kernel_descs = &own_counters[2];
  Counter* kernel_pages = &own_counters[3];
  mutable std::atomic<bool> logged_staged{false}, logged_pageable{false}, logged_green{false};
  std::mutex reg_mu;
  std::unordered_map<void*, uint64_t> registered;  // host ranges this transport pinned
  mutable std::mutex reach_mu;
  mutable std::unordered_map<uint64_t, bool> reach;  // (buffer id, runner GPU) -> SMs may access

  ~Impl() {
    mem::cuda::DeviceGuard guard;
    // Host ranges pinned through RegisterHost are ours to unpin: their owners may unmap them
    // after the engine is gone (the pool does), which must not leave pinned pages behind.
    for (auto& [ptr, len] : registered) cudaHostUnregister(ptr);
    (void)cudaGetLastError();
    for (int d = 0; d < devices; ++d) {
      cudaSetDevice(d);
      for (auto& l : dev[d].lanes) {
        cudaStreamSynchronize(l->stream);
        cudaStreamDestroy(l->stream);
        if (l->host_desc) cudaFreeHost(l->host_desc);
        if (l->dev_desc) cudaFree(l->dev_desc);
        if (l->host_idx) cudaFreeHost(l->host_idx);
        if (l->dev_idx) cudaFree(l->dev_idx);
      }
      if (dev[d].green) api->GreenCtxDestroy(dev[d].green);
    }
    std::lock_guard lock(reg_mu);
    for (auto& [p, n] : registered) cudaHostUnregister(p);
    (void)cudaGetLastError();
  }

  // What CUDA knows about p, in one driver call: kind, device, and the allocation's range.
  struct PtrInfo {
    EndInfo info;
    uint64_t base = 0, end = 0;  // the allocation (or registration) around p; empty if unknown
  };
  PtrInfo Query(const uint8_t* p) const {
    PtrInfo out;
    unsigned int type = 0, managed = 0;
    int ordinal = -1;
    CUdeviceptr start = 0;
    size_t size = 0;
    void* devptr = nullptr;
    unsigned long long buffer_id = 0;
    CUpointer_attribute attrs[] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                   CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, CU_POINTER_ATTRIBUTE_RANGE_SIZE,
                                   CU_POINTER_ATTRIBUTE_IS_MANAGED, CU_POINTER_ATTRIBUTE_DEVICE_POINTER,
                                   CU_POINTER_ATTRIBUTE_BUFFER_ID};
    void* data[] = {&type, &ordinal, &start, &size, &managed, &devptr, &buffer_id};
    // Memory CUDA does not know gets default (null) values and CUDA_SUCCESS. Should a driver
    // refuse the buffer id for some memory, ask again without it (no reachability cache then).
    const auto at = reinterpret_cast<CUdeviceptr>(p);
    if (api->PointerGetAttributes(7, attrs, data, at) != CUDA_SUCCESS) {
      (void)cudaGetLastError();
      buffer_id = 0;
      if (api->PointerGetAttributes(6, attrs, data, at) != CUDA_SUCCESS) {
        (void)cudaGetLastError();
        return out;
      }
    }
    out.info.buffer_id = buffer_id;
    if (type == CU_MEMORYTYPE_DEVICE || type == CU_MEMORYTYPE_UNIFIED || (managed & 0xff)) {
      out.info.device = true;
      out.info.dev = ordinal;
    } else if (type == CU_MEMORYTYPE_HOST) {
      out.info.pinned = true;
      out.info.mapped = devptr == p;
    }
    if (size && (out.info.device || out.info.pinned)) {
      out.base = static_cast<uint64_t>(start);
      out.end = out.base + size;
    }
    return out;
  }

  // Device ends of plain pointers must lie within their allocation. VMM mappings (device
  // segments, torch's expandable segments) may join several allocations into one range, so for
  // them the range says nothing and the check is skipped.
  Status CheckBounds(const PtrInfo& q, const uint8_t* p, uint64_t len, const char* which) const {
    const uint64_t at = reinterpret_cast<uint64_t>(p);
    if (!q.info.device || q.end <= q.base || len <= q.end - at) return OkStatus();
    CUmemGenericAllocationHandle h = 0;
    if (api->MemRetainAllocationHandle(&h, const_cast<uint8_t*>(p)) == CUDA_SUCCESS) {
      api->MemRelease(h);
      return OkStatus();
    }
    (void)cudaGetLastError();
    return Error(Code::kOutOfRange, "{} {:#x} + {} bytes runs past its device allocation ({:#x}, {} bytes)", which, at,
                 len, q.base, q.end - q.base);
  }

  static bool MemoHit(const ClassifyMemo* m, uint64_t addr, uint64_t len) {
    return m && m->end > m->base && addr >= m->base && addr < m->end && len <= m->end - addr;
  }

  static EndInfo FromClass(const LocalClass& c) {
    EndInfo e;
    e.device = c.kind == EndKind::kLD;
    e.dev = c.device;
    e.pinned = c.host == kHostPinned || c.host == kHostPinnedMapped;
    e.mapped = c.host == kHostPinnedMapped;
    return e;
  }

  static LocalClass ToClass(const EndInfo& e) {
    if (e.device) return LocalClass{EndKind::kLD, e.dev, kHostUnknown};
    return LocalClass{EndKind::kLH, -1, e.mapped ? kHostPinnedMapped : e.pinned ? kHostPinned : kHostPageable};
  }

  // An end of a copy: what the engine learned in this call if it did, else what the batch's
  // memo holds, else one query. Pageable host memory is probed (a freed device pointer looks
  // like it to CUDA).
  Result<EndInfo> Inspect(const Endpoint& ep, uint64_t len, const char* which, ClassifyMemo* memo) const {
    EndInfo info;
    const uint64_t addr = reinterpret_cast<uint64_t>(ep.mapped);
    if (ep.device >= 0) {
      info.device = true;
      info.dev = ep.device;
      // A pool slice's mapping id keys reachability answers like CUDA's buffer ids do, in a
      // range of its own (CUDA's ids are a small counter).
      if (ep.mapping_id) info.buffer_id = (1ull << 56) | (ep.mapping_id & ((1ull << 56) - 1));
      return info;
    }
    if (ep.host != kHostUnknown) {
      info = FromClass(LocalClass{EndKind::kLH, -1, ep.host});
    } else if (MemoHit(memo, addr, len)) {
      return FromClass(memo->cls);
    } else {
      PtrInfo q = Query(ep.mapped);
      if (ep.gva == 0) WEFT_RETURN_IF_ERROR(CheckBounds(q, ep.mapped, len, which));
      if (memo && q.end > q.base) *memo = ClassifyMemo{q.base, q.end, ToClass(q.info)};
      info = q.info;
    }
    if (!info.device && !info.pinned && !Readable(ep.mapped, len))
      return Error(Code::kNotRegistered,
                   "{} {:#x} is neither host memory of this process nor device memory CUDA knows here "
                   "(freed device memory, or a pointer of another process?)",
                   which, addr);
    return info;
  }

  // The link and the GPU that runs a copy; kernel_ok when that GPU's SMs can reach both ends.
  // memos: two (dst, src) for the duration of one batch, or null.
  Result<PlanItem> Classify(const CopyItem& it, ClassifyMemo* memos = nullptr) const {
    return Classify(it.dst, it.src, it.len, it.len, memos);
  }
  // The same with a length per end (a page batch spans different extents at each end).
  Result<PlanItem> Classify(const Endpoint& dst, const Endpoint& src, uint64_t dst_len, uint64_t src_len,
                            ClassifyMemo* memos = nullptr) const {
    const CopyItem it{dst, src, std::max(dst_len, src_len)};
    WEFT_ASSIGN_OR_RETURN(EndInfo s, Inspect(src, src_len, "src", memos ? &memos[1] : nullptr));
    WEFT_ASSIGN_OR_RETURN(EndInfo d, Inspect(dst, dst_len, "dst", memos ? &memos[0] : nullptr));
    PlanItem p{Link::kSameDevice, -1, false, it.len};
    if (s.device && d.device) {
      p.device = d.dev;
      if (s.dev == d.dev) {
        p.link = Link::kSameDevice;
        p.kernel_ok = true;
      } else if (CanReach(d.dev, s.dev, it.src.mapped, s.buffer_id)) {
        p.link = Link::kPeerDevice;
        p.kernel_ok = true;
      } else if (CanReach(s.dev, d.dev, it.dst.mapped, d.buffer_id)) {
        // The destination's GPU may not touch the source (a device segment of this process grants
        // access to its own GPU only), but the source's GPU may write the destination (a peer's
        // imported segment grants this GPU access): push from there.
        p.device = s.dev;
        p.link = Link::kPeerDevice;
        p.kernel_ok = true;
      } else if (dev[d.dev].peer[s.dev]) {
        p.link = Link::kPeerDevice;  // the copy engine reaches it; the SMs may not (VMM access)
      } else {
        p.link = Link::kStaged;
        if (!logged_staged.exchange(true))
          WEFT_LOG_WARN("GPUs {} and {} have no peer access: copies between them stage through host memory", s.dev,
                        d.dev);
      }
    } else if (d.device) {
      p.device = d.dev;
      p.link = s.pinned ? Link::kHostToDevice : Link::kStaged;
      p.kernel_ok = s.mapped;
    } else if (s.device) {
      p.device = s.dev;
      p.link = d.pinned ? Link::kDeviceToHost : Link::kStaged;
      p.kernel_ok = d.mapped;
    } else {
      return Error(Code::kInvalidArgument, "neither end is device memory: the cuda path does not copy host to host");
    }
    if (p.link == Link::kStaged && !s.device != !d.device && !logged_pageable.exchange(true))
      WEFT_LOG_WARN("copying between a GPU and host memory that is not registered with CUDA: the driver stages it "
                    "(about 5x slower); register pool slices with Engine::RegisterHostMemory");
    return p;
  }

  // Whether GPU `runner`'s SMs may access device memory at p that lives on another GPU.
  // buffer_id: CUDA's unique id of p's allocation (0: unknown), under which the answer is kept.
  bool CanReach(int runner, int home, const uint8_t* p, uint64_t buffer_id) const {
    // The answer for one allocation is kept under its buffer id: CUDA never reuses an id within
    // a process, so a freed allocation's entry can never answer for memory allocated later at
    // the same address (nothing is kept by address; docs/gpu.md). What it assumes: the access
    // list of a VMM mapping does not change after weft first asks (weft's device segments set it
    // once, when they are mapped). This saves three driver calls per copy between GPUs.
    const uint64_t key = buffer_id ? buffer_id * 64 + static_cast<uint64_t>(runner & 63) : 0;
    if (key) {
      std::lock_guard lock(reach_mu);
      if (auto it = reach.find(key); it != reach.end()) return it->second;
    }
    const bool ok = AskReach(runner, home, p);
    if (key) {
      std::lock_guard lock(reach_mu);
      if (reach.size() >= 4096) reach.clear();  // allocations come and go: bound the memory
      reach.emplace(key, ok);
    }
    return ok;
  }

  bool AskReach(int runner, int home, const uint8_t* p) const {
    CUmemLocation loc{};
    loc.type = CU_MEM_LOCATION_TYPE_DEVICE;
    loc.id = runner;
    unsigned long long flags = 0;
    // VMM memory (device segments) carries its own access list; cudaMalloc memory follows peer
    // access, which Create() enabled where the hardware allows. cuMemGetAccess answers for
    // cudaMalloc memory too (seen on 2 × H200, driver 580: not read-write, though peer access
    // was on), so only memory that has a VMM allocation handle is asked.
    CUmemGenericAllocationHandle h = 0;
    if (api->MemRetainAllocationHandle(&h, const_cast<uint8_t*>(p)) != CUDA_SUCCESS) {
      (void)cudaGetLastError();
      return dev[runner].peer[home];
    }
    api->MemRelease(h);
    if (api->MemGetAccess(&flags, &loc, reinterpret_cast<CUdeviceptr>(p)) == CUDA_SUCCESS)
      return flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    (void)cudaGetLastError();
    return dev[runner].peer[home];
  }

  Result<Lane*> Acquire(int device, bool want_green) {
    DeviceState& ds = dev[device];
    {
      std::lock_guard lock(ds.mu);
      auto& pool = want_green ? ds.free_green : ds.free_lanes;
      if (!pool.empty()) {
        Lane* l = pool.back();
        pool.pop_back();
        return l;
      }
    }
    auto lane = std::make_unique<Lane>();
    lane->device = device;
    lane->green = want_green;
    if (want_green) {
      CUstream s = nullptr;
      WEFT_RETURN_IF_ERROR(api->Check(api->GreenCtxStreamCreate(&s, ds.green, CU_STREAM_NON_BLOCKING, 0),
                                      "cuGreenCtxStreamCreate"));
      lane->stream = reinterpret_cast<cudaStream_t>(s);
    } else {
      WEFT_RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&lane->stream, cudaStreamNonBlocking), "cudaStreamCreate"));
    }
    std::lock_guard lock(ds.mu);
    ds.lanes.push_back(std::move(lane));
    return ds.lanes.back().get();
  }

  void Release(Lane* l) {
    DeviceState& ds = dev[l->device];
    std::lock_guard lock(ds.mu);
    (l->green ? ds.free_green : ds.free_lanes).push_back(l);
  }

  // Index staging of a lane for `n` indices (both lists of a page batch), grown by doubling.
  Status ReserveIndices(Lane* l, size_t n) {
    if (n <= l->idx_cap) return OkStatus();
    size_t cap = std::max<size_t>(8192, l->idx_cap);
    while (cap < n) cap *= 2;
    if (l->host_idx) cudaFreeHost(l->host_idx);
    if (l->dev_idx) cudaFree(l->dev_idx);
    l->host_idx = nullptr;
    l->dev_idx = nullptr;
    l->idx_cap = 0;
    WEFT_RETURN_IF_ERROR(CudaStatus(cudaMallocHost(reinterpret_cast<void**>(&l->host_idx), cap * sizeof(uint32_t)),
                                    "cudaMallocHost (page indices)"));
    Status s = CudaStatus(cudaMalloc(reinterpret_cast<void**>(&l->dev_idx), cap * sizeof(uint32_t)), "cudaMalloc (page indices)");
    if (!s.ok()) {
      cudaFreeHost(l->host_idx);
      l->host_idx = nullptr;
      return s;
    }
    l->idx_cap = cap;
    return OkStatus();
  }

  Status Reserve(Lane* l, size_t descs) {
    if (descs <= l->cap) return OkStatus();
    size_t cap = std::max<size_t>(4096, l->cap);
    while (cap < descs) cap *= 2;
    if (l->host_desc) cudaFreeHost(l->host_desc);
    if (l->dev_desc) cudaFree(l->dev_desc);
    l->host_desc = nullptr;
    l->dev_desc = nullptr;
    l->cap = 0;
    WEFT_RETURN_IF_ERROR(CudaStatus(cudaMallocHost(reinterpret_cast<void**>(&l->host_desc), cap * sizeof(DeviceCopyDesc)), "cudaMallocHost (copy descriptors)"));
    Status s = CudaStatus(cudaMalloc(reinterpret_cast<void**>(&l->dev_desc), cap * sizeof(DeviceCopyDesc)), "cudaMalloc (copy descriptors)");
    if (!s.ok()) {
      cudaFreeHost(l->host_desc);
      l->host_desc = nullptr;
      return s;
    }
    l->cap = cap;
    return OkStatus();
  }

  // Sets up the green context of a device the first time a kernel runs there with a budget.
  void MaybeGreen(int device) {
    DeviceState& ds = dev[device];
    std::lock_guard lock(ds.mu);
    if (ds.green_tried) return;
    ds.green_tried = true;
    if (options.kernel_sms == 0) return;
    auto fail = [&](const Status& s) {
      if (!logged_green.exchange(true))
        WEFT_LOG_WARN("no SM budget for the copy kernel ({}): it runs on all SMs", s.ToString());
    };
    if (!api->has_green_contexts()) return fail(Error(Code::kNotSupported, "the driver has no green contexts"));
    CUdevice cu = 0;
    Status s = api->Check(api->DeviceGet(&cu, device), "cuDeviceGet");
    CUdevResource all{}, part{}, rest{};
    unsigned groups = 1;
    if (s.ok()) s = api->Check(api->DeviceGetDevResource(cu, &all, CU_DEV_RESOURCE_TYPE_SM), "cuDeviceGetDevResource");
    if (s.ok())
      s = api->Check(api->DevSmResourceSplitByCount(&part, &groups, &all, &rest, 0, options.kernel_sms),
                     "cuDevSmResourceSplitByCount");
    if (s.ok() && groups < 1) s = Error(Code::kNotSupported, "the SM split gave no group");
    CUdevResourceDesc desc = nullptr;
    if (s.ok()) s = api->Check(api->DevResourceGenerateDesc(&desc, &part, 1), "cuDevResourceGenerateDesc");
    CUgreenCtx g = nullptr;
    if (s.ok()) s = api->Check(api->GreenCtxCreate(&g, desc, cu, CU_GREEN_CTX_DEFAULT_STREAM), "cuGreenCtxCreate");
    if (!s.ok()) return fail(s);
    ds.green = g;
    ds.green_sms = static_cast<int>(part.sm.smCount);
    WEFT_LOG_INFO("copy kernel on GPU {} held to {} SMs by a green context", device, ds.green_sms);
  }

  // Fills results for `idx` with s (only where still OK).
  static void FailAll(std::span<Status> results, const std::vector<uint32_t>& idx, const Status& s) {
    for (uint32_t i : idx)
      if (results[i].ok()) results[i] = s;
  }

  // Packs a kernel group into `descs` (cleared first); returns the grid.
  uint32_t Pack(const KernelGroup& g, std::span<const CopyItem> items, int sms, std::vector<DeviceCopyDesc>& descs) {
    descs.clear();
    const uint32_t chunk = ChooseChunk(g.bytes, g.items.size(), sms);
    for (uint32_t i : g.items)
      PackDescriptors(reinterpret_cast<uint64_t>(items[i].dst.mapped), reinterpret_cast<uint64_t>(items[i].src.mapped),
                      items[i].len, chunk, descs);
    return ChooseGrid(descs.size(), sms, kCopyKernelBlocksPerSm);
  }
};

CudaTransport::CudaTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaTransport::~CudaTransport() = default;

uint32_t CudaTransport::capabilities() const {
  return kCapHostMemory | kCapDeviceMemory | kCapSameProcess | kCapSameNode | kCapPageBatches | kCapStreamOrdering |
         (impl_->ipc ? kCapRegions : 0);
}

Result<std::string> CudaTransport::EndpointBlob() const {
  if (!impl_->ipc) return Error(Code::kNotSupported, "path cuda: no node identity given");
  return impl_->ipc->EndpointBlob();
}

Result<std::string> CudaTransport::ExportRegion(const LocalRegion& region) {
  if (!impl_->ipc) return Error(Code::kNotSupported, "path cuda: no node identity given");
  return impl_->ipc->Export(region);
}

void CudaTransport::WithdrawRegion(uint64_t region_id) {
  if (impl_->ipc) impl_->ipc->Withdraw(region_id);
}

Result<std::unique_ptr<PeerLink>> CudaTransport::Connect(std::string_view endpoint_blob) {
  if (!impl_->ipc) return Error(Code::kNotSupported, "path cuda: no node identity given");
  return impl_->ipc->Connect(endpoint_blob);
}

Result<std::unique_ptr<ImportedRegion>> CudaTransport::ImportRegion(const PeerLink& peer, uint64_t base, uint64_t len,
                                                                    std::string_view blob) {
  if (!impl_->ipc) return Error(Code::kNotSupported, "path cuda: no node identity given");
  return impl_->ipc->Import(peer, base, len, blob);
}

double CudaTransport::RemoteCostNanos(uint64_t bytes) const {
  // A copy-engine copy between GPUs of a node: microseconds to start, tens of GB/s.
  return 5000.0 + static_cast<double>(bytes) / 50.0;
}

std::string_view CudaTransport::ExplainRemote() const {
  return "the peer's device buffer on this node, opened through CUDA IPC: the GPU copies it (NVLink or PCIe "
         "peer-to-peer; host ends by DMA)";
}

Result<std::unique_ptr<CudaTransport>> CudaTransport::Create(const CudaOptions& options) {
  WEFT_ASSIGN_OR_RETURN(int n, mem::cuda::Probe());
  WEFT_ASSIGN_OR_RETURN(auto api, mem::cuda::LoadDriverApi());
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->api = std::move(api);
  if (!options.node_id.empty()) impl->ipc = std::make_unique<IpcRegions>(impl->api, options.node_id);
  impl->devices = n;
  impl->dev = std::make_unique<DeviceState[]>(n);
  if (options.metrics) {
    MetricsRegistry& m = *options.metrics;
    impl->ce_copies = m.counter("weft_cuda_copy_engine_copies_total", "Copies handed to a GPU copy engine (cudaMemcpyAsync)");
    impl->kernel_launches = m.counter("weft_cuda_kernel_launches_total", "Launches of the batched copy and page kernels");
    impl->kernel_descs = m.counter("weft_cuda_kernel_descriptors_total", "Copy descriptors the batched copy kernel moved");
    impl->kernel_pages = m.counter("weft_cuda_kernel_pages_total", "Pages the page kernel moved");
  }
  mem::cuda::DeviceGuard guard;
  for (int d = 0; d < n; ++d) {
    DeviceState& ds = impl->dev[d];
    WEFT_RETURN_IF_ERROR(CudaStatus(cudaDeviceGetAttribute(&ds.sm_count, cudaDevAttrMultiProcessorCount, d),
                                    "cudaDeviceGetAttribute"));
    ds.peer.assign(n, false);
    ds.peer[d] = true;
    WEFT_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(d), "cudaSetDevice"));
    for (int j = 0; j < n; ++j) {
      if (j == d) continue;
      int can = 0;
      if (cudaDeviceCanAccessPeer(&can, d, j) != cudaSuccess || !can) continue;
      cudaError_t e = cudaDeviceEnablePeerAccess(j, 0);
      ds.peer[j] = e == cudaSuccess || e == cudaErrorPeerAccessAlreadyEnabled;
    }
    (void)cudaGetLastError();  // AlreadyEnabled is not an error worth keeping
    for (int v = 0; v < 2; ++v)
      for (int o = 0; o < 2; ++o)
        for (int a = 0; a < 2; ++a) {
          const int b = PageKernelBlocksPerSm(static_cast<PageKernelVariant>(v), o, a);
          ds.page_blocks[v][o][a] = b > 0 ? std::min(b, kCopyKernelBlocksPerSm) : kCopyKernelBlocksPerSm;
        }
  }
  WEFT_LOG_INFO("cuda path: {} GPU(s), copy kernel SM budget {}", n, options.kernel_sms);
  return std::unique_ptr<CudaTransport>(new CudaTransport(std::move(impl)));
}

bool CudaTransport::Serves(const RouteKey& key) const {
  return (IsDevice(key.src) || IsDevice(key.dst)) && key.locality != Locality::kRemoteNode;
}

double CudaTransport::CostNanos(const RouteKey& key, uint64_t bytes) const {
  Link link = IsDevice(key.src) && IsDevice(key.dst) ? Link::kSameDevice
              : IsDevice(key.dst)                    ? Link::kHostToDevice
                                                     : Link::kDeviceToHost;
  return impl_->options.model.CopyEngineNanos(link, 1, bytes);
}

std::string_view CudaTransport::Explain(const RouteKey& key) const {
  if (IsDevice(key.src) && IsDevice(key.dst))
    return "both ends are GPU memory on this node: CUDA copy engine, or one copy-kernel launch for a batch of small pieces";
  return "one end is GPU memory on this node: CUDA copy engine (DMA; the host end should be registered with CUDA)";
}

std::optional<Result<LocalClass>> CudaTransport::ClassifyLocal(uint64_t addr, uint64_t len, ClassifyMemo* memo) const {
  if (Impl::MemoHit(memo, addr, len)) return Result<LocalClass>(memo->cls);
  const auto* p = reinterpret_cast<const uint8_t*>(addr);
  Impl::PtrInfo q = impl_->Query(p);
  if (Status s = impl_->CheckBounds(q, p, len, "pointer"); !s.ok()) return Result<LocalClass>(s);
  LocalClass c = Impl::ToClass(q.info);
  if (memo && q.end > q.base) *memo = ClassifyMemo{q.base, q.end, c};
  return Result<LocalClass>(c);
}

Status CudaTransport::Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) {
  if (len == 0) return OkStatus();
  WEFT_ASSIGN_OR_RETURN(PlanItem p, impl_->Classify(CopyItem{dst, src, len}));
  mem::cuda::DeviceGuard guard;
  WEFT_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(p.device), "cudaSetDevice"));
  WEFT_ASSIGN_OR_RETURN(Lane * lane, impl_->Acquire(p.device, false));
  Status s = CudaStatus(cudaMemcpyAsync(dst.mapped, src.mapped, len, cudaMemcpyDefault, lane->stream), "cudaMemcpyAsync");
  impl_->ce_copies->Add(1);
  Status sync = CudaStatus(cudaStreamSynchronize(lane->stream), "cudaStreamSynchronize");
  impl_->Release(lane);
  return s.ok() ? sync : s;
}

void CudaTransport::CopyBatch(std::span<const CopyItem> items, std::span<Status> results) {
  Impl& im = *impl_;
  mem::cuda::DeviceGuard guard;
  std::vector<PlanItem> plan_items(items.size());
  ClassifyMemo memos[2];
  for (size_t i = 0; i < items.size(); ++i) {
    results[i] = OkStatus();
    if (items[i].len == 0) {
      plan_items[i] = PlanItem{Link::kSameDevice, -1, false, 0};
      continue;
    }
    auto p = im.Classify(items[i], memos);
    if (!p.ok()) {
      results[i] = p.status();
      plan_items[i] = PlanItem{Link::kSameDevice, -1, false, 0};
    } else {
      plan_items[i] = *p;
    }
  }
  BatchPlan plan = PlanBatch(plan_items, im.options.model);

  struct Used {
    Lane* lane;
    std::vector<uint32_t> items;
  };
  std::vector<Used> used;
  auto fail_used = [&](Used& u, const Status& s) { Impl::FailAll(results, u.items, s); };

  // Kernel groups first: their launches overlap the copy-engine submissions that follow.
  std::vector<DeviceCopyDesc> descs;
  for (const KernelGroup& g : plan.kernel) {
    Status s = CudaStatus(cudaSetDevice(g.device), "cudaSetDevice");
    if (!s.ok()) {
      Impl::FailAll(results, g.items, s);
      continue;
    }
    im.MaybeGreen(g.device);
    DeviceState& ds = im.dev[g.device];
    bool green = ds.green != nullptr && !ds.green_broken;
    for (;;) {
      const int sms = green ? ds.green_sms : ds.sm_count;
      auto lane = im.Acquire(g.device, green);
      if (!lane.ok()) {
        Impl::FailAll(results, g.items, lane.status());
        break;
      }
      const uint32_t grid = im.Pack(g, items, sms, descs);
      s = im.Reserve(*lane, descs.size());
      if (s.ok()) {
        std::memcpy((*lane)->host_desc, descs.data(), descs.size() * sizeof(DeviceCopyDesc));
        s = CudaStatus(cudaMemcpyAsync((*lane)->dev_desc, (*lane)->host_desc, descs.size() * sizeof(DeviceCopyDesc),
                                       cudaMemcpyHostToDevice, (*lane)->stream),
                       "cudaMemcpyAsync (copy descriptors)");
      }
      if (s.ok())
        s = CudaStatus(LaunchCopyKernel((*lane)->dev_desc, static_cast<uint32_t>(descs.size()), grid, (*lane)->stream),
                       "copy kernel launch");
      if (!s.ok() && green) {
        // The descriptors were uploaded in stream order; wait for them before the lane is reused.
        cudaStreamSynchronize((*lane)->stream);
        (void)cudaGetLastError();
        im.Release(*lane);
        ds.green_broken = true;
        if (!im.logged_green.exchange(true))
          WEFT_LOG_WARN("the copy kernel cannot run in its green context ({}): it runs on all SMs", s.ToString());
        green = false;
        continue;
      }
      used.push_back(Used{*lane, g.items});
      if (!s.ok()) {
        fail_used(used.back(), s);
        break;
      }
      im.kernel_launches->Add(1);
      im.kernel_descs->Add(descs.size());
      break;
    }
  }

  // Copy-engine items: spread over a few streams per GPU so several DMAs are in flight.
  std::unordered_map<int, std::vector<size_t>> lanes_of;  // device -> indices into `used`
  std::unordered_map<int, size_t> count_of;
  const size_t per_dev = std::max<uint32_t>(1, im.options.streams_per_batch);
  for (uint32_t i : plan.copy_engine) {
    if (!results[i].ok() || plan_items[i].device < 0) continue;
    const int d = plan_items[i].device;
    auto& mine = lanes_of[d];
    const size_t slot = count_of[d]++ % per_dev;
    Status s = CudaStatus(cudaSetDevice(d), "cudaSetDevice");
    if (s.ok() && slot >= mine.size()) {
      auto lane = im.Acquire(d, false);
      if (lane.ok()) {
        used.push_back(Used{*lane, {}});
        mine.push_back(used.size() - 1);
      } else if (mine.empty()) {
        s = lane.status();
      }
    }
    if (!s.ok()) {
      results[i] = s;
      continue;
    }
    Used& u = used[mine[slot % mine.size()]];
    u.items.push_back(i);
    results[i] = CudaStatus(cudaMemcpyAsync(items[i].dst.mapped, items[i].src.mapped, items[i].len, cudaMemcpyDefault,
                                            u.lane->stream),
                            "cudaMemcpyAsync");
    im.ce_copies->Add(1);
  }

  for (Used& u : used) {
    cudaSetDevice(u.lane->device);
    Status s = CudaStatus(cudaStreamSynchronize(u.lane->stream), "cudaStreamSynchronize");
    if (!s.ok()) fail_used(u, s);
    im.Release(u.lane);
  }
}

namespace {

// Runs `release` once `stream` has passed the work enqueued so far.
Status ReleaseAfter(cudaStream_t stream, std::function<void()> release) {
  if (!release) return OkStatus();
  auto* fn = new std::function<void()>(std::move(release));
  cudaError_t e = cudaLaunchHostFunc(
      stream,
      [](void* p) {
        auto* f = static_cast<std::function<void()>*>(p);
        (*f)();
        delete f;
      },
      fn);
  if (e != cudaSuccess) {
    // Wait here instead, so the pins are not dropped under running copies.
    cudaStreamSynchronize(stream);
    (*fn)();
    delete fn;
    return CudaStatus(e, "cudaLaunchHostFunc");
  }
  return OkStatus();
}

}  // namespace

Status CudaTransport::Enqueue(std::span<const CopyItem> items, void* stream_ptr, std::function<void()> release) {
  Impl& im = *impl_;
  mem::cuda::DeviceGuard guard;
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  int sdev = -1;
  if (stream == nullptr)
    return Error(Code::kInvalidArgument, "no stream given: pass a cudaStream_t, or copy without one");
  WEFT_RETURN_IF_ERROR(CudaStatus(cudaStreamGetDevice(stream, &sdev), "cudaStreamGetDevice (is this a live stream of this process?)"));
  std::vector<PlanItem> plan_items(items.size());
  ClassifyMemo memos[2];
  for (size_t i = 0; i < items.size(); ++i) {
    WEFT_ASSIGN_OR_RETURN(plan_items[i], im.Classify(items[i], memos));
    if (plan_items[i].device != sdev)
      return Error(Code::kInvalidArgument, "copy {}: the stream belongs to GPU {} but the copy runs on GPU {}; pass a "
                   "stream of GPU {}", i, sdev, plan_items[i].device, plan_items[i].device);
  }
  WEFT_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(sdev), "cudaSetDevice"));
  BatchPlan plan = PlanBatch(plan_items, im.options.model);
  std::vector<DeviceCopyDesc> descs;
  for (const KernelGroup& g : plan.kernel) {
    const uint32_t grid = im.Pack(g, items, im.dev[sdev].sm_count, descs);
    void* buf = nullptr;
    const size_t bytes = descs.size() * sizeof(DeviceCopyDesc);
    WEFT_RETURN_IF_ERROR(CudaStatus(cudaMallocAsync(&buf, bytes, stream), "cudaMallocAsync (copy descriptors)"));
    // From pageable memory the runtime has consumed `descs` when this returns.
    Status s = CudaStatus(cudaMemcpyAsync(buf, descs.data(), bytes, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
    if (s.ok())
      s = CudaStatus(LaunchCopyKernel(static_cast<DeviceCopyDesc*>(buf), static_cast<uint32_t>(descs.size()), grid, stream),
                     "copy kernel launch");
    cudaFreeAsync(buf, stream);
    WEFT_RETURN_IF_ERROR(s);
    im.kernel_launches->Add(1);
    im.kernel_descs->Add(descs.size());
  }
  for (uint32_t i : plan.copy_engine) {
    WEFT_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(items[i].dst.mapped, items[i].src.mapped, items[i].len,
                                                    cudaMemcpyDefault, stream),
                                    "cudaMemcpyAsync"));
    im.ce_copies->Add(1);
  }
  return ReleaseAfter(stream, std::move(release));
}


Status CudaTransport::CopyPages(const PageCopy& pc, void* stream_ptr, std::function<void()> release) {
  Impl& im = *impl_;
  const bool on_device = pc.device_pairs != nullptr;
  const size_t n = on_device ? pc.count : pc.dst_pages.size();
  if (n == 0) return OkStatus();
  if (!on_device && pc.src_pages.size() != n)
    return Error(Code::kInvalidArgument, "copy pages: {} destination and {} source pages", n, pc.src_pages.size());
  if (on_device && stream_ptr)
    return Error(Code::kNotSupported, "copy pages: index pairs in device memory are taken without a stream only (the "
                 "check of the pairs is reported when the call returns); pass host lists to order it on a stream");
  // Both ends once, over the whole extent the indices reach: no per-page classification.
  WEFT_ASSIGN_OR_RETURN(PlanItem p, im.Classify(pc.dst, pc.src, pc.dst_extent, pc.src_extent));
  if (!p.kernel_ok)
    return Error(Code::kNotSupported,
                 "copy pages: the SMs of GPU {} cannot address both ends ({}); the page kernel needs device memory "
                 "of that GPU or a peer with access, or mapped pinned host memory: copy these pages with CopyBatch",
                 p.device, LinkName(p.link));
  mem::cuda::DeviceGuard guard;
  if (PlanPages(pc.page_bytes, n, 1, 1).units > UINT32_MAX)
    return Error(Code::kInvalidArgument, "copy pages: {} pages of {} bytes make 2^32 kernel units or more; split the batch",
                 n, pc.page_bytes);
  PageCopyParams params{reinterpret_cast<uint64_t>(pc.dst.mapped), reinterpret_cast<uint64_t>(pc.src.mapped),
                        pc.page_bytes, nullptr, 0, 0, 0, 0, nullptr, 0, 0};
  if (on_device) {
    // The pairs must be device memory the copying GPU can read, 8-byte aligned (one load a pair).
    Impl::PtrInfo q = im.Query(reinterpret_cast<const uint8_t*>(pc.device_pairs));
    if (!q.info.device || (q.info.dev != p.device && !im.dev[p.device].peer[q.info.dev]))
      return Error(Code::kInvalidArgument, "copy pages: the index pairs at {} are not device memory GPU {} can read; "
                   "pass a device buffer of that GPU (or host lists)",
                   static_cast<const void*>(pc.device_pairs), p.device);
    if (reinterpret_cast<uintptr_t>(pc.device_pairs) % 8 != 0)
      return Error(Code::kInvalidArgument, "copy pages: the index pairs at {} are not 8-byte aligned",
                   static_cast<const void*>(pc.device_pairs));
    if (q.end > q.base && (reinterpret_cast<uint64_t>(pc.device_pairs) + n * 8 > q.end))
      return Error(Code::kOutOfRange, "copy pages: {} index pairs run past the end of their device allocation", n);
    params.pairs = pc.device_pairs;
    params.max_dst = static_cast<uint32_t>(pc.dst_extent / pc.page_bytes - 1);
    params.max_src = static_cast<uint32_t>(pc.src_extent / pc.page_bytes - 1);
  }
  // Offsets in 32 bits when both extents stay below 2^32 (then so does every page offset).
  params.offsets32 = pc.dst_extent < (uint64_t{1} << 32) && pc.src_extent < (uint64_t{1} << 32);
  const PageKernelVariant variant = im.options.page_kernel;
  const size_t pair_bytes = n * 2 * sizeof(uint32_t);
  auto set_launch = [&](const DeviceState& ds, int sms) {
    // Blocks per SM: what this instantiation keeps resident (a second wave would be a tail).
    const int per_sm = ds.page_blocks[static_cast<int>(variant)][params.offsets32][PageUnitsAligned(params)];
    const PageLaunch pl = PlanPages(pc.page_bytes, n, sms, per_sm);
    params.chunk = pl.chunk;
    params.chunks_per_page = pl.chunks_per_page;
    params.units = static_cast<uint32_t>(pl.units);
    // One block per unit instead of a persistent grid: the hardware hands out units as blocks
    // finish (bench-gpu compares both; gridDim.x stops at 2^31 - 1).
    if (im.options.page_grid_per_unit) return static_cast<uint32_t>(std::min<uint64_t>(pl.units, INT32_MAX));
    return pl.grid;
  };
  // The kernel reads (dst, src) pairs: one 8-byte load per unit.
  auto interleave = [&](uint32_t* out) {
    const uint32_t* d = pc.dst_pages.data();
    const uint32_t* s = pc.src_pages.data();
    for (size_t i = 0; i < n; ++i) {
      out[2 * i] = d[i];
      out[2 * i + 1] = s[i];
    }
  };
  auto count = [&] {
    im.kernel_launches->Add(1);
    im.kernel_pages->Add(n);
  };
  if (stream_ptr) {
    // Caller's stream: a device buffer from the stream-ordered allocator, filled from a pageable
    // copy of the pairs (the runtime has consumed it when cudaMemcpyAsync returns), freed in order.
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    int sdev = -1;
    WEFT_RETURN_IF_ERROR(CudaStatus(cudaStreamGetDevice(stream, &sdev), "cudaStreamGetDevice (is this a live stream of this process?)"));
    if (sdev != p.device)
      return Error(Code::kInvalidArgument, "copy pages: the stream belongs to GPU {} but the pages are copied by GPU {}; "
                   "pass a stream of GPU {}", sdev, p.device, p.device);
    WEFT_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(sdev), "cudaSetDevice"));
    std::vector<uint32_t> pairs(2 * n);
    interleave(pairs.data());
    void* buf = nullptr;
    WEFT_RETURN_IF_ERROR(CudaStatus(cudaMallocAsync(&buf, pair_bytes, stream), "cudaMallocAsync (page indices)"));
    Status s = CudaStatus(cudaMemcpyAsync(buf, pairs.data(), pair_bytes, cudaMemcpyHostToDevice, stream),
                          "cudaMemcpyAsync (page indices)");
    params.pairs = static_cast<const uint32_t*>(buf);
    const uint32_t grid = set_launch(im.dev[sdev], im.dev[sdev].sm_count);
    if (s.ok()) s = CudaStatus(LaunchPageKernel(params, grid, stream, variant), "page kernel launch");
    cudaFreeAsync(buf, stream);
    WEFT_RETURN_IF_ERROR(s);
    count();
    return ReleaseAfter(stream, std::move(release));
  }

  // weft's own lane (in the green context when an SM budget is set): pairs written to the lane's
  // pinned buffer, which the kernel reads over PCIe (page_indices_mapped, the default) or which
  // is uploaded first; one launch, one synchronisation.
  WEFT_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(p.device), "cudaSetDevice"));
  im.MaybeGreen(p.device);
  DeviceState& ds = im.dev[p.device];
  bool green = ds.green != nullptr && !ds.green_broken;
  for (;;) {
    WEFT_ASSIGN_OR_RETURN(Lane * lane, im.Acquire(p.device, green));
    const int sms = green ? ds.green_sms : ds.sm_count;
    Status s = im.ReserveIndices(lane, on_device ? 2 : 2 * n);
    if (s.ok() && on_device) {
      // The lane's pinned words hold the kernel's "a pair was out of range" flag instead.
      lane->host_idx[0] = 0;
      params.bad = lane->host_idx;
    } else if (s.ok()) {
      interleave(lane->host_idx);
      if (!im.options.page_indices_mapped)
        s = CudaStatus(cudaMemcpyAsync(lane->dev_idx, lane->host_idx, pair_bytes, cudaMemcpyHostToDevice, lane->stream),
                       "cudaMemcpyAsync (page indices)");
    }
    // cudaMallocHost memory is mapped at the same address (unified addressing).
    if (!on_device) params.pairs = im.options.page_indices_mapped ? lane->host_idx : lane->dev_idx;
    const uint32_t grid = set_launch(ds, sms);
    if (s.ok()) s = CudaStatus(LaunchPageKernel(params, grid, lane->stream, variant), "page kernel launch");
    if (s.ok()) count();
    // Whatever was enqueued must finish before the lane (and its staging) is reused.
    Status sync = CudaStatus(cudaStreamSynchronize(lane->stream), "cudaStreamSynchronize");
    const bool out_of_range = on_device && s.ok() && sync.ok() && *reinterpret_cast<volatile uint32_t*>(lane->host_idx);
    im.Release(lane);
    if (out_of_range)
      return Error(Code::kOutOfRange,
                   "copy pages: an index pair in device memory is past the stated largest index (dst {}, src {}); "
                   "its pages were not copied, the others were",
                   params.max_dst, params.max_src);
    if (!s.ok() && green) {
      ds.green_broken = true;
      if (!im.logged_green.exchange(true))
        WEFT_LOG_WARN("the copy kernel cannot run in its green context ({}): it runs on all SMs", s.ToString());
      green = false;
      continue;
    }
    return s.ok() ? sync : s;
  }
}

Status CudaTransport::RegisterHost(void* ptr, uint64_t len) {
  if (!ptr || len == 0) return Error(Code::kInvalidArgument, "registering an empty host range");
  mem::cuda::DeviceGuard guard;
  cudaError_t e = cudaHostRegister(ptr, len, cudaHostRegisterPortable | cudaHostRegisterMapped);
  if (e == cudaErrorHostMemoryAlreadyRegistered) {
    (void)cudaGetLastError();
    return OkStatus();  // someone else pinned it (torch, the user): theirs to unregister
  }
  WEFT_RETURN_IF_ERROR(CudaStatus(e, "cudaHostRegister"));
  std::lock_guard lock(impl_->reg_mu);
  impl_->registered[ptr] = len;
  return OkStatus();
}

void CudaTransport::UnregisterHost(void* ptr) {
  std::lock_guard lock(impl_->reg_mu);
  auto it = impl_->registered.find(ptr);
  if (it == impl_->registered.end()) return;
  cudaHostUnregister(ptr);
  (void)cudaGetLastError();
  impl_->registered.erase(it);
}

int CudaTransport::device_count() const { return impl_->devices; }

int CudaTransport::kernel_sms(int device) const {
  if (device < 0 || device >= impl_->devices) return 0;
  impl_->MaybeGreen(device);
  const DeviceState& ds = impl_->dev[device];
  return ds.green && !ds.green_broken ? ds.green_sms : ds.sm_count;
}

bool CudaTransport::green_context_active(int device) const {
  if (device < 0 || device >= impl_->devices) return false;
  impl_->MaybeGreen(device);
  return impl_->dev[device].green != nullptr && !impl_->dev[device].green_broken;
}

CudaStats CudaTransport::stats() const {
  return CudaStats{impl_->ce_copies->value(), impl_->kernel_launches->value(), impl_->kernel_descs->value(),
                   impl_->kernel_pages->value()};
}

const CostModel& CudaTransport::model() const { return impl_->options.model; }

Result<BatchPlan> CudaTransport::PlanFor(std::span<const CopyItem> items) const {
  std::vector<PlanItem> p(items.size());
  ClassifyMemo memos[2];
  for (size_t i = 0; i < items.size(); ++i) {
    WEFT_ASSIGN_OR_RETURN(p[i], impl_->Classify(items[i], memos));
  }
  return PlanBatch(p, impl_->options.model);
}

}  // namespace weft::transport::cuda
