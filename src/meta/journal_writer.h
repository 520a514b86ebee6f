// Keeps keys of a directory equal to what a leader says they are, in the background and only
// while it leads: the writer behind the store master's HA state (bm/pool_state.h).
//
// Set and Erase return at once; a thread commits the changes in guarded batches
// (Directory::Commit), so a master that has lost its leader key can write nothing more. Changes
// to one key coalesce while they wait (only the last value goes), and a key's changes land in the
// order they were made. A failed batch (etcd unreachable) is retried until it lands, the guard
// fails, or the writer stops; a failed guard stops the writer for good (lost()).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "base/clock.h"
#include "base/metrics.h"
#include "base/status.h"
#include "meta/directory.h"

namespace weft::meta {

struct JournalWriterOptions {
  WriteGuard guard;                              // e.g. the leader key and the leader's lease
  std::chrono::milliseconds retry_delay{100};    // after a batch failed for a reason other than the guard
  std::chrono::milliseconds drain{2000};         // how long the destructor tries to commit what waits
  MetricsRegistry* metrics = nullptr;            // weft_ha_journal_* (docs/ops.md); private when null
};

class JournalWriter {
 public:
  // `directory` outlives the writer.
  JournalWriter(Directory& directory, JournalWriterOptions options);
  // Commits what is still waiting for up to options.drain (a leader stopping cleanly), then stops.
  ~JournalWriter();
  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;

  void Set(std::string key, std::string value);
  void Erase(std::string key);
  // Waits until every change made before the call is in the directory: OK, the guard's
  // PERMISSION_DENIED once lost, or TIMEOUT at the deadline.
  Status Flush(Deadline deadline);
  // Changes made and not yet committed (distinct keys).
  uint64_t backlog() const;
  // OK while the guard holds; the refusal once it did not.
  Status lost() const;

 private:
  using Batch = std::map<std::string, std::optional<std::string>>;
  void Record(std::string key, std::optional<std::string> value);
  void Run();
  Status CommitBatch(const Batch& batch);
  Status CommitChunk(std::span<const DirectoryWrite> chunk);

  Directory& directory_;
  JournalWriterOptions options_;
  MetricsRegistry own_metrics_;
  Counter* commits_;
  Counter* writes_;
  Counter* failures_;
  Gauge* backlog_gauge_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Batch waiting_;            // the next batch; a key's later change replaces its earlier one
  uint64_t recorded_ = 0;    // changes made so far
  uint64_t committed_ = 0;   // changes made before the last batch that landed
  Status lost_ = OkStatus();
  bool stopping_ = false;
  Deadline stop_by_ = Deadline::Never();
  std::thread thread_;
};

}  // namespace weft::meta
