// MooncakeHttpDirectory: a client of Mooncake's HTTP metadata protocol (URL
// http://host:port/path, usually /metadata): GET|PUT|DELETE <path>?key=K with the raw value as
// the body, 200 on success and 404 for a missing key. It reaches Mooncake's reference servers
// (the Go one, `mooncake_http_metadata_server`, mooncake_master's) and weft's own
// DirectoryServer alike, so a transfer engine can share a deployment's metadata server.
//
// The protocol has no list, atomic create, leases or watches: those calls are NOT_SUPPORTED
// (use embedded:// or etcd:// where they are needed, e.g. for a pool's membership).
#pragma once

#include <memory>
#include <string>

#include "meta/directory.h"

namespace weft::meta {

class MooncakeHttpDirectory : public Directory {
 public:
  MooncakeHttpDirectory(std::string host, uint16_t port, std::string path, DirectoryOptions options);
  ~MooncakeHttpDirectory() override;
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

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::meta
