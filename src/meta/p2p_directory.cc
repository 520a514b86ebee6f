#include "meta/p2p_directory.h"

#include <map>
#include <mutex>

#include "meta/directory_server.h"
#include "meta/http_call.h"
#include "meta/memory_store.h"

namespace weft::meta {

namespace {

Status NoSharedDirectory(const char* what) {
  return Error(Code::kNotSupported,
               "{} needs a shared directory, and p2p has none: open embedded://host:port or "
               "etcd://host:port for membership, leases and watches",
               what);
}

}  // namespace

struct P2PDirectory::Impl {
  std::shared_ptr<MemoryStore> local;
  std::unique_ptr<DirectoryServer> server;
  std::string name;

  struct Cached {
    std::string value;
    Clock::time_point fetched;
  };
  std::mutex mu;
  std::map<std::string, Cached> cache;  // by full key "<host:port>/<rest>"

  // Where a key lives: the owner's endpoint (nullopt for a local key) and the key at the owner.
  struct Route {
    std::optional<std::pair<std::string, uint16_t>> owner;
    std::string key;
  };
  Route Resolve(const std::string& key) const {
    auto slash = key.find('/');
    if (slash == std::string::npos || slash == 0) return {std::nullopt, key};
    std::string head = key.substr(0, slash);
    auto hp = ParseHostPort(head);
    if (!hp.ok() || hp->second == 0) return {std::nullopt, key};
    std::string rest = key.substr(slash + 1);
    if (head == name) return {std::nullopt, rest};
    return {*hp, rest};
  }
};

P2PDirectory::P2PDirectory(std::unique_ptr<Impl> impl, DirectoryOptions options)
    : Directory(std::move(options)), impl_(std::move(impl)) {}

P2PDirectory::~P2PDirectory() {
  if (impl_->server) impl_->server->Stop();
}

Result<std::unique_ptr<P2PDirectory>> P2PDirectory::Open(const std::string& bind, DirectoryOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->local = std::make_shared<MemoryStore>(options);
  DirectoryServerOptions so;
  so.bind = bind;
  so.http.name = "p2p";
  so.http.metrics = options.p2p_metrics;
  so.read_only = true;  // the owner writes its keys in-process; no one else may
  auto server = DirectoryServer::Start(so, impl->local);
  if (!server.ok()) return server.status().Annotate("p2p directory endpoint");
  impl->server = std::move(server).value();
  impl->name = impl->server->address();
  return std::unique_ptr<P2PDirectory>(new P2PDirectory(std::move(impl), std::move(options)));
}

std::string P2PDirectory::Describe() const { return "p2p://" + impl_->name; }
const std::string& P2PDirectory::PeerName() const { return impl_->name; }

void P2PDirectory::Forget(const std::string& key_or_peer) {
  std::lock_guard lk(impl_->mu);
  std::string peer_prefix = key_or_peer + "/";
  for (auto it = impl_->cache.begin(); it != impl_->cache.end();) {
    if (it->first == key_or_peer || it->first.compare(0, peer_prefix.size(), peer_prefix) == 0) {
      it = impl_->cache.erase(it);
    } else {
      ++it;
    }
  }
}

Result<std::string> P2PDirectory::DoGet(const std::string& key, Deadline d) {
  auto route = impl_->Resolve(key);
  if (!route.owner) return impl_->local->Get(route.key, d);
  {
    std::lock_guard lk(impl_->mu);
    auto it = impl_->cache.find(key);
    if (it != impl_->cache.end() && Clock::now() - it->second.fetched < options().p2p_cache_ttl) {
      return it->second.value;
    }
  }
  HttpTarget peer{route.owner->first, route.owner->second};
  auto reply = HttpCall(peer, "GET", "/metadata?key=" + UrlEncode(route.key), "", d, "p2p peer");
  if (!reply.ok() || reply->status != 200) {
    // The peer is gone or no longer has the key: whatever we cached from it is suspect.
    std::lock_guard lk(impl_->mu);
    impl_->cache.erase(key);
  }
  if (!reply.ok()) return reply.status();
  if (reply->status == 404) {
    return Error(Code::kNotFound, "peer {} has no key '{}'", peer.Address(), route.key);
  }
  if (reply->status != 200) {
    return Error(Code::kUnavailable, "peer {} answered HTTP {} for key '{}'", peer.Address(), reply->status,
                 route.key);
  }
  std::lock_guard lk(impl_->mu);
  impl_->cache[key] = Impl::Cached{reply->body, Clock::now()};
  return reply->body;
}

Status P2PDirectory::DoPut(const std::string& key, const std::string& value, LeaseId lease, Deadline d) {
  if (lease != 0) return NoSharedDirectory("a lease");
  auto route = impl_->Resolve(key);
  if (route.owner) {
    return Error(Code::kNotSupported, "p2p: key '{}' belongs to peer {}:{}; only its owner can put it", key,
                 route.owner->first, route.owner->second);
  }
  return impl_->local->Put(route.key, value, 0, d);
}

Status P2PDirectory::DoDelete(const std::string& key, LeaseId lease, Deadline d) {
  auto route = impl_->Resolve(key);
  if (route.owner) {
    return Error(Code::kNotSupported,
                 "p2p: key '{}' belongs to peer {}:{}; only its owner can delete it (Forget drops a cached copy)",
                 key, route.owner->first, route.owner->second);
  }
  return impl_->local->Delete(route.key, lease, d);
}

Result<KeyValues> P2PDirectory::DoList(const std::string&, Deadline) { return NoSharedDirectory("List"); }

Result<bool> P2PDirectory::DoPutIfAbsent(const std::string& key, const std::string& value, LeaseId lease,
                                         Deadline d) {
  if (lease != 0) return NoSharedDirectory("a lease");
  auto route = impl_->Resolve(key);
  if (route.owner) {
    return Error(Code::kNotSupported, "p2p: key '{}' belongs to peer {}:{}; only its owner can create it", key,
                 route.owner->first, route.owner->second);
  }
  return impl_->local->PutIfAbsent(route.key, value, 0, d);
}

Result<LeaseId> P2PDirectory::DoGrant(std::chrono::milliseconds, Deadline) { return NoSharedDirectory("a lease"); }
Status P2PDirectory::DoKeepAlive(LeaseId, Deadline) { return NoSharedDirectory("a lease"); }
Status P2PDirectory::DoRevoke(LeaseId, Deadline) { return NoSharedDirectory("a lease"); }
Result<WatchHandle> P2PDirectory::DoWatch(const std::string&, WatchCallback, Deadline) {
  return NoSharedDirectory("Watch");
}

}  // namespace weft::meta
