#include "engine/copy_job.h"

namespace weft::engine {

void CopyJob::Run() {
  if (pieces_.empty()) {
    Finish();
    return;
  }
  for (;;) {
    size_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= pieces_.size()) return;
    const Piece& p = pieces_[i];
    Status s;
    if (deadline_.expired()) {
      s = Error(Code::kTimeout, "copy {}: the deadline passed before {} of its bytes were copied; "
                "the destination is incomplete", p.entry, p.len);
    } else {
      s = p.path->Copy(p.dst, p.src, p.len);
    }
    if (!s.ok()) {
      std::lock_guard lock(mu_);
      if (results_[p.entry].ok()) results_[p.entry] = std::move(s);
    }
    if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == pieces_.size()) Finish();
  }
}

void CopyJob::Finish() {
  // Unpin before waking waiters so a peer's detach does not wait on finished copies.
  pins_.clear();
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
