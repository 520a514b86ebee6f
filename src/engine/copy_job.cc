#include "engine/copy_job.h"

namespace weft::engine {

void CopyJob::AddPiece(const Piece& p) {
  pieces_.push_back(p);
  const size_t i = pieces_.size() - 1;
  if (p.path->batches() && !groups_.empty()) {
    Group& last = groups_.back();
    if (last.end == i && pieces_[last.begin].path == p.path && last.end - last.begin < kMaxGroup) {
      last.end = i + 1;
      return;
    }
  }
  groups_.push_back(Group{i, i + 1});
}

namespace {
Status Expired(const Piece& p) {
  return Error(Code::kTimeout, "copy {}: the deadline passed before {} of its bytes were copied; "
               "the destination is incomplete", p.entry, p.len);
}
}  // namespace

void CopyJob::RunGroup(size_t g) {
  const Group& group = groups_[g];
  if (group.end - group.begin == 1) {  // the common case, without allocating
    const Piece& p = pieces_[group.begin];
    Status s = deadline_.expired() ? Expired(p) : p.path->Copy(p.dst, p.src, p.len);
    if (!s.ok()) {
      std::lock_guard lock(mu_);
      if (results_[p.entry].ok()) results_[p.entry] = std::move(s);
    }
    return;
  }
  std::vector<Status> statuses(group.end - group.begin);
  if (deadline_.expired()) {
    for (size_t i = group.begin; i < group.end; ++i) statuses[i - group.begin] = Expired(pieces_[i]);
  } else {
    std::vector<transport::CopyItem> items;
    items.reserve(group.end - group.begin);
    for (size_t i = group.begin; i < group.end; ++i)
      items.push_back(transport::CopyItem{pieces_[i].dst, pieces_[i].src, pieces_[i].len});
    pieces_[group.begin].path->CopyBatch(items, statuses);
  }
  bool failed = false;
  for (const Status& s : statuses) failed = failed || !s.ok();
  if (!failed) return;
  std::lock_guard lock(mu_);
  for (size_t i = group.begin; i < group.end; ++i) {
    Status& s = statuses[i - group.begin];
    if (!s.ok() && results_[pieces_[i].entry].ok()) results_[pieces_[i].entry] = std::move(s);
  }
}

void CopyJob::Run() {
  if (pieces_.empty()) {
    Finish();
    return;
  }
  for (;;) {
    size_t g = next_.fetch_add(1, std::memory_order_relaxed);
    if (g >= groups_.size()) return;
    RunGroup(g);
    if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == groups_.size()) Finish();
  }
}

void CopyJob::Finish() {
  // Unpin before waking waiters so a peer's detach does not wait on finished copies.
  pins_.clear();
  if (failures_) failures_->CountAll(results_);  // final: every group has ended
  {
    std::lock_guard lock(mu_);
    done_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
}

bool CopyJob::WaitUntil(Deadline deadline) {
  std::unique_lock lock(mu_);
  if (deadline.never()) {
    cv_.wait(lock, [this] { return done(); });
    return true;
  }
  return cv_.wait_until(lock, deadline.at(), [this] { return done(); });
}

}  // namespace weft::engine
