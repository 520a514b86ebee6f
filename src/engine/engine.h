// The copy engine: takes copies between local pointers and GVAs, classifies both ends, picks
// the cheapest transport that serves them, splits large copies across worker threads, and
// reports one result per copy. Paths are observable: Route() explains the choice, and with
// log_paths every copy logs its path.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/metrics.h"
#include "base/result.h"
#include "engine/copy_job.h"
#include "engine/worker_pool.h"
#include "gva/segment_table.h"
#include "transport/transport.h"

namespace weft::engine {

// The direction a caller states, or kAuto to infer it from the addresses.
enum class Direction : uint8_t { kAuto = 0, kLH2LH, kLH2GH, kGH2LH, kGH2GH };
const char* DirectionName(Direction d);
Result<Direction> ParseDirection(const std::string& text);  // "GH2LH", "auto", ...

struct CopyRequest {
  uint64_t dst;  // a GVA of the pool, or a local pointer cast to uint64_t
  uint64_t src;
  uint64_t len;
};

struct RouteInfo {
  transport::EndKind src_kind;
  transport::EndKind dst_kind;
  transport::Locality locality;
  std::string path;    // transport name
  std::string reason;  // why that path
  std::string ToString() const;
};

class CopyHandle {
 public:
  CopyHandle() = default;
  explicit CopyHandle(std::shared_ptr<CopyJob> job) : job_(std::move(job)) {}
  // Completion of every copy in the handle: the first failure, OK, or TIMEOUT if not done by
  // the deadline (the copy then goes on; wait again or poll).
  Status Wait(Deadline deadline = Deadline::Never()) const;
  // nullopt while running.
  std::optional<Status> Poll() const;
  // One result per copy, final once Poll() has a value.
  std::vector<Status> Results() const;
  bool valid() const { return job_ != nullptr; }

 private:
  std::shared_ptr<CopyJob> job_;
};

struct EngineOptions {
  uint32_t threads = 4;           // participants in a split copy
  uint64_t split_bytes = 8 << 20; // copies at least this large are split
  bool log_paths = false;
};

class Engine {
 public:
  Engine(EngineOptions options, const gva::SegmentTable& table, MetricsRegistry& metrics);
  ~Engine();

  Status Copy(uint64_t dst, uint64_t src, uint64_t len, Direction dir = Direction::kAuto,
              Deadline deadline = Deadline::Never());
  // Errors found at submission (bad address, dead peer) are reported by the handle.
  CopyHandle CopyAsync(uint64_t dst, uint64_t src, uint64_t len, Direction dir = Direction::kAuto,
                       Deadline deadline = Deadline::Never());
  // One result per request, in order.
  std::vector<Status> CopyBatch(std::span<const CopyRequest> requests, Direction dir = Direction::kAuto,
                                Deadline deadline = Deadline::Never());
  CopyHandle CopyBatchAsync(std::span<const CopyRequest> requests, Direction dir = Direction::kAuto,
                            Deadline deadline = Deadline::Never());
  // The path a copy would take and why, without copying.
  Result<RouteInfo> Route(uint64_t dst, uint64_t src, uint64_t len, Direction dir = Direction::kAuto) const;

  const EngineOptions& options() const { return options_; }

 private:
  struct Resolved;
  Result<Resolved> Resolve(const CopyRequest& r, Direction dir) const;
  std::shared_ptr<CopyJob> Plan(std::span<const CopyRequest> requests, Direction dir, Deadline deadline);
  void Start(const std::shared_ptr<CopyJob>& job, bool caller_helps);
  transport::Transport* Choose(const transport::RouteKey& key, uint64_t len) const;

  EngineOptions options_;
  const gva::SegmentTable& table_;
  std::vector<std::unique_ptr<transport::Transport>> transports_;
  WorkerPool pool_;
  Counter* copies_;
  Counter* bytes_;
  Counter* failures_;
  Histogram* latency_ns_;
};

}  // namespace weft::engine
