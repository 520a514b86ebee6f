// EtcdDirectory: etcd v3 through its gRPC JSON gateway (URL etcd://host:port[,host:port...]),
// for production and HA. No gRPC or etcd client library: each call is one HTTP POST to
// /v3/kv/range, /v3/kv/put, /v3/kv/deleterange, /v3/kv/txn, /v3/lease/{grant,keepalive,revoke},
// with keys and values in base64 and 64-bit numbers as JSON strings, as the gateway wants. A
// watch is a thread holding a streaming POST /v3/watch. Tested against Debian's etcd-server 3.4.
//
// With several endpoints a call that finds one unreachable tries the next, while its deadline
// lasts; the last endpoint that answered is tried first.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "meta/directory.h"

namespace weft::meta {

class EtcdDirectory : public Directory {
 public:
  // endpoints: "host:port" each (already validated by OpenDirectory).
  EtcdDirectory(std::vector<std::pair<std::string, uint16_t>> endpoints, DirectoryOptions options);
  ~EtcdDirectory() override;
  std::string Describe() const override;

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
  Status DoCommit(std::span<const DirectoryWrite> writes, const WriteGuard& guard, Deadline d) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The smallest key greater than every key with this prefix (etcd's range_end for a prefix);
// "\0" (meaning "to the end") when there is none, and for the empty prefix.
std::string PrefixRangeEnd(const std::string& prefix);

}  // namespace weft::meta
