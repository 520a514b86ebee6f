// The kernel under the collectives on device heaps (device_heap.h): one launch per collective,
// every rank's block of its device heap reached through mappings in this process (the pool's
// imported device slices: NVLink or PCIe peer access, or the same GPU). Each thread block meets
// the same block of every other rank at barriers made of flags in the ranks' sync areas:
//   entry (every rank's input is ready; the callers' descriptions are compared), the work,
//   [a middle barrier between reduce-scatter and allgather], exit (nobody reads any more).
// Waits end at a timeout or when the host sets the cancel word, never in a hang.
//
// C++17 (nvcc compiles it) and free of CUDA headers, so that host code of builds without CUDA
// includes it too (src/api/symm/device_heap.cc).
#pragma once

#include <cstdint>

namespace weft::symm::cuda {

inline constexpr uint32_t kMaxDeviceRanks = 8;   // one node
inline constexpr uint32_t kDeviceBlocks = 32;    // thread blocks of every launch (the same on every rank)
inline constexpr uint32_t kDeviceThreads = 512;

// What one rank's kernel does between the barriers. Values are internal.
enum class DeviceWork : uint8_t {
  kNone = 0,         // a refusing rank: the entry barrier only, so the others fail at once
  kBroadcast,        // non-roots copy the root's buffer
  kScatter,          // rank r copies piece r of the root's send
  kGather,           // the root copies every rank's send
  kAllGather,        // every rank copies every rank's send
  kReduce,           // the root reduces every rank's send
  kReduceScatter,    // rank r reduces piece r of every rank's send
  kAllReduceOneShot, // every rank reduces every rank's whole send (out of place)
  kAllReduceTwoPhase,  // reduce-scatter into recv, middle barrier, allgather of the pieces
  kAllToAll,         // rank r copies piece r of every rank's send
};

// One flag of a barrier: written by the sender into the receiver's sync area.
struct SyncSlot {
  uint64_t epoch;
  uint64_t desc;  // the sender's description of the call (entry barrier)
};
// A rank's sync area: [2 parities][kDeviceBlocks][kMaxDeviceRanks] slots.
inline constexpr uint64_t kSyncBytes = 2ull * kDeviceBlocks * kMaxDeviceRanks * sizeof(SyncSlot);

// Why a launch stopped early, in the host-mapped status word (0: it did not).
enum KernelFailure : uint32_t { kKernelOk = 0, kKernelMismatch = 1, kKernelTimeout = 2, kKernelCancelled = 3 };

struct DeviceLaunch {
  uint8_t* blocks[kMaxDeviceRanks];  // every rank's device block as mapped here, by team rank
  uint32_t me = 0;
  uint32_t n = 0;
  uint64_t sync_offset = 0;  // where the sync area starts in every block
  uint64_t epoch = 0;        // the entry barrier's; later barriers count up from it
  uint64_t desc = 0;         // this rank's description of the call (all must be equal)
  uint64_t timeout_ns = 0;   // a barrier waits at most this long
  const volatile uint32_t* cancel = nullptr;  // host-mapped: nonzero stops every wait
  volatile uint32_t* status = nullptr;        // host-mapped: a KernelFailure (this launch's own word)
  DeviceWork work = DeviceWork::kNone;
  uint8_t dtype = 0;  // symm::DType
  uint8_t op = 0;     // symm::ReduceOp
  uint32_t root = 0;
  bool send_in_recv = false;  // allgather in place: rank j's send is its recv at j × count
  bool vector = false;        // every address and piece 16-byte aligned: 16-byte loads and stores
  uint64_t send_offset = 0;   // heap offset of what the peers read, the same on every rank
  uint64_t recv_offset = 0;   // heap offset of recv, where the peers read it (two-phase allreduce)
  uint8_t* recv = nullptr;    // this rank's recv (device memory of this GPU; written here only)
  uint64_t count = 0;         // elements per rank, as the collective's count
};

// Epochs a launch takes, whatever it does and however it ends: entry at its epoch, the middle
// barrier (two-phase allreduce) at +1, exit at +2. Fixed, so that the host knows the next
// launch's epoch without waiting for this one (asynchronous launches).
inline constexpr uint64_t kEpochsPerLaunch = 3;

// Enqueues the launch on `stream` (a cudaStream_t). Returns the launch's cudaError_t
// (configuration errors only).
int LaunchDeviceCollective(const DeviceLaunch& launch, void* stream);

}  // namespace weft::symm::cuda
