#include "api/symm/device_heap.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "api/bm/pool_internal.h"
#include "api/cuda_availability.h"
#include "base/log.h"

#if WEFT_HAVE_CUDA
#include "mem/cuda/cuda_api.h"
#endif

namespace weft::symm {
namespace {

uint64_t BlockBytes(uint64_t heap_bytes) { return heap_bytes + cuda::kSyncBytes; }

std::vector<uint8_t> EncodeU64(uint64_t v) {
  std::vector<uint8_t> out(8);
  std::memcpy(out.data(), &v, 8);
  return out;
}

}  // namespace

#if WEFT_HAVE_CUDA

// The host-mapped words the kernels read and write, and the slots of the launches in flight.
struct DeviceHeap::Control {
  static constexpr size_t kWordsBytes = (1 + kSlots) * sizeof(uint32_t);
  // [0]: cancel (host writes, every launch reads), [1 + slot]: a launch's status (its kernel writes).
  volatile uint32_t* words = nullptr;
  std::vector<cudaEvent_t> done = std::vector<cudaEvent_t>(kSlots, nullptr);  // by slot, made on first use
  std::mutex mu;
  std::vector<uint32_t> free;  // slots not in flight, under mu

  ~Control() {
    for (cudaEvent_t e : done)
      if (e) cudaEventDestroy(e);
    if (words) cudaFreeHost(const_cast<uint32_t*>(words));
  }
  // A slot for a launch on the current device, its status word reset; with none in flight the
  // cancel word too (a cancel ends every launch of its time, and those are all reaped).
  Result<uint32_t> Take() {
    std::lock_guard lock(mu);
    if (free.empty())
      return Error(Code::kBusy, "{} device collectives of this heap are in flight: call DeviceSynchronize on the "
                   "teams that launched them", kSlots);
    const uint32_t slot = free.back();
    if (!done[slot]) {
      if (cudaError_t err = cudaEventCreateWithFlags(&done[slot], cudaEventDisableTiming); err != cudaSuccess) {
        done[slot] = nullptr;
        return mem::cuda::CudaStatus(err, "creating a device collective's event");
      }
    }
    if (free.size() == kSlots) words[0] = 0;
    free.pop_back();
    words[1 + slot] = cuda::kKernelOk;
    return slot;
  }
  void Give(uint32_t slot) {
    std::lock_guard lock(mu);
    free.push_back(slot);
  }
};

namespace {

// Zeroes device memory of `gpu` and waits for it (a sync area before any rank may write into it).
Status ZeroDeviceMemory(int gpu, void* p, uint64_t len) {
  mem::cuda::DeviceGuard guard;
  cudaError_t err = cudaSetDevice(gpu);
  if (err == cudaSuccess) err = cudaMemset(p, 0, len);
  if (err == cudaSuccess) err = cudaDeviceSynchronize();
  return err == cudaSuccess ? OkStatus() : mem::cuda::CudaStatus(err, "zeroing a sync area of the device heap");
}

// This rank's block: allocated in its device slice, its sync area zeroed before any rank can
// learn where it is (so no flag of an earlier life reads as an arrival).
Result<uint64_t> MakeOwnBlock(bm::Pool& pool, uint64_t heap_bytes) {
  if (pool.device_size() == 0)
    return Error(Code::kInvalidArgument, "device_heap_bytes needs a device slice: join the pool with device_size "
                 "(at least the heap plus {} bytes)", cuda::kSyncBytes);
  WEFT_RETURN_IF_ERROR(CudaUsable());
  WEFT_ASSIGN_OR_RETURN(uint64_t gva, pool.Alloc(BlockBytes(heap_bytes), Placement::Local(Medium::kDevice)));
  auto local = pool.LocalAddress(gva, BlockBytes(heap_bytes));
  if (!local.ok()) {
    (void)pool.Free(gva);
    return local.status();
  }
  Status zeroed = ZeroDeviceMemory(pool.config().device, static_cast<uint8_t*>(*local) + heap_bytes, cuda::kSyncBytes);
  if (!zeroed.ok()) {
    (void)pool.Free(gva);
    return zeroed;
  }
  return gva;
}

Result<std::shared_ptr<DeviceHeap::Control>> MakeControl(int gpu) {
  mem::cuda::DeviceGuard guard;
  auto c = std::make_shared<DeviceHeap::Control>();
  void* words = nullptr;
  cudaError_t err = cudaSetDevice(gpu);
  if (err == cudaSuccess)
    err = cudaHostAlloc(&words, DeviceHeap::Control::kWordsBytes, cudaHostAllocMapped | cudaHostAllocPortable);
  if (err != cudaSuccess) return mem::cuda::CudaStatus(err, "allocating the device collectives' control words");
  std::memset(words, 0, DeviceHeap::Control::kWordsBytes);
  c->words = static_cast<volatile uint32_t*>(words);
  for (uint32_t slot = DeviceHeap::kSlots; slot-- > 0;) c->free.push_back(slot);  // slot 0 taken first
  return c;
}

// Polls the kernel's event until it completes; at the deadline, or once a rank left the pool
// (asked at most every millisecond), sets the cancel word that every spinning block reads and says
// why in cancelled_for. Returns the event's final answer.
cudaError_t WaitForKernel(cudaEvent_t done, volatile uint32_t* words, Deadline deadline,
                          const std::function<bool()>& peers_alive, Code& cancelled_for) {
  cudaError_t err;
  auto next_liveness = std::chrono::steady_clock::now();
  for (uint64_t spin = 0; (err = cudaEventQuery(done)) == cudaErrorNotReady; ++spin) {
    if (spin > 1000) std::this_thread::yield();
    if (cancelled_for != Code::kOk || spin % 64 != 0) continue;
    if (deadline.expired()) cancelled_for = Code::kTimeout;
    else if (std::chrono::steady_clock::now() >= next_liveness) {
      if (!peers_alive()) cancelled_for = Code::kPeerDown;
      next_liveness = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
    }
    if (cancelled_for != Code::kOk) words[0] = 1;
  }
  return err;
}

// What a finished launch reports: the kernel's failure word, and why the host cancelled it.
Status StatusOf(uint32_t failure, Code cancelled_for) {
  switch (failure) {
    case cuda::kKernelOk: return OkStatus();
    case cuda::kKernelMismatch:
      return Error(Code::kMismatch, "the ranks called different device collectives (collective, count, dtype, op, "
                   "root, or heap offsets of the buffers the others read): every rank must make the same call "
                   "with the same symmetric buffers");
    case cuda::kKernelCancelled:
      if (cancelled_for == Code::kPeerDown)
        return Error(Code::kPeerDown, "a rank of the team left or died during a device collective");
      [[fallthrough]];
    default:
      return Error(Code::kTimeout, "a device collective's ranks did not all arrive before the deadline (a rank that "
                   "never made the call, or one stopped)");
  }
}

}  // namespace

DeviceHeap::Where DeviceHeap::Locate(const void* p) const {
  if (Contains(p)) return Where::kHeap;
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return Where::kHost;
  }
  if (a.type != cudaMemoryTypeDevice) return Where::kHost;
  return a.device == gpu_ ? Where::kThisGpu : Where::kOtherDevice;
}

Status DeviceHeap::ZeroOwn(uint64_t offset, uint64_t len) { return ZeroDeviceMemory(gpu_, own() + offset, len); }

Result<uint32_t> DeviceHeap::Launch(cuda::DeviceLaunch launch, const std::vector<uint32_t>& members, uint32_t me,
                                    DeviceSync& sync, void* stream, Deadline deadline) {
  mem::cuda::DeviceGuard guard;
  if (cudaError_t err = cudaSetDevice(gpu_); err != cudaSuccess)
    return mem::cuda::CudaStatus(err, "selecting the device heap's GPU");
  WEFT_ASSIGN_OR_RETURN(const uint32_t slot, control_->Take());
  volatile uint32_t* words = control_->words;
  for (size_t r = 0; r < members.size(); ++r) launch.blocks[r] = blocks_[members[r]];
  launch.me = me;
  launch.n = static_cast<uint32_t>(members.size());
  launch.sync_offset = sync.offset;
  launch.epoch = sync.epoch;
  // The kernel's own limit is a backstop: the host cancels it at the deadline.
  auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.left()).count();
  launch.timeout_ns = static_cast<uint64_t>(std::max<int64_t>(left, 0)) + 2'000'000'000ull;
  launch.cancel = words;
  launch.status = words + 1 + slot;
  // Every launch takes the same epochs, however it ends (the kernel's waits pass at later ones).
  sync.epoch += cuda::kEpochsPerLaunch;
  if (int err = cuda::LaunchDeviceCollective(launch, stream); err != cudaSuccess) {
    control_->Give(slot);
    return mem::cuda::CudaStatus(static_cast<cudaError_t>(err), "launching a device collective");
  }
  // Without its event the slot is never reused (the kernel may still write its word).
  if (cudaError_t err = cudaEventRecord(control_->done[slot], static_cast<cudaStream_t>(stream)); err != cudaSuccess)
    return mem::cuda::CudaStatus(err, "recording the device collective's event");
  return slot;
}

bool DeviceHeap::Finished(uint32_t slot) const { return cudaEventQuery(control_->done[slot]) != cudaErrorNotReady; }

Status DeviceHeap::Wait(uint32_t slot, Deadline deadline, const std::function<bool()>& peers_alive) {
  Code cancelled_for = Code::kOk;
  const cudaError_t err = WaitForKernel(control_->done[slot], control_->words, deadline, peers_alive, cancelled_for);
  const uint32_t failure = control_->words[1 + slot];
  control_->Give(slot);
  if (err != cudaSuccess) return mem::cuda::CudaStatus(err, "running a device collective");
  return StatusOf(failure, cancelled_for);
}

#else  // !WEFT_HAVE_CUDA

struct DeviceHeap::Control {};

namespace {
Result<uint64_t> MakeOwnBlock(bm::Pool&, uint64_t) { return CudaUsable(); }
Result<std::shared_ptr<DeviceHeap::Control>> MakeControl(int) { return CudaUsable(); }
}  // namespace

DeviceHeap::Where DeviceHeap::Locate(const void* p) const { return Contains(p) ? Where::kHeap : Where::kHost; }

Status DeviceHeap::ZeroOwn(uint64_t, uint64_t) { return CudaUsable(); }

Result<uint32_t> DeviceHeap::Launch(cuda::DeviceLaunch, const std::vector<uint32_t>&, uint32_t, DeviceSync&, void*,
                                    Deadline) {
  return CudaUsable();
}
bool DeviceHeap::Finished(uint32_t) const { return true; }
Status DeviceHeap::Wait(uint32_t, Deadline, const std::function<bool()>&) { return CudaUsable(); }

#endif  // WEFT_HAVE_CUDA

Status DeviceHeap::Run(const cuda::DeviceLaunch& launch, const std::vector<uint32_t>& members, uint32_t me,
                       DeviceSync& sync, void* stream, Deadline deadline, const std::function<bool()>& peers_alive) {
  WEFT_ASSIGN_OR_RETURN(const uint32_t slot, Launch(launch, members, me, sync, stream, deadline));
  return Wait(slot, deadline, peers_alive);
}

DeviceHeap::DeviceHeap(bm::Pool& pool, uint64_t heap_bytes, uint64_t own_gva, uint32_t me, int gpu)
    : pool_(pool), heap_bytes_(heap_bytes), own_gva_(own_gva), me_(me), gpu_(gpu), allocator_(heap_bytes) {}

DeviceHeap::~DeviceHeap() {
  pins_.clear();
  Status s = pool_.Free(own_gva_);
  if (!s.ok() && s.code() != Code::kCancelled && s.code() != Code::kUnavailable)
    WEFT_LOG_WARN("symm: freeing this rank's device heap at {:#x}: {}", own_gva_, s.ToString());
}

bool DeviceHeap::Contains(const void* p, uint64_t len) const {
  auto* b = static_cast<const uint8_t*>(p);
  return b >= own() && b < own() + heap_bytes_ && len <= static_cast<uint64_t>(own() + heap_bytes_ - b);
}

Result<std::unique_ptr<DeviceHeap>> DeviceHeap::Create(bm::Pool& pool, uint64_t heap_bytes,
                                                       const std::vector<uint32_t>& pool_ranks, uint32_t me,
                                                       Deadline deadline) {
  const uint32_t n = static_cast<uint32_t>(pool_ranks.size());
  // A rank that cannot make its block still takes part in the exchange (as 0), so none waits.
  Result<uint64_t> own = n > cuda::kMaxDeviceRanks
      ? Result<uint64_t>(Error(Code::kNotSupported, "device heaps are for teams of up to {} ranks on one node; this "
                               "team has {}", cuda::kMaxDeviceRanks, n))
      : MakeOwnBlock(pool, heap_bytes);
  const uint64_t own_gva = own.ok() ? *own : 0;
  auto all = pool.Allgather(EncodeU64(own_gva), deadline);
  auto fail = [&](Status s) {
    if (own_gva) (void)pool.Free(own_gva);
    return s;
  };
  if (!all.ok()) return fail(all.status().Annotate("exchanging the device heaps"));
  if (!own.ok()) return own.status().Annotate("making this rank's device heap");
  auto heap = std::unique_ptr<DeviceHeap>(new DeviceHeap(pool, heap_bytes, own_gva, me, pool.config().device));
  for (uint32_t r = 0; r < n; ++r) {
    uint64_t gva = 0;
    for (const auto& [rank, data] : *all)
      if (rank == pool_ranks[r] && data.size() == 8) std::memcpy(&gva, data.data(), 8);
    if (gva == 0)
      return Error(Code::kUnavailable, "pool rank {} could not make its device heap (its own call says why): every "
                   "rank needs a GPU and a device slice with room for device_heap_bytes", pool_ranks[r]);
    auto pin = bm::PoolAccess::PinRange(pool, gva, BlockBytes(heap_bytes));
    if (pin.ok() && !pin->ptr())
      pin = Error(Code::kNotSupported, "its device slice is not mapped here (another node, or a GPU this one cannot "
                  "reach): device heaps need every rank on one node");
    if (!pin.ok()) return pin.status().Annotate(fmt::format("reaching pool rank {}'s device heap", pool_ranks[r]));
    heap->blocks_.push_back(pin->ptr());
    heap->pins_.push_back(std::move(*pin));
  }
  WEFT_ASSIGN_OR_RETURN(heap->control_, MakeControl(heap->gpu_));
  return heap;
}

}  // namespace weft::symm
