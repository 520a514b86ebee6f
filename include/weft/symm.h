// Symmetric memory (SHM) on a pool, and the eight collectives built on it.
//
// Public: includes only other headers of include/weft.
//
// A Team is the ranks of a pool that made a symmetric heap together: each contributes
// `heap_bytes` of its own slice, and an offset into the heap names the same object on every
// rank (Malloc is collective and gives the same offset everywhere). Puts and gets address a
// peer's heap by (team rank, offset); same-node heaps are mapped and reached by load and store,
// other nodes' heaps through the pool's copy engine (its network path).
//
//   auto team = weft::symm::Team::Create(*pool, {.heap_bytes = 64 << 20}).value();   // every peer
//   std::vector<float> grad(n);
//   team->AllReduce(grad.data(), grad.data(), n, DType::kF32, ReduceOp::kSum);
//
// Collectives are called by every rank of the team in the same order (as with NCCL and MPI);
// a rank that calls another collective, count, dtype, op or root than the others gets
// MISMATCH, and so do the others. A rank that dies mid-collective makes the others return
// PEER_DOWN; nothing waits past its deadline (TIMEOUT).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <weft/deadline.h>
#include <weft/pool.h>
#include <weft/status.h>
#include <weft/symm_device_view.h>

namespace weft::symm {

// Element types of collectives. Values are stable (C API).
enum class DType : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2, kI32 = 3, kI64 = 4, kU8 = 5 };
// Reductions. kProd is for every dtype; bf16/f16 reduce in f32 and round to nearest even.
enum class ReduceOp : uint8_t { kSum = 0, kMax = 1, kMin = 2, kProd = 3 };
// Comparisons of WaitUntil.
enum class Cmp : uint8_t { kEq = 0, kNe = 1, kGt = 2, kGe = 3, kLt = 4, kLe = 5 };
// How PutSignal updates the signal word.
enum class SignalOp : uint8_t { kSet = 0, kAdd = 1 };

size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);
std::string_view ReduceOpName(ReduceOp op);

// A call's deadline; nullopt: TeamOptions::timeout_ms from now.
using OptDeadline = std::optional<Deadline>;

struct TeamOptions {
  uint64_t heap_bytes = 16 << 20;  // the symmetric heap each rank contributes (Malloc's space)
  // Bytes one rank may send another per step of a collective (larger messages go in steps).
  // Each rank keeps 2 × team size × (slot_bytes + 64) of its slice for them, besides the heap.
  uint64_t slot_bytes = 256 << 10;
  // Delivered to every rank with Team::user_contexts() (memfabric's context allgather).
  std::vector<uint8_t> user_context;
  // Messages up to this size use the one-shot algorithms; larger ones reduce-scatter then
  // allgather. 0: the default (64 KiB).
  uint64_t one_shot_max_bytes = 0;
  // How long a collective (or Malloc, Free, Split, Barrier) may wait for the other ranks when
  // the call gives no deadline. A rank that never calls makes the others return TIMEOUT.
  uint32_t timeout_ms = 60000;
  // The device heap each rank contributes from its pool device slice (config device_size), for
  // collectives on GPU buffers (DeviceMalloc, DeviceLocal). 0: none. Needs every rank on one node
  // with a GPU, and at most 8 ranks; every rank asks for the same size.
  uint64_t device_heap_bytes = 0;
  // Device collectives return once their kernel is launched on the team's stream, as NCCL's do:
  // later work on the stream runs after it, and Team::DeviceSynchronize reports how the launches
  // ended (MISMATCH, TIMEOUT, PEER_DOWN). A rank's own bad arguments are still refused at the
  // call. false: each call returns once its kernel finished, with its outcome. Per rank (ranks
  // may differ); sub-teams take their parent's.
  bool device_async = false;
};

// Which algorithm a collective of that size runs and how it reaches each peer (like `weft route`).
struct CollectivePlan {
  std::string algorithm;            // "one-shot", "reduce-scatter+allgather", "direct", ...
  uint64_t steps = 0;               // rounds of at most slot_bytes per peer
  std::vector<std::string> paths;   // per team rank: "self", "mapped", or "copy engine"
  // What it runs instead when every rank's buffers lie in its heap (Malloc): "" when the same.
  std::string heap_algorithm;
  // What it runs on device heap buffers (a team with a device heap): "" without one.
  std::string device_algorithm;
  std::string ToString() const;
};

// What a team's collectives ran so far on this rank.
struct TeamStats {
  uint64_t collectives = 0;  // the eight collectives' calls (barriers, Malloc, Free not counted)
  uint64_t heap_path = 0;    // of which read the peers' heaps in place
  uint64_t device_path = 0;  // of which ran on device heaps (one kernel each)
};

class Team {
 public:
  // Collective over every live peer of the pool: each calls it with the same heap_bytes and
  // slot_bytes (MISMATCH otherwise, on every peer). Team ranks follow pool ranks in order.
  static Result<std::unique_ptr<Team>> Create(bm::Pool& pool, const TeamOptions& options,
                                              OptDeadline deadline = std::nullopt);
  ~Team();  // frees this rank's heap; call it on every rank, after the team's last collective
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;

  // A sub-team of the ranks listed (team ranks of this team, each once, in the order that
  // gives their new ranks). Collective over *this* team: every rank passes the same list;
  // members get the sub-team, the others a null pointer. It shares this team's heap.
  Result<std::unique_ptr<Team>> Split(std::span<const uint32_t> ranks, OptDeadline deadline = std::nullopt);

  uint64_t id() const;
  uint32_t rank() const;
  uint32_t size() const;
  uint32_t pool_rank(uint32_t team_rank) const;
  uint64_t heap_bytes() const;
  // Every rank's TeamOptions::user_context, by team rank.
  const std::vector<std::vector<uint8_t>>& user_contexts() const;

  // Symmetric allocation, collective: every rank asks for the same size (MISMATCH otherwise)
  // and gets the same heap offset. POOL_FULL when the heap has no such block.
  Result<uint64_t> Malloc(uint64_t bytes, OptDeadline deadline = std::nullopt);
  Status Free(uint64_t offset, OptDeadline deadline = std::nullopt);
  // This rank's address of a heap offset (host heaps).
  void* Local(uint64_t offset) const;
  // A peer's heap at offset, mapped here; NOT_SUPPORTED for a peer on another node.
  Result<void*> PeerAddress(uint32_t team_rank, uint64_t offset) const;

  // The device heap (TeamOptions::device_heap_bytes): the same calls for GPU memory. DeviceLocal
  // is this rank's device address of an offset (null outside the heap), DevicePeerAddress a
  // rank's heap mapped here (load and store it from kernels: NVLink, PCIe or the same GPU).
  uint64_t device_heap_bytes() const;
  Result<uint64_t> DeviceMalloc(uint64_t bytes, OptDeadline deadline = std::nullopt);
  Status DeviceFree(uint64_t offset, OptDeadline deadline = std::nullopt);
  void* DeviceLocal(uint64_t offset) const;
  Result<void*> DevicePeerAddress(uint32_t team_rank, uint64_t offset) const;
  // Every rank's device heap as mapped here, for kernels: pass it by value to the device
  // functions of include/weft/symm_device.cuh (put, get, put_signal, wait from a kernel).
  // NOT_SUPPORTED without a device heap.
  Result<DeviceHeapView> DeviceHeaps() const;
  // The CUDA stream (a cudaStream_t; null: the legacy default stream) that this team's device
  // collectives are ordered on: each waits for the work queued there before it, and returns once
  // its kernel has finished (with the status of every rank's part), or once it is launched
  // (TeamOptions::device_async).
  void SetStream(void* cuda_stream);
  // Waits for this team's device collectives still in flight (device_async) and returns the
  // first failure among those that ended since the last call (OK when none failed; the calls
  // that returned their own error are not counted again). At the deadline, or when a rank left,
  // the kernels are cancelled: TIMEOUT or PEER_DOWN, and the team is unusable after it (as after
  // a synchronous call's). NOT_SUPPORTED without a device heap. The destructor and DeviceFree
  // wait for them too.
  Status DeviceSynchronize(OptDeadline deadline = std::nullopt);

  // One-sided. A put or get is complete in both memories when it returns (so Quiet and Fence
  // only order, they never wait for data).
  Status Put(uint32_t team_rank, uint64_t dst_offset, const void* src, uint64_t len);
  Status Get(void* dst, uint32_t team_rank, uint64_t src_offset, uint64_t len);
  // Put, then update the 8-byte signal word at sig_offset of the same peer once the data is
  // visible there. kAdd is atomic on mapped peers; NOT_SUPPORTED for a peer on another node.
  Status PutSignal(uint32_t team_rank, uint64_t dst_offset, const void* src, uint64_t len, uint64_t sig_offset,
                   uint64_t value, SignalOp op = SignalOp::kSet);
  // Waits until this rank's signal word at sig_offset compares true with value. TIMEOUT past
  // the deadline.
  Status WaitUntil(uint64_t sig_offset, Cmp cmp, uint64_t value, OptDeadline deadline = std::nullopt);
  uint64_t SignalValue(uint64_t sig_offset) const;
  void Fence();
  void Quiet();
  Status Barrier(OptDeadline deadline = std::nullopt);

  // The eight collectives on this rank's local host buffers. Counts are in elements; `count`
  // is what each rank contributes or receives per rank. send may equal recv (in place) where
  // the shapes allow it (broadcast, allreduce, reduce, allgather with send at recv + rank×count).
  // On device buffers (the root team's device heap): one kernel on the team's stream (SetStream)
  // reads the peers' device heaps in place. Every rank passes the same heap offsets for the
  // buffers others read (send; recv too for an allreduce in place or above the one-shot limit); a
  // recv that only its own rank writes may be any memory of the heap's GPU. MISMATCH on every rank
  // when they differ; a device buffer next to a host buffer is INVALID_ARGUMENT.
  // Above the one-shot limit, when every rank's buffers that the others read lie in its heap
  // (Malloc, Local) and every peer is mapped, the ranks read each other's buffers in place:
  // two or three rounds whatever the size, each byte copied once (Plan's heap_algorithm).
  Status Broadcast(void* buf, uint64_t count, DType dtype, uint32_t root, OptDeadline deadline = std::nullopt);
  Status Scatter(const void* send, void* recv, uint64_t count, DType dtype, uint32_t root,
                 OptDeadline deadline = std::nullopt);  // send: size×count at root
  Status Gather(const void* send, void* recv, uint64_t count, DType dtype, uint32_t root,
                OptDeadline deadline = std::nullopt);   // recv: size×count at root
  Status AllGather(const void* send, void* recv, uint64_t count, DType dtype,
                   OptDeadline deadline = std::nullopt);  // recv: size×count
  Status Reduce(const void* send, void* recv, uint64_t count, DType dtype, ReduceOp op, uint32_t root,
                OptDeadline deadline = std::nullopt);
  Status ReduceScatter(const void* send, void* recv, uint64_t count, DType dtype, ReduceOp op,
                       OptDeadline deadline = std::nullopt);  // send: size×count
  Status AllReduce(const void* send, void* recv, uint64_t count, DType dtype, ReduceOp op,
                   OptDeadline deadline = std::nullopt);
  Status AllToAll(const void* send, void* recv, uint64_t count, DType dtype,
                  OptDeadline deadline = std::nullopt);  // send and recv: size×count

  // What an allreduce (or another collective by name) of `bytes` per rank would run.
  CollectivePlan Plan(std::string_view collective, uint64_t bytes) const;
  TeamStats stats() const;

  struct Impl;

 private:
  explicit Team(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::symm
