// P2PDirectory: no directory service at all (URL p2p, P2PHANDSHAKE or p2p://host:port), the
// way Mooncake's P2PHANDSHAKE mode works and vLLM/SGLang deploy it. Each peer keeps its own keys
// in a MemoryStore and serves them on a small HTTP endpoint (a DirectoryServer, so GET
// /metadata?key= works there too); its name is that endpoint, "host:port".
//
// Keys "<host:port>/<rest>" (directory.h) belong to peer host:port: Get fetches "<rest>" from it
// on first use and caches the value for DirectoryOptions::p2p_cache_ttl; a failed fetch drops
// the cached value. Every other key (and "<own name>/<rest>") is local. Put, Delete and
// PutIfAbsent work on local keys only. List, Watch and leases need a shared directory and are
// NOT_SUPPORTED: use embedded:// or etcd:// for membership.
#pragma once

#include <memory>
#include <string>

#include "meta/directory.h"

namespace weft::meta {

class P2PDirectory : public Directory {
 public:
  // Binds the endpoint ("host:port", port 0 for any). UNAVAILABLE when it cannot bind.
  static Result<std::unique_ptr<P2PDirectory>> Open(const std::string& bind, DirectoryOptions options);
  ~P2PDirectory() override;
  std::string Describe() const override;

  // This peer's name: the "host:port" its endpoint listens on (what others put in keys).
  const std::string& PeerName() const;
  // Drops cached values: of one key ("<host:port>/<rest>"), or of every key of a peer when
  // given "<host:port>". Call it when a fetched descriptor turned out stale.
  void Forget(const std::string& key_or_peer);

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
  explicit P2PDirectory(std::unique_ptr<Impl> impl, DirectoryOptions options);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::meta
