#include "meta/journal_writer.h"

#include <algorithm>
#include <vector>

#include "base/log.h"

namespace weft::meta {

JournalWriter::JournalWriter(Directory& directory, JournalWriterOptions options)
    : directory_(directory), options_(std::move(options)) {
  MetricsRegistry& m = options_.metrics ? *options_.metrics : own_metrics_;
  commits_ = m.counter("weft_ha_journal_commits_total", "Batches of HA state changes committed to the directory");
  writes_ = m.counter("weft_ha_journal_writes_total", "Keys of HA state written or deleted in the directory");
  failures_ = m.counter("weft_ha_journal_failures_total", "Batches of HA state the directory refused or missed");
  backlog_gauge_ = m.gauge("weft_ha_journal_backlog", "HA state changes made and not yet in the directory");
  thread_ = std::thread([this] { Run(); });
}

JournalWriter::~JournalWriter() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    stop_by_ = Deadline::After(options_.drain);
    cv_.notify_all();
  }
  thread_.join();
}

void JournalWriter::Set(std::string key, std::string value) { Record(std::move(key), std::move(value)); }

void JournalWriter::Erase(std::string key) { Record(std::move(key), std::nullopt); }

void JournalWriter::Record(std::string key, std::optional<std::string> value) {
  std::lock_guard lock(mu_);
  if (!lost_.ok()) return;  // a deposed leader's changes go nowhere
  waiting_[std::move(key)] = std::move(value);
  ++recorded_;
  backlog_gauge_->Set(static_cast<int64_t>(waiting_.size()));
  cv_.notify_all();
}

Status JournalWriter::Flush(Deadline deadline) {
  std::unique_lock lock(mu_);
  const uint64_t target = recorded_;
  auto done = [&] { return committed_ >= target || !lost_.ok(); };
  if (deadline.never()) {
    cv_.wait(lock, done);
  } else if (!cv_.wait_until(lock, deadline.at(), done)) {
    return Error(Code::kTimeout, "{} HA state changes are not in {} yet", waiting_.size(), directory_.Describe());
  }
  return lost_;
}

uint64_t JournalWriter::backlog() const {
  std::lock_guard lock(mu_);
  return waiting_.size();
}

Status JournalWriter::lost() const {
  std::lock_guard lock(mu_);
  return lost_;
}

// Takes what waits as one batch and commits it; the changes made meanwhile wait for the next.
void JournalWriter::Run() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stopping_ || !waiting_.empty(); });
    if (waiting_.empty() || !lost_.ok()) return;
    Batch batch;
    batch.swap(waiting_);
    const uint64_t upto = recorded_;
    backlog_gauge_->Set(0);
    lock.unlock();
    Status s = CommitBatch(batch);
    lock.lock();
    if (s.code() == Code::kPermissionDenied) {
      lost_ = s;
      waiting_.clear();
      WEFT_LOG_ERROR("HA state: {}: this master no longer leads; its later changes are dropped", s.ToString());
    } else if (!s.ok()) {
      // Stopping with changes that never landed: say so; the next leader restores what is there.
      WEFT_LOG_ERROR("HA state: {} changes not written on stop: {}", batch.size(), s.ToString());
      return;
    }
    committed_ = upto;
    cv_.notify_all();
  }
}

// In chunks the directory takes at once; each chunk is retried until it lands, the guard fails,
// or the writer is stopping past its drain time.
Status JournalWriter::CommitBatch(const Batch& batch) {
  std::vector<DirectoryWrite> writes;
  writes.reserve(batch.size());
  for (const auto& [key, value] : batch) writes.push_back({key, value});
  std::span<const DirectoryWrite> all(writes);
  for (size_t at = 0; at < all.size(); at += Directory::kMaxCommitWrites) {
    WEFT_RETURN_IF_ERROR(CommitChunk(all.subspan(at, std::min(Directory::kMaxCommitWrites, all.size() - at))));
  }
  return OkStatus();
}

Status JournalWriter::CommitChunk(std::span<const DirectoryWrite> chunk) {
  while (true) {
    Status s = directory_.Commit(chunk, options_.guard);
    if (s.ok()) {
      commits_->Add();
      writes_->Add(chunk.size());
      return s;
    }
    failures_->Add();
    if (s.code() == Code::kPermissionDenied) return s;
    std::unique_lock lock(mu_);
    if (stopping_ && stop_by_.expired()) return s;
    WEFT_LOG_WARN("HA state: {} (retrying in {} ms)", s.ToString(), options_.retry_delay.count());
    cv_.wait_for(lock, options_.retry_delay, [&] { return stopping_ && stop_by_.expired(); });
  }
}

}  // namespace weft::meta
