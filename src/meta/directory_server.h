// DirectoryServer: serves a MemoryStore over HTTP/JSON (net::HttpServer: one event loop, one
// thread), for `weft meta` and for a peer that hosts the directory of its pool. Two APIs on one port (docs/directory.md):
//
//  - weft's own:   POST /v1/kv/{get,put,put_if_absent,delete,list}, /v1/lease/{grant,keepalive,
//                  revoke}, /v1/watch (long-poll by revision); JSON bodies, keys and values in
//                  base64. EmbeddedDirectory is its client.
//  - Mooncake's:   GET|PUT|DELETE /metadata?key=K with the raw value as the body, answering as
//                  Mooncake's reference metadata servers do (200, 404 "metadata not found",
//                  400 for a missing key), so Mooncake deployments can point at weft.
//
// Who may write (docs/directory.md, "Who may write"): with a cluster secret, only a request that
// proves it (401 otherwise); whatever the secret, a key held under a lease only by a request
// that names the lease (403 otherwise), Mooncake's lease-less PUT/DELETE included.
//
// Malformed requests get 400 (413 for a body over max_body, whatever its content type) with a
// reason, and the server goes on serving. Handlers run on the server's loop thread (the store
// never blocks); a watch with nothing to tell yet is parked until an event or its wait_ms,
// holding no thread. Connection limits and timeouts: net/http_server.h, docs/directory.md.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "meta/memory_store.h"
#include "net/http_server.h"

namespace weft::meta {

// One request of the JSON API, decoded. Pure data, so the decoder can be fuzzed.
struct DirectoryRequest {
  enum class Op { kGet, kPut, kPutIfAbsent, kDelete, kList, kGrant, kKeepAlive, kRevoke, kWatch };
  Op op = Op::kGet;
  std::string key;      // get, put, put_if_absent, delete
  std::string value;    // put, put_if_absent
  std::string prefix;   // list, watch
  LeaseId lease = 0;    // put, put_if_absent, delete (0: none), keepalive, revoke
  int64_t ttl_ms = 0;   // grant: > 0
  int64_t since = -1;   // watch: events after this revision; -1: only tell the current revision
  int64_t wait_ms = 0;  // watch: how long to wait for an event, 0..kMaxWatchWaitMs

  bool operator==(const DirectoryRequest&) const = default;
};

inline constexpr int64_t kMaxWatchWaitMs = 10000;
inline constexpr size_t kMaxDirectoryBody = 16u << 20;

// The URL path of an op ("/v1/kv/get").
std::string_view DirectoryRequestPath(DirectoryRequest::Op op);
// Decodes a request of the JSON API. NOT_FOUND for a path that is not one of the API (so the
// server answers 404), INVALID_ARGUMENT for another method than POST, PROTOCOL for a body that
// is not the JSON object the op needs (unknown fields are errors too: a typo must not pass as
// a default).
Result<DirectoryRequest> DecodeDirectoryRequest(std::string_view method, std::string_view path,
                                                std::string_view body);
// The body EmbeddedDirectory sends (POST to DirectoryRequestPath(request.op)).
std::string EncodeDirectoryRequest(const DirectoryRequest& request);
// Whether an op changes the directory (put, put_if_absent, delete, the lease calls): those are
// the ones a server with a cluster secret wants proven (meta/directory_auth.h).
bool DirectoryOpMutates(DirectoryRequest::Op op);

struct DirectoryServerOptions {
  std::string bind = "127.0.0.1:0";  // host:port; port 0 picks a free one (see port())
  size_t max_body = kMaxDirectoryBody;
  // When set, every request that changes the directory (the JSON API's put, put_if_absent,
  // delete and lease calls; Mooncake's PUT and DELETE) must prove it (X-Weft-Auth, see
  // meta/directory_auth.h): 401 otherwise. Reads stay open. Never logged.
  std::string cluster_secret;
  // How far a proof's timestamp may be from this server's clock (also how long its nonce is
  // remembered to refuse a replay).
  std::chrono::milliseconds auth_max_skew{60000};
  // Serve reads only (a p2p peer's endpoint: its owner writes in-process); writes get 403.
  bool read_only = false;
  // Timeouts, connection caps and the metrics registry (net/http_server.h); its bind and
  // max_body are the two above, its name (the metrics' server label) "directory" by default.
  net::HttpServerOptions http;
};

class DirectoryServer {
 public:
  // Binds and starts serving on a thread. store: the store to serve (shared with in-process
  // users, as p2p does); a fresh one when null. UNAVAILABLE when the address cannot be bound.
  static Result<std::unique_ptr<DirectoryServer>> Start(DirectoryServerOptions options,
                                                        std::shared_ptr<MemoryStore> store = nullptr);
  ~DirectoryServer();  // Stop()
  DirectoryServer(const DirectoryServer&) = delete;
  DirectoryServer& operator=(const DirectoryServer&) = delete;

  // Stops accepting, closes every connection (waiting watches too), joins the thread. Idempotent.
  void Stop();

  const std::string& host() const;
  uint16_t port() const;
  std::string address() const;  // host:port
  const std::shared_ptr<MemoryStore>& store() const;

  struct Impl;

 private:
  explicit DirectoryServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::meta
