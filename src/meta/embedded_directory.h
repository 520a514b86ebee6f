// EmbeddedDirectory: the client of a DirectoryServer (URL embedded://host:port). Every call is one
// HTTP request on a fresh connection whose timeouts come from the call's deadline, so a dead
// or restarted server costs a call UNAVAILABLE (or TIMEOUT), never a hang, and the next call
// after the server is back simply works. A watch is a thread that long-polls /v1/watch.
#pragma once

#include <memory>
#include <string>

#include "meta/directory.h"

namespace weft::meta {

class EmbeddedDirectory : public Directory {
 public:
  EmbeddedDirectory(std::string host, uint16_t port, DirectoryOptions options);
  ~EmbeddedDirectory() override;
  std::string Describe() const override;

  // How long one watch poll waits on the server for an event.
  static constexpr int64_t kWatchWaitMs = 1000;

 protected:
  Result<std::string> DoGet(const std::string& key, Deadline d) override;
  Status DoPut(const std::string& key, const std::string& value, LeaseId lease, Deadline d) override;
  Status DoDelete(const std::string& key, LeaseId lease, Deadline d) override;
  Result<KeyValues> DoList(const std::string& prefix, Deadline d) override;
  Result<bool> DoPutIfAbsent(const std::string& key, const std::string& value, LeaseId lease, Deadline d) override;
  Result<LeaseId> DoGrant(std::chrono::milliseconds ttl, Deadline d) override;
  Status DoKeepAlive(LeaseId lease, Deadline d) override;
  Status DoRevoke(LeaseId lease, Deadline d) override;
  Result<WatchHandle> DoWatch(const std::string& prefix, WatchCallback callback, Deadline d) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::meta
