// Pipelined staging of device memory through host bounce buffers, for a network path that cannot
// reach GPU memory itself (tcp: a socket cannot send from or receive into it): the bytes of a
// device end pass through host memory, and the copy between device and host of one part overlaps
// the network transfer of another. The network side is a callback (NetworkRound), so any
// transport that stages shares this (tcp's is transport/tcp/tcp_staging.h):
//   WRITE (device -> network): while round k of bounce buffers is on the network, the
//     device -> host copy of round k+1 runs on one of the pipeline's copy threads (a WorkerPool
//     made on first use and kept: no thread is started per transfer);
//   READ (network -> device): while round k+1 is being received, the host -> device copy of
//     round k runs.
// Memory is bounded: a BouncePool owns at most max_buffers buffers of slice_bytes each (pinned
// when the allocator pins: cudaHostAlloc, so the copy engine DMAs straight from them), allocated
// on first use and reused; a pipeline run holds `buffers` of them for its duration, whatever the
// request sizes. Small requests are packed into one buffer (a batch of 16 KiB pages needs no
// buffer per page).
//
// Nothing here knows CUDA: the allocator and the copy are injected (DeviceStagingOps), so that
// CPU tests use a stand-in device and weft_transport does not link CUDA; the CUDA versions are in
// mem/cuda/host_device_copy.h (CudaStagingOps in api code).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "base/worker_pool.h"

namespace weft::transport {

// Host memory for bounce buffers. Unset: plain (pageable) memory from operator new.
struct HostBufferAllocator {
  std::function<Result<void*>(uint64_t bytes)> alloc;
  std::function<void(void* p, uint64_t bytes)> free;
};

// How staging reaches device memory. `copy` moves len bytes between host and device memory,
// either way (cudaMemcpyDefault semantics), synchronously; it may be called from one of the
// pipeline's copy threads while the calling thread drives the network.
struct DeviceStagingOps {
  std::function<Status(void* dst, const void* src, uint64_t len)> copy;
  HostBufferAllocator host;
  explicit operator bool() const { return static_cast<bool>(copy); }
};

// A bounded set of equal host buffers, allocated on first use and kept until the pool goes.
// Thread-safe. Acquire takes several buffers at once or none (so two waiters can never each hold
// part of what the other needs).
class BouncePool {
 public:
  BouncePool(uint64_t buffer_bytes, size_t max_buffers, HostBufferAllocator alloc);
  ~BouncePool();  // every lease must have been returned
  BouncePool(const BouncePool&) = delete;
  BouncePool& operator=(const BouncePool&) = delete;

  // `count` buffers (1 .. max_buffers), waiting for them until the deadline (TIMEOUT). An
  // allocation failure is returned as the allocator said (POOL_FULL for pinned memory exhausted).
  Result<std::vector<uint8_t*>> Acquire(size_t count, Deadline deadline);
  // One buffer if one is free or may still be allocated, else nullptr (never waits: for event
  // loops). An allocation failure gives nullptr too (the caller falls back to its own memory).
  uint8_t* TryAcquire();
  void Release(std::span<uint8_t* const> buffers);
  void Release(uint8_t* buffer) { Release(std::span<uint8_t* const>(&buffer, 1)); }

  uint64_t buffer_bytes() const { return buffer_bytes_; }
  size_t max_buffers() const { return max_buffers_; }
  struct Stats {
    size_t allocated = 0;  // buffers that exist
    size_t in_use = 0;     // buffers handed out and not yet released
    uint64_t acquired = 0; // buffers handed out since the start
  };
  Stats stats() const;

 private:
  // Makes `count` buffers available (mu_ held). False with *error set on allocation failure.
  bool Ensure(size_t count, Status* error);

  const uint64_t buffer_bytes_;
  const size_t max_buffers_;
  HostBufferAllocator alloc_;
  mutable std::mutex mu_;
  std::condition_variable freed_;
  std::vector<uint8_t*> all_;
  std::vector<uint8_t*> free_;
  uint64_t acquired_ = 0;
};

struct StagingOptions {
  uint64_t slice_bytes = 4u << 20;  // bytes per bounce buffer (4 KiB .. 64 MiB)
  size_t buffers = 4;               // buffers one run holds (>= 2 for any overlap); a network round
                                    // carries up to buffers / 2 of them, the copy works on the rest
  size_t max_buffers = 8;           // the pool's bound: at most max_buffers × slice_bytes of host memory
};

// One request whose local end is device memory.
struct StagedRequest {
  bool to_network = true;   // WRITE: device -> network; READ: network -> device
  uint8_t* device = nullptr;
  uint64_t len = 0;
};

// A part of a staged request in a bounce buffer: bytes [offset, offset + len) of request
// `request` are at `host`.
struct StagedPiece {
  size_t request = 0;
  uint64_t offset = 0;
  uint64_t len = 0;
  uint8_t* host = nullptr;
};

// Moves the pieces of one round over the network (WRITE: sends them; READ: receives them);
// returns one Status per piece, in order.
using NetworkRound = std::function<std::vector<Status>(std::span<const StagedPiece> pieces)>;

// Counts a run's rounds and copies, for tests and benchmarks.
struct StagingStats {
  uint64_t runs = 0;
  uint64_t rounds = 0;          // network rounds
  uint64_t overlapped_rounds = 0;  // rounds during which a device copy of another round was running
  uint64_t pieces = 0;
  uint64_t bytes = 0;
};

class StagingPipeline {
 public:
  // INVALID_ARGUMENT is deferred to Run: a pipeline with bad options fails every staged request.
  StagingPipeline(StagingOptions options, DeviceStagingOps ops);
  ~StagingPipeline();
  StagingPipeline(const StagingPipeline&) = delete;
  StagingPipeline& operator=(const StagingPipeline&) = delete;

  // Carries out the requests: WRITEs first, then READs, each pass pipelined; one Status per
  // request. A failed device copy fails its own request with the copy's error (its remaining
  // pieces are not sent, or not copied in); a failed piece on the network fails its request
  // with that error; the deadline passing fails what is left with TIMEOUT. Every bounce
  // buffer is back in the pool when Run returns.
  // `stats`, when given, is added this run's counts.
  std::vector<Status> Run(std::span<const StagedRequest> requests, const NetworkRound& net, Deadline deadline,
                          StagingStats* stats = nullptr);

  const DeviceStagingOps& ops() const { return ops_; }
  const StagingOptions& options() const { return options_; }
  BouncePool::Stats pool_stats() const { return pool_.stats(); }
  StagingStats stats() const;

 private:
  struct Pass;
  void RunPass(std::span<const StagedRequest> requests, bool to_network, const NetworkRound& net, Deadline deadline,
               std::vector<Status>& results, StagingStats& stats);

  StagingOptions options_;
  DeviceStagingOps ops_;
  Status invalid_;
  BouncePool pool_;
  mutable std::mutex stats_mu_;
  StagingStats stats_;
  WorkerPool& copiers();
  std::once_flag copiers_once_;
  std::unique_ptr<WorkerPool> copiers_;  // last: its threads finish before the members above go
};

}  // namespace weft::transport
