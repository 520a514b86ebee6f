// A submitted copy or batch: its pieces, its per-entry results and its completion. Runners
// (pool threads, and the caller of a synchronous copy) claim pieces until none is left.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "base/clock.h"
#include "base/status.h"
#include "engine/copy_failures.h"
#include "gva/segment_table.h"
#include "transport/transport.h"

namespace weft::engine {

struct Piece {
  size_t entry;
  transport::Transport* path;
  transport::Endpoint dst;
  transport::Endpoint src;
  uint64_t len;
};

class CopyJob {
 public:
  CopyJob(size_t entries, Deadline deadline) : results_(entries), deadline_(deadline) {}

  // Set-up, before the job is shared with runners. Consecutive pieces on a path that batches
  // (cuda) form one group, handed to the transport at once (one kernel launch for a KV batch);
  // every other piece is a group of its own.
  void AddPiece(const Piece& p);
  void KeepPinned(gva::SegmentTable::Pin pin) { pins_.push_back(std::move(pin)); }
  // Anything else the pieces' endpoints point into (a peer's imported regions) until the job ends.
  void KeepAlive(std::shared_ptr<const void> keep) { keep_.push_back(std::move(keep)); }
  void Fail(size_t entry, Status s) { results_[entry] = std::move(s); }
  // Where the job's failed entries are counted when it completes (the engine's; may be null).
  void CountFailuresIn(CopyFailures* failures) { failures_ = failures; }
  size_t piece_count() const { return groups_.size(); }  // units runners claim

  // Claims and copies pieces until none is left; the runner that finishes the last one
  // completes the job. Safe to call from any number of threads.
  void Run();

  bool done() const { return done_.load(std::memory_order_acquire); }
  // False on deadline (the job keeps running; results are then not final).
  bool WaitUntil(Deadline deadline);
  const std::vector<Status>& results() const { return results_; }  // final once done()

 private:
  void Finish();
  void RunGroup(size_t g);
  struct Group {
    size_t begin;
    size_t end;
  };
  static constexpr size_t kMaxGroup = 1 << 20;  // pieces per batched group
  std::vector<Piece> pieces_;
  std::vector<Group> groups_;
  std::vector<gva::SegmentTable::Pin> pins_;
  std::vector<std::shared_ptr<const void>> keep_;
  std::vector<Status> results_;
  CopyFailures* failures_ = nullptr;
  Deadline deadline_;
  std::atomic<size_t> next_{0};
  std::atomic<size_t> finished_{0};
  std::atomic<bool> done_{false};
  std::mutex mu_;  // guards results_ writes from runners, and the completion signal
  std::condition_variable cv_;
};

}  // namespace weft::engine
