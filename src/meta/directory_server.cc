#include "meta/directory_server.h"

#include <limits>
#include <map>
#include <mutex>
#include <set>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "meta/base64.h"
#include "meta/directory_auth.h"
#include "meta/http_call.h"

namespace weft::meta {

using json = nlohmann::json;
using Op = DirectoryRequest::Op;

namespace {

struct OpInfo {
  Op op;
  std::string_view path;
};
constexpr OpInfo kOps[] = {
    {Op::kGet, "/v1/kv/get"},           {Op::kPut, "/v1/kv/put"},
    {Op::kPutIfAbsent, "/v1/kv/put_if_absent"}, {Op::kDelete, "/v1/kv/delete"},
    {Op::kList, "/v1/kv/list"},         {Op::kGrant, "/v1/lease/grant"},
    {Op::kKeepAlive, "/v1/lease/keepalive"},    {Op::kRevoke, "/v1/lease/revoke"},
    {Op::kWatch, "/v1/watch"},
};

// The fields each op takes; anything else in the body is an error.
std::set<std::string> AllowedFields(Op op) {
  switch (op) {
    case Op::kGet: return {"key"};
    case Op::kDelete: return {"key", "lease"};
    case Op::kPut:
    case Op::kPutIfAbsent: return {"key", "value", "lease"};
    case Op::kList: return {"prefix"};
    case Op::kGrant: return {"ttl_ms"};
    case Op::kKeepAlive:
    case Op::kRevoke: return {"lease"};
    case Op::kWatch: return {"prefix", "since", "wait_ms"};
  }
  return {};
}

Result<std::string> B64Field(const json& j, const char* name, std::string_view path) {
  auto it = j.find(name);
  if (it == j.end()) return Error(Code::kProtocol, "{}: field '{}' is missing", path, name);
  if (!it->is_string()) return Error(Code::kProtocol, "{}: field '{}' must be a base64 string", path, name);
  auto decoded = Base64Decode(it->get_ref<const std::string&>());
  if (!decoded.ok()) return decoded.status().Annotate(fmt::format("{}: field '{}'", path, name));
  return decoded;
}

// An integer field in [lo, hi]; `fallback` when absent (nullopt: required).
Result<int64_t> IntField(const json& j, const char* name, std::string_view path, int64_t lo, int64_t hi,
                         std::optional<int64_t> fallback) {
  auto it = j.find(name);
  if (it == j.end()) {
    if (fallback) return *fallback;
    return Error(Code::kProtocol, "{}: field '{}' is missing", path, name);
  }
  int64_t v;
  if (it->is_number_unsigned()) {
    uint64_t u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) return Error(Code::kProtocol, "{}: field '{}' is out of range", path, name);
    v = static_cast<int64_t>(u);
  } else if (it->is_number_integer()) {
    v = it->get<int64_t>();
  } else {
    return Error(Code::kProtocol, "{}: field '{}' must be an integer", path, name);
  }
  if (v < lo || v > hi) {
    return Error(Code::kProtocol, "{}: field '{}' = {} is outside [{}, {}]", path, name, v, lo, hi);
  }
  return v;
}

constexpr int64_t kMaxLease = std::numeric_limits<int64_t>::max();
constexpr int64_t kMaxTtlMs = 7LL * 24 * 3600 * 1000;  // a week; anything longer is a bug

int HttpStatusOf(Code code) {
  switch (code) {
    case Code::kNotFound: return 404;
    case Code::kUnauthenticated: return 401;
    case Code::kPermissionDenied: return 403;
    case Code::kBusy: return 503;
    case Code::kInvalidArgument:
    case Code::kProtocol: return 400;
    case Code::kTimeout: return 504;
    case Code::kUnavailable: return 503;
    default: return 500;
  }
}

net::HttpResponse ErrorReply(const Status& s) {
  json body = {{"code", std::string(CodeName(s.code()))}, {"error", s.message()}};
  return {HttpStatusOf(s.code()), "application/json", body.dump()};
}

net::HttpResponse JsonReply(const json& body) { return {200, "application/json", body.dump()}; }

net::HttpResponse TextReply(int status, std::string text) { return {status, "text/plain", std::move(text)}; }

net::HttpResponse WatchReply(const MemoryStore::EventBatch& batch) {
  json events = json::array();
  for (const auto& e : batch.events) {
    events.push_back({{"type", e.event.kind == WatchEvent::Kind::kPut ? "put" : "delete"},
                      {"key", Base64Encode(e.event.key)},
                      {"value", Base64Encode(e.event.value)},
                      {"revision", e.revision}});
  }
  return JsonReply({{"instance", batch.instance},
                    {"revision", batch.revision},
                    {"compacted", batch.compacted},
                    {"events", std::move(events)}});
}

// The store never blocks, so its calls need no real deadline.
Deadline StoreDeadline() { return Deadline::After(std::chrono::seconds(1)); }

}  // namespace

std::string_view DirectoryRequestPath(Op op) {
  for (const auto& o : kOps) {
    if (o.op == op) return o.path;
  }
  return "/v1/unknown";
}

Result<DirectoryRequest> DecodeDirectoryRequest(std::string_view method, std::string_view path,
                                                std::string_view body) {
  const OpInfo* info = nullptr;
  for (const auto& o : kOps) {
    if (o.path == path) info = &o;
  }
  if (info == nullptr) return Error(Code::kNotFound, "no directory API at '{}'", path);
  if (method != "POST") return Error(Code::kInvalidArgument, "{} takes POST, not {}", path, method);
  if (body.size() > kMaxDirectoryBody) {
    return Error(Code::kProtocol, "{}: body of {} bytes is over the {} byte limit", path, body.size(),
                 kMaxDirectoryBody);
  }
  // No exceptions: a malformed body is an everyday event on a server, not an exceptional one.
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Error(Code::kProtocol, "{}: body is not valid JSON", path);
  if (!j.is_object()) return Error(Code::kProtocol, "{}: body must be a JSON object", path);
  auto allowed = AllowedFields(info->op);
  for (const auto& [k, v] : j.items()) {
    if (allowed.count(k) == 0) return Error(Code::kProtocol, "{}: unknown field '{}'", path, k);
  }

  DirectoryRequest r;
  r.op = info->op;
  switch (r.op) {
    case Op::kGet: {
      WEFT_ASSIGN_OR_RETURN(r.key, B64Field(j, "key", path));
      break;
    }
    case Op::kDelete: {
      WEFT_ASSIGN_OR_RETURN(r.key, B64Field(j, "key", path));
      WEFT_ASSIGN_OR_RETURN(r.lease, IntField(j, "lease", path, 0, kMaxLease, 0));
      break;
    }
    case Op::kPut:
    case Op::kPutIfAbsent: {
      WEFT_ASSIGN_OR_RETURN(r.key, B64Field(j, "key", path));
      WEFT_ASSIGN_OR_RETURN(r.value, B64Field(j, "value", path));
      WEFT_ASSIGN_OR_RETURN(r.lease, IntField(j, "lease", path, 0, kMaxLease, 0));
      break;
    }
    case Op::kList: {
      WEFT_ASSIGN_OR_RETURN(r.prefix, B64Field(j, "prefix", path));
      break;
    }
    case Op::kGrant: {
      WEFT_ASSIGN_OR_RETURN(r.ttl_ms, IntField(j, "ttl_ms", path, 1, kMaxTtlMs, std::nullopt));
      break;
    }
    case Op::kKeepAlive:
    case Op::kRevoke: {
      WEFT_ASSIGN_OR_RETURN(r.lease, IntField(j, "lease", path, 1, kMaxLease, std::nullopt));
      break;
    }
    case Op::kWatch: {
      WEFT_ASSIGN_OR_RETURN(r.prefix, B64Field(j, "prefix", path));
      WEFT_ASSIGN_OR_RETURN(r.since, IntField(j, "since", path, -1, std::numeric_limits<int64_t>::max(), -1));
      WEFT_ASSIGN_OR_RETURN(r.wait_ms, IntField(j, "wait_ms", path, 0, kMaxWatchWaitMs, 0));
      break;
    }
  }
  return r;
}

bool DirectoryOpMutates(Op op) {
  switch (op) {
    case Op::kPut:
    case Op::kPutIfAbsent:
    case Op::kDelete:
    case Op::kGrant:
    case Op::kKeepAlive:
    case Op::kRevoke: return true;
    case Op::kGet:
    case Op::kList:
    case Op::kWatch: return false;
  }
  return true;
}

std::string EncodeDirectoryRequest(const DirectoryRequest& r) {
  json j = json::object();
  switch (r.op) {
    case Op::kGet: j["key"] = Base64Encode(r.key); break;
    case Op::kDelete:
      j["key"] = Base64Encode(r.key);
      j["lease"] = r.lease;
      break;
    case Op::kPut:
    case Op::kPutIfAbsent:
      j["key"] = Base64Encode(r.key);
      j["value"] = Base64Encode(r.value);
      j["lease"] = r.lease;
      break;
    case Op::kList: j["prefix"] = Base64Encode(r.prefix); break;
    case Op::kGrant: j["ttl_ms"] = r.ttl_ms; break;
    case Op::kKeepAlive:
    case Op::kRevoke: j["lease"] = r.lease; break;
    case Op::kWatch:
      j["prefix"] = Base64Encode(r.prefix);
      j["since"] = r.since;
      j["wait_ms"] = r.wait_ms;
      break;
  }
  return j.dump();
}

struct DirectoryServer::Impl {
  DirectoryServerOptions options;
  std::shared_ptr<MemoryStore> store;
  std::unique_ptr<DirectoryAuthenticator> auth;  // null: no cluster secret
  std::unique_ptr<net::HttpServer> http;
  uint64_t listener = 0;
  std::atomic<bool> wake_posted{false};
  std::mutex stop_mu;
  bool stopped = false;

  // Watches waiting for an event, by ticket; touched only on the loop's thread.
  struct ParkedWatch {
    std::string prefix;
    int64_t since;
  };
  std::map<net::HttpTicket, ParkedWatch> parked;

  net::HttpOutcome Route(const net::HttpRequest& request, net::HttpTicket ticket);
  net::HttpOutcome ServeApi(const net::HttpRequest& request, net::HttpTicket ticket);
  net::HttpResponse Serve(const DirectoryRequest& r);
  net::HttpOutcome Watch(const DirectoryRequest& r, net::HttpTicket ticket);
  net::HttpResponse ServeMooncake(const net::HttpRequest& request);
  Status MayWrite(const net::HttpRequest& request, std::string_view key);
  MemoryStore::EventBatch Poll(const std::string& prefix, int64_t since);
  void OnRevision();
  void AnswerParked();
};

net::HttpOutcome DirectoryServer::Impl::Route(const net::HttpRequest& request, net::HttpTicket ticket) {
  if (request.path.starts_with("/v1/")) return ServeApi(request, ticket);
  if (request.path == "/metadata") return ServeMooncake(request);
  return TextReply(404, "no such endpoint: " + request.path);
}

net::HttpOutcome DirectoryServer::Impl::ServeApi(const net::HttpRequest& request, net::HttpTicket ticket) {
  auto r = DecodeDirectoryRequest(request.method, request.path, request.body);
  if (!r.ok()) {
    net::HttpResponse reply = ErrorReply(r.status());
    if (r.status().code() == Code::kInvalidArgument) reply.status = 405;  // wrong method
    return reply;
  }
  if (r->op == Op::kWatch) return Watch(*r, ticket);
  if (DirectoryOpMutates(r->op)) {
    if (Status s = MayWrite(request, r->key); !s.ok()) return ErrorReply(s);
  }
  return Serve(*r);
}

// Whether a request that changes the directory may go on: not on a read-only endpoint, and
// with a cluster secret only with its proof. Which keys it may touch is the store's check.
Status DirectoryServer::Impl::MayWrite(const net::HttpRequest& request, std::string_view key) {
  if (options.read_only) {
    return Error(Code::kPermissionDenied,
                 "{} {}: this endpoint serves reads only (a p2p peer's keys are written by the peer itself)",
                 request.method, request.path);
  }
  if (!auth) return OkStatus();
  return auth->Check(request.Header(kDirectoryAuthHeader),
                     SignedRequest{request.method, request.path, key, request.body});
}

net::HttpResponse DirectoryServer::Impl::Serve(const DirectoryRequest& r) {
  auto d = StoreDeadline();
  switch (r.op) {
    case Op::kGet: {
      auto v = store->Get(r.key, d);
      if (!v.ok()) return ErrorReply(v.status());
      return JsonReply({{"value", Base64Encode(*v)}});
    }
    case Op::kPut: {
      Status s = store->PutAsOwner(r.key, r.value, r.lease);
      return s.ok() ? JsonReply(json::object()) : ErrorReply(s);
    }
    case Op::kPutIfAbsent: {
      auto created = store->PutIfAbsent(r.key, r.value, r.lease, d);
      if (!created.ok()) return ErrorReply(created.status());
      return JsonReply({{"created", *created}});
    }
    case Op::kDelete: {
      Status s = store->DeleteAsOwner(r.key, r.lease);
      return s.ok() ? JsonReply(json::object()) : ErrorReply(s);
    }
    case Op::kList: {
      auto kvs = store->List(r.prefix, d);
      if (!kvs.ok()) return ErrorReply(kvs.status());
      json arr = json::array();
      for (const auto& kv : *kvs) arr.push_back({{"key", Base64Encode(kv.first)}, {"value", Base64Encode(kv.second)}});
      return JsonReply({{"kvs", std::move(arr)}});
    }
    case Op::kGrant: {
      auto id = store->Grant(std::chrono::milliseconds(r.ttl_ms), d);
      if (!id.ok()) return ErrorReply(id.status());
      return JsonReply({{"lease", *id}});
    }
    case Op::kKeepAlive: {
      Status s = store->KeepAlive(r.lease, d);
      return s.ok() ? JsonReply(json::object()) : ErrorReply(s);
    }
    case Op::kRevoke: {
      Status s = store->Revoke(r.lease, d);
      return s.ok() ? JsonReply(json::object()) : ErrorReply(s);
    }
    case Op::kWatch: break;  // Watch()
  }
  return ErrorReply(Error(Code::kInternal, "op {} is not served here", DirectoryRequestPath(r.op)));
}

// What the store has for a watch now, without waiting.
MemoryStore::EventBatch DirectoryServer::Impl::Poll(const std::string& prefix, int64_t since) {
  return store->EventsSince(since, prefix, Deadline(Clock::now()), nullptr);
}

// A watch with nothing to tell yet is parked: its connection waits, holding no thread, until
// the store reports a revision with an event under its prefix (OnRevision) or wait_ms passes.
net::HttpOutcome DirectoryServer::Impl::Watch(const DirectoryRequest& r, net::HttpTicket ticket) {
  auto batch = Poll(r.prefix, r.since);
  if (!batch.events.empty() || batch.compacted || r.since < 0 || r.wait_ms == 0) return WatchReply(batch);
  // Nothing under the prefix up to batch.revision: later polls need only look after it.
  parked[ticket] = ParkedWatch{r.prefix, batch.revision};
  net::HttpParked p;
  p.until = Clock::now() + std::chrono::milliseconds(r.wait_ms);
  p.on_timeout = [this, ticket] {
    auto node = parked.extract(ticket);
    if (node.empty()) return WatchReply(Poll("", store->revision()));
    return WatchReply(Poll(node.mapped().prefix, node.mapped().since));
  };
  p.on_drop = [this, ticket] { parked.erase(ticket); };
  return p;
}

// Any thread, the store's lock held: one wake-up of the loop per burst of revisions.
void DirectoryServer::Impl::OnRevision() {
  if (wake_posted.exchange(true)) return;
  http->Post([this] {
    wake_posted = false;
    AnswerParked();
  });
}

void DirectoryServer::Impl::AnswerParked() {
  std::vector<std::pair<net::HttpTicket, MemoryStore::EventBatch>> ready;
  for (const auto& entry : parked) {
    auto batch = Poll(entry.second.prefix, entry.second.since);
    if (!batch.events.empty() || batch.compacted) ready.emplace_back(entry.first, std::move(batch));
  }
  for (auto& answer : ready) {
    parked.erase(answer.first);
    http->Answer(answer.first, WatchReply(answer.second));
  }
}

// Mooncake's HTTP metadata protocol: the raw value is the body; the answers are those of its
// reference servers (example/http-metadata-server, mooncake_http_metadata_server).
net::HttpResponse DirectoryServer::Impl::ServeMooncake(const net::HttpRequest& request) {
  const std::string& method = request.method;
  if (method != "GET" && method != "HEAD" && method != "PUT" && method != "DELETE") {
    return TextReply(405, "GET, PUT or DELETE /metadata?key=K");
  }
  auto key = request.QueryParam("key");
  if (!key) return TextReply(400, "missing key");
  if (method == "PUT" || method == "DELETE") {
    // Mooncake's protocol names no lease, so its writes reach only keys under none.
    if (Status s = MayWrite(request, *key); !s.ok()) return TextReply(HttpStatusOf(s.code()), s.message());
  }
  if (method == "PUT") {
    Status s = store->PutAsOwner(*key, request.body, 0);
    return s.ok() ? TextReply(200, "metadata updated") : TextReply(HttpStatusOf(s.code()), s.message());
  }
  if (method == "DELETE") {
    Status s = store->DeleteAsOwner(*key, 0);
    if (s.code() == Code::kNotFound) return TextReply(404, "metadata not found");
    return s.ok() ? TextReply(200, "metadata deleted") : TextReply(HttpStatusOf(s.code()), s.message());
  }
  auto v = store->Get(*key, StoreDeadline());
  if (!v.ok()) return TextReply(404, "metadata not found");
  return {200, "application/json", std::move(*v)};
}

DirectoryServer::DirectoryServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DirectoryServer::~DirectoryServer() { Stop(); }

Result<std::unique_ptr<DirectoryServer>> DirectoryServer::Start(DirectoryServerOptions options,
                                                                std::shared_ptr<MemoryStore> store) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->store = store ? std::move(store) : std::make_shared<MemoryStore>();
  if (!impl->options.cluster_secret.empty()) {
    impl->auth = std::make_unique<DirectoryAuthenticator>(impl->options.cluster_secret, impl->options.auth_max_skew);
  }
  net::HttpServerOptions http = impl->options.http;
  http.bind = impl->options.bind;
  http.max_body = impl->options.max_body;
  if (http.name == "http") http.name = "directory";
  Impl* p = impl.get();
  auto started = net::HttpServer::Start(
      std::move(http), [p](const net::HttpRequest& request, net::HttpTicket ticket) { return p->Route(request, ticket); });
  if (!started.ok()) return started.status().Annotate("directory server");
  p->http = std::move(*started);
  p->listener = p->store->AddRevisionListener([p] { p->OnRevision(); });
  // A watch parked before the listener was there may have missed a revision: look once more.
  p->http->Post([p] { p->AnswerParked(); });
  return std::unique_ptr<DirectoryServer>(new DirectoryServer(std::move(impl)));
}

void DirectoryServer::Stop() {
  std::lock_guard lk(impl_->stop_mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  // No wake-ups after this; then the loop ends and parked watches are dropped with it.
  impl_->store->RemoveRevisionListener(impl_->listener);
  impl_->http->Stop();
}

const std::string& DirectoryServer::host() const { return impl_->http->host(); }
uint16_t DirectoryServer::port() const { return impl_->http->port(); }
std::string DirectoryServer::address() const { return HttpTarget{host(), port()}.Address(); }
const std::shared_ptr<MemoryStore>& DirectoryServer::store() const { return impl_->store; }

}  // namespace weft::meta
