// The vocabulary of copies in the pool (public): where memory is placed, which way a copy goes,
// the handle of a copy in flight, and the path a copy takes. The engine that carries copies out
// is internal (src/engine/engine.h) and uses these same types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <weft/deadline.h>
#include <weft/status.h>

namespace weft::engine {
class CopyJob;  // opaque: the state of a copy in flight, shared by its handle and the workers
}

namespace weft {

// The memory of a pool slice: a peer's host DRAM or its GPU memory.
enum class Medium : uint8_t { kHost = 0, kDevice = 1 };

// Where Alloc takes memory from.
struct Placement {
  enum class Kind : uint8_t {
    kLocal = 0,   // the caller's own slice
    kRank = 1,    // the slice of `rank`
    kSpread = 2,  // the live slice with the most free bytes (balances the pool)
  };
  Kind kind = Kind::kLocal;
  uint32_t rank = 0;  // for kRank
  Medium medium = Medium::kHost;

  static Placement Local(Medium m = Medium::kHost) { return {Kind::kLocal, 0, m}; }
  static Placement OnRank(uint32_t r, Medium m = Medium::kHost) { return {Kind::kRank, r, m}; }
  static Placement Spread(Medium m = Medium::kHost) { return {Kind::kSpread, 0, m}; }
};

// The direction a caller states, or kAuto to infer it from the addresses. The twelve of
// memfabric (LH/LD to and from GH/GD, and GH/GD among themselves), plus the four between local
// pointers (LH2LH, LH2LD, LD2LH, LD2LD) that a memcpy-like call is also asked to do. Values are
// stable (C API); new ones are appended.
enum class Direction : uint8_t {
  kAuto = 0,
  kLH2LH, kLH2GH, kGH2LH, kGH2GH,  // host only (the first four, kept as they were)
  kLH2GD, kLD2GH, kLD2GD, kGH2GD, kGH2LD, kGD2GH, kGD2GD, kGD2LH, kGD2LD,  // with device ends
  kLH2LD, kLD2LH, kLD2LD,  // local pointers with a device end
};

struct CopyRequest {
  uint64_t dst;  // a GVA of the pool, or a local pointer cast to uint64_t
  uint64_t src;
  uint64_t len;
};

// The four kinds of copy endpoint (DESIGN.md): local host/device pointer, global host/device.
enum class EndKind : uint8_t { kLH = 0, kLD = 1, kGH = 2, kGD = 3 };
// Where the farther of the two ends lives, seen from the calling peer.
enum class Locality : uint8_t { kSameProcess = 0, kSameNode = 1, kRemoteNode = 2 };

// The path a copy would take (Pool::Route) and why.
struct RouteInfo {
  EndKind src_kind;
  EndKind dst_kind;
  Locality locality;
  std::string path;    // transport name
  std::string reason;  // why that path
  std::string ToString() const;
};

// A copy in flight (Pool::CopyAsync). Copies of the handle refer to the same copy.
class CopyHandle {
 public:
  CopyHandle() = default;
  explicit CopyHandle(std::shared_ptr<engine::CopyJob> job) : job_(std::move(job)) {}
  // A completed handle whose `copies` results are all `status` (for copies refused up front).
  static CopyHandle Failed(size_t copies, const Status& status);
  // Completion of every copy in the handle: the first failure, OK, or TIMEOUT if not done by
  // the deadline (the copy then goes on; wait again or poll).
  Status Wait(Deadline deadline = Deadline::Never()) const;
  // nullopt while running.
  std::optional<Status> Poll() const;
  // One result per copy, final once Poll() has a value.
  std::vector<Status> Results() const;
  bool valid() const { return job_ != nullptr; }

 private:
  std::shared_ptr<engine::CopyJob> job_;
};

}  // namespace weft
