// The collectives' kernel on device heaps (device_kernel.h says what it does).
//
// Why per-block barriers suffice: every rank launches the same grid, and element pack k of any
// range is handled by the same block on every rank (pack k -> thread k mod grid threads). So
// when block b of every rank has passed a barrier, every pack that block b of any rank wrote
// before it is final, and block b reads after it only packs written by block b.
#include "api/symm/cuda/device_kernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace weft::symm::cuda {
namespace {

constexpr uint64_t kGridThreads = uint64_t{kDeviceBlocks} * kDeviceThreads;
// symm::ReduceOp and symm::DType values (include/weft/symm.h, stable: the C API's too).
enum : uint8_t { kOpSum = 0, kOpMax = 1, kOpMin = 2, kOpProd = 3 };
enum : uint8_t { kF32 = 0, kBf16 = 1, kF16 = 2, kI32 = 3, kI64 = 4, kU8 = 5 };

// ---- barriers ------------------------------------------------------------------------------

__device__ uint64_t GlobalTimerNs() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ void StoreRelease(uint64_t* p, uint64_t v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ uint64_t LoadAcquire(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

__device__ SyncSlot* SlotOf(uint8_t* block, const DeviceLaunch& p, uint64_t epoch, uint32_t sender) {
  uint64_t index = ((epoch & 1) * kDeviceBlocks + blockIdx.x) * kMaxDeviceRanks + sender;
  return reinterpret_cast<SyncSlot*>(block + p.sync_offset) + index;
}

// Thread r < n tells rank r that this block arrived, then waits for rank r's same block. The
// entry barrier also compares every rank's description with this one's. False: stop (the
// status word says why).
// A wait passes once the slot holds this epoch or a later one: a rank may already have passed
// this barrier and written a later barrier's epoch into the slot of the same parity (it could,
// because every rank had arrived here). Epochs only grow (kEpochsPerLaunch a launch), so an
// older value never passes.
__device__ bool Barrier(const DeviceLaunch& p, uint64_t epoch, bool entry) {
  __shared__ uint32_t failed;
  if (threadIdx.x == 0) failed = kKernelOk;
  __syncthreads();  // also: this block's work before the barrier is done
  const uint32_t r = threadIdx.x;
  if (r < p.n) {
    SyncSlot* out = SlotOf(p.blocks[r], p, epoch, p.me);
    if (entry) *reinterpret_cast<volatile uint64_t*>(&out->desc) = p.desc;
    __threadfence_system();
    StoreRelease(&out->epoch, epoch);
    const SyncSlot* in = SlotOf(p.blocks[p.me], p, epoch, r);
    const uint64_t start = GlobalTimerNs();
    uint32_t why = kKernelOk;
    for (uint32_t spin = 1; LoadAcquire(&in->epoch) < epoch; ++spin) {
      if (spin % 64 != 0) continue;
      if (*p.cancel) why = kKernelCancelled;
      else if (GlobalTimerNs() - start > p.timeout_ns) why = kKernelTimeout;
      if (why != kKernelOk) break;
    }
    if (why == kKernelOk && entry && *reinterpret_cast<const volatile uint64_t*>(&in->desc) != p.desc)
      why = kKernelMismatch;
    if (why != kKernelOk) atomicMax(&failed, why);
  }
  __syncthreads();
  const uint32_t f = failed;
  if (f != kKernelOk && threadIdx.x == 0) *p.status = f;
  __syncthreads();  // nobody reads `failed` once the next barrier resets it
  return f == kKernelOk;
}

// ---- element types ---------------------------------------------------------------------------

// How an element (Elem, as stored) is combined (in Acc). Matches src/api/symm/reduce.cc bit for
// bit: 16-bit floats in f32 rounded once to nearest even, integers wrapping.
struct F32 {
  static constexpr bool kSignedInt = false;
  using Elem = float;
  using Acc = float;
  __device__ static Acc In(Elem v) { return v; }
  __device__ static Elem Out(Acc v) { return v; }
};
struct Bf16 {
  static constexpr bool kSignedInt = false;
  using Elem = unsigned short;
  using Acc = float;
  __device__ static Acc In(Elem v) { return __bfloat162float(__ushort_as_bfloat16(v)); }
  __device__ static Elem Out(Acc v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }
};
struct F16 {
  static constexpr bool kSignedInt = false;
  using Elem = unsigned short;
  using Acc = float;
  __device__ static Acc In(Elem v) { return __half2float(__ushort_as_half(v)); }
  __device__ static Elem Out(Acc v) { return __half_as_ushort(__float2half_rn(v)); }
};
template <typename E, typename U, bool kSigned>  // U: the unsigned type the arithmetic wraps in
struct Int {
  static constexpr bool kSignedInt = kSigned;
  using Elem = E;
  using Acc = U;
  __device__ static Acc In(Elem v) { return static_cast<U>(v); }
  __device__ static Elem Out(Acc v) { return static_cast<E>(v); }
};
using I32 = Int<int, unsigned int, true>;
using I64 = Int<long long, unsigned long long, true>;
using U8 = Int<unsigned char, unsigned int, false>;

template <typename T>
__device__ T LoadPeer(const T* p) {
  return __ldcg(p);  // around L1: a peer's bytes are read once, and never stale from an earlier read
}

// The op is the same for every thread (no divergence). Max and min as the host writes them, on
// the stored type's order (signed integers compare signed).
template <typename Tr>
__device__ typename Tr::Acc CombineTyped(uint8_t op, typename Tr::Acc a, typename Tr::Acc b) {
  using E = typename Tr::Elem;
  switch (op) {
    case kOpSum: return a + b;
    case kOpProd: return a * b;
    default: break;
  }
  if constexpr (Tr::kSignedInt) {
    E x = static_cast<E>(a), y = static_cast<E>(b);
    return static_cast<typename Tr::Acc>(op == kOpMax ? (y > x ? y : x) : (y < x ? y : x));
  } else {
    return op == kOpMax ? (b > a ? b : a) : (b < a ? b : a);
  }
}

// ---- packs: V elements, 16 bytes when the launch is vectorised ------------------------------

template <typename Tr, int V>
struct Pack {
  typename Tr::Elem e[V];
};

template <typename Tr, int V>
__device__ Pack<Tr, V> LoadPack(const uint8_t* p) {
  Pack<Tr, V> out;
  if constexpr (V * sizeof(typename Tr::Elem) == 16) {
    uint4 v = __ldcg(reinterpret_cast<const uint4*>(p));
    memcpy(&out, &v, 16);
  } else {
    for (int i = 0; i < V; ++i) out.e[i] = LoadPeer(reinterpret_cast<const typename Tr::Elem*>(p) + i);
  }
  return out;
}

template <typename Tr, int V>
__device__ void StorePack(uint8_t* p, const Pack<Tr, V>& v) {
  if constexpr (V * sizeof(typename Tr::Elem) == 16) {
    uint4 x;
    memcpy(&x, &v, 16);
    *reinterpret_cast<uint4*>(p) = x;
  } else {
    for (int i = 0; i < V; ++i) reinterpret_cast<typename Tr::Elem*>(p)[i] = v.e[i];
  }
}

// Elements [first, first + len) of dst from src (len a multiple of V), pack k by thread k mod
// the grid's threads.
template <typename Tr, int V>
__device__ void CopyElems(uint8_t* dst, const uint8_t* src, uint64_t first, uint64_t len) {
  constexpr uint64_t kBytes = V * sizeof(typename Tr::Elem);
  const uint64_t packs = len / V;
  const uint64_t base = first * sizeof(typename Tr::Elem);
  for (uint64_t k = blockIdx.x * uint64_t{kDeviceThreads} + threadIdx.x; k < packs; k += kGridThreads)
    StorePack<Tr, V>(dst + base + k * kBytes, LoadPack<Tr, V>(src + base + k * kBytes));
}

// dst[i] = src[0][i] op src[1][i] op ... for i in [first, first + len), in rank order.
template <typename Tr, int V>
__device__ void ReduceElems(const DeviceLaunch& p, uint8_t* dst, const uint8_t* const* src, uint64_t first,
                            uint64_t len) {
  constexpr uint64_t kBytes = V * sizeof(typename Tr::Elem);
  const uint64_t packs = len / V;
  const uint64_t base = first * sizeof(typename Tr::Elem);
  for (uint64_t k = blockIdx.x * uint64_t{kDeviceThreads} + threadIdx.x; k < packs; k += kGridThreads) {
    const uint64_t at = base + k * kBytes;
    typename Tr::Acc acc[V];
    Pack<Tr, V> v = LoadPack<Tr, V>(src[0] + at);
    for (int i = 0; i < V; ++i) acc[i] = Tr::In(v.e[i]);
    for (uint32_t j = 1; j < p.n; ++j) {
      v = LoadPack<Tr, V>(src[j] + at);
      for (int i = 0; i < V; ++i) acc[i] = CombineTyped<Tr>(p.op, acc[i], Tr::In(v.e[i]));
    }
    for (int i = 0; i < V; ++i) v.e[i] = Tr::Out(acc[i]);
    StorePack<Tr, V>(dst + at, v);
  }
}

// ---- the work between the barriers ---------------------------------------------------------

template <typename Tr, int V>
struct Work {
  const DeviceLaunch& p;
  static constexpr uint64_t kEs = sizeof(typename Tr::Elem);

  // Rank j's send as read from here, at element `at`.
  __device__ const uint8_t* Send(uint32_t j, uint64_t at = 0) const {
    uint64_t off = p.send_in_recv ? p.recv_offset + uint64_t{j} * p.count * kEs : p.send_offset;
    return p.blocks[j] + off + at * kEs;
  }
  __device__ uint8_t* Recv(uint64_t at = 0) const { return p.recv + at * kEs; }

  // Piece m of a two-phase allreduce: V-aligned, the last one shorter (or empty).
  __device__ void Piece(uint32_t m, uint64_t& first, uint64_t& len) const {
    uint64_t chunk = (p.count + p.n - 1) / p.n;
    chunk = (chunk + V - 1) / V * V;
    first = min(p.count, m * chunk);
    len = min(p.count, first + chunk) - first;
  }

  // False when the middle barrier failed.
  __device__ bool Run(uint64_t middle_epoch) const {
    const uint64_t c = p.count;
    const uint8_t* src[kMaxDeviceRanks];
    switch (p.work) {
      case DeviceWork::kNone: return true;
      case DeviceWork::kBroadcast:
        if (p.me != p.root) CopyElems<Tr, V>(Recv(), Send(p.root), 0, c);
        return true;
      case DeviceWork::kScatter:
        CopyElems<Tr, V>(Recv(), Send(p.root, p.me * c) , 0, c);
        return true;
      case DeviceWork::kGather:
        if (p.me == p.root)
          for (uint32_t j = 0; j < p.n; ++j)
            if (Recv(j * c) != Send(j)) CopyElems<Tr, V>(Recv(j * c), Send(j), 0, c);
        return true;
      case DeviceWork::kAllGather:
        for (uint32_t j = 0; j < p.n; ++j)
          if (Recv(j * c) != Send(j) && !(p.send_in_recv && j == p.me)) CopyElems<Tr, V>(Recv(j * c), Send(j), 0, c);
        return true;
      case DeviceWork::kAllToAll:
        for (uint32_t j = 0; j < p.n; ++j) CopyElems<Tr, V>(Recv(j * c), Send(j, p.me * c), 0, c);
        return true;
      case DeviceWork::kReduce:
        if (p.me != p.root) return true;
        [[fallthrough]];
      case DeviceWork::kAllReduceOneShot:
        for (uint32_t j = 0; j < p.n; ++j) src[j] = Send(j);
        ReduceElems<Tr, V>(p, Recv(), src, 0, c);
        return true;
      case DeviceWork::kReduceScatter:
        for (uint32_t j = 0; j < p.n; ++j) src[j] = Send(j, p.me * c);
        ReduceElems<Tr, V>(p, Recv(), src, 0, c);
        return true;
      case DeviceWork::kAllReduceTwoPhase: {
        uint64_t first, len;
        Piece(p.me, first, len);
        for (uint32_t j = 0; j < p.n; ++j) src[j] = Send(j);
        ReduceElems<Tr, V>(p, Recv(), src, first, len);
        if (!Barrier(p, middle_epoch, false)) return false;
        for (uint32_t j = 0; j < p.n; ++j) {
          if (j == p.me) continue;
          Piece(j, first, len);
          CopyElems<Tr, V>(Recv(), p.blocks[j] + p.recv_offset, first, len);
        }
        return true;
      }
    }
    return true;
  }
};

template <typename Tr>
__device__ bool RunTyped(const DeviceLaunch& p, uint64_t middle_epoch) {
  constexpr int kV = 16 / sizeof(typename Tr::Elem);
  if (p.vector) return Work<Tr, kV>{p}.Run(middle_epoch);
  return Work<Tr, 1>{p}.Run(middle_epoch);
}

__global__ void __launch_bounds__(kDeviceThreads) CollectiveKernel(DeviceLaunch p) {
  if (!Barrier(p, p.epoch, true)) return;
  bool ok = true;
  switch (p.dtype) {
    case kF32: ok = RunTyped<F32>(p, p.epoch + 1); break;
    case kBf16: ok = RunTyped<Bf16>(p, p.epoch + 1); break;
    case kF16: ok = RunTyped<F16>(p, p.epoch + 1); break;
    case kI32: ok = RunTyped<I32>(p, p.epoch + 1); break;
    case kI64: ok = RunTyped<I64>(p, p.epoch + 1); break;
    default: ok = RunTyped<U8>(p, p.epoch + 1); break;  // kU8 (the host refuses other values)
  }
  if (!ok) return;
  Barrier(p, p.epoch + kEpochsPerLaunch - 1, false);
}

}  // namespace

int LaunchDeviceCollective(const DeviceLaunch& launch, void* stream) {
  CollectiveKernel<<<kDeviceBlocks, kDeviceThreads, 0, static_cast<cudaStream_t>(stream)>>>(launch);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace weft::symm::cuda
