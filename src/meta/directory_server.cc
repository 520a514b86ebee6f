#include "meta/directory_server.h"

#include <httplib.h>

#include <sys/socket.h>

#include <limits>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "meta/base64.h"
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
    case Op::kGet:
    case Op::kDelete: return {"key"};
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
    case Code::kInvalidArgument:
    case Code::kProtocol: return 400;
    case Code::kTimeout: return 504;
    case Code::kUnavailable: return 503;
    default: return 500;
  }
}

void ReplyError(httplib::Response& res, const Status& s) {
  res.status = HttpStatusOf(s.code());
  json body = {{"code", std::string(CodeName(s.code()))}, {"error", s.message()}};
  res.set_content(body.dump(), "application/json");
}

void ReplyJson(httplib::Response& res, const json& body) {
  res.status = 200;
  res.set_content(body.dump(), "application/json");
}

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
    case Op::kGet:
    case Op::kDelete: {
      WEFT_ASSIGN_OR_RETURN(r.key, B64Field(j, "key", path));
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

std::string EncodeDirectoryRequest(const DirectoryRequest& r) {
  json j = json::object();
  switch (r.op) {
    case Op::kGet:
    case Op::kDelete: j["key"] = Base64Encode(r.key); break;
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
  httplib::Server server;
  std::string host;
  uint16_t port = 0;
  std::thread thread;
  std::atomic<bool> listening_done{false};
  std::atomic<bool> stopping{false};
  std::mutex stop_mu;
  bool stopped = false;

  void Serve(const DirectoryRequest& r, httplib::Response& res);
  void Install();
};

void DirectoryServer::Impl::Serve(const DirectoryRequest& r, httplib::Response& res) {
  // The store never blocks, so its calls need no real deadline.
  auto d = Deadline::After(std::chrono::seconds(1));
  auto fail = [&](const Status& s) { ReplyError(res, s); };
  switch (r.op) {
    case Op::kGet: {
      auto v = store->Get(r.key, d);
      if (!v.ok()) return fail(v.status());
      return ReplyJson(res, {{"value", Base64Encode(*v)}});
    }
    case Op::kPut: {
      Status s = store->Put(r.key, r.value, r.lease, d);
      if (!s.ok()) return fail(s);
      return ReplyJson(res, json::object());
    }
    case Op::kPutIfAbsent: {
      auto created = store->PutIfAbsent(r.key, r.value, r.lease, d);
      if (!created.ok()) return fail(created.status());
      return ReplyJson(res, {{"created", *created}});
    }
    case Op::kDelete: {
      Status s = store->Delete(r.key, d);
      if (!s.ok()) return fail(s);
      return ReplyJson(res, json::object());
    }
    case Op::kList: {
      auto kvs = store->List(r.prefix, d);
      if (!kvs.ok()) return fail(kvs.status());
      json arr = json::array();
      for (const auto& [k, v] : *kvs) arr.push_back({{"key", Base64Encode(k)}, {"value", Base64Encode(v)}});
      return ReplyJson(res, {{"kvs", std::move(arr)}});
    }
    case Op::kGrant: {
      auto id = store->Grant(std::chrono::milliseconds(r.ttl_ms), d);
      if (!id.ok()) return fail(id.status());
      return ReplyJson(res, {{"lease", *id}});
    }
    case Op::kKeepAlive: {
      Status s = store->KeepAlive(r.lease, d);
      if (!s.ok()) return fail(s);
      return ReplyJson(res, json::object());
    }
    case Op::kRevoke: {
      Status s = store->Revoke(r.lease, d);
      if (!s.ok()) return fail(s);
      return ReplyJson(res, json::object());
    }
    case Op::kWatch: {
      auto batch = store->EventsSince(r.since, r.prefix, Deadline::After(std::chrono::milliseconds(r.wait_ms)),
                                      &stopping);
      json events = json::array();
      for (const auto& e : batch.events) {
        events.push_back({{"type", e.event.kind == WatchEvent::Kind::kPut ? "put" : "delete"},
                          {"key", Base64Encode(e.event.key)},
                          {"value", Base64Encode(e.event.value)},
                          {"revision", e.revision}});
      }
      return ReplyJson(res, {{"instance", batch.instance},
                             {"revision", batch.revision},
                             {"compacted", batch.compacted},
                             {"events", events}});
    }
  }
}

void DirectoryServer::Impl::Install() {
  auto api = [this](const httplib::Request& req, httplib::Response& res) {
    auto r = DecodeDirectoryRequest(req.method, req.path, req.body);
    if (!r.ok()) {
      ReplyError(res, r.status());
      if (r.status().code() == Code::kInvalidArgument) res.status = 405;  // wrong method
      return;
    }
    Serve(*r, res);
  };
  server.Post(R"(/v1/.*)", api);
  server.Get(R"(/v1/.*)", api);
  server.Put(R"(/v1/.*)", api);
  server.Delete(R"(/v1/.*)", api);

  // Mooncake's HTTP metadata protocol: the raw value is the body; the answers are those of its
  // reference servers (example/http-metadata-server, mooncake_http_metadata_server).
  auto key_of = [](const httplib::Request& req, httplib::Response& res) -> std::optional<std::string> {
    if (!req.has_param("key")) {
      res.status = 400;
      res.set_content("missing key", "text/plain");
      return std::nullopt;
    }
    return req.get_param_value("key");
  };
  auto d = [] { return Deadline::After(std::chrono::seconds(1)); };
  server.Get("/metadata", [this, key_of, d](const httplib::Request& req, httplib::Response& res) {
    auto key = key_of(req, res);
    if (!key) return;
    auto v = store->Get(*key, d());
    if (!v.ok()) {
      res.status = 404;
      res.set_content("metadata not found", "text/plain");
      return;
    }
    res.status = 200;
    res.set_content(*v, "application/json");
  });
  server.Put("/metadata", [this, key_of, d](const httplib::Request& req, httplib::Response& res) {
    auto key = key_of(req, res);
    if (!key) return;
    Status s = store->Put(*key, req.body, 0, d());
    if (!s.ok()) return ReplyError(res, s);
    res.status = 200;
    res.set_content("metadata updated", "text/plain");
  });
  server.Delete("/metadata", [this, key_of, d](const httplib::Request& req, httplib::Response& res) {
    auto key = key_of(req, res);
    if (!key) return;
    Status s = store->Delete(*key, d());
    if (!s.ok()) {
      res.status = 404;
      res.set_content("metadata not found", "text/plain");
      return;
    }
    res.status = 200;
    res.set_content("metadata deleted", "text/plain");
  });

  // Errors that httplib produces itself (no route 404, oversized body 413, unparsable request
  // 400) get a reason in the body.
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request& req, httplib::Response& res) -> httplib::Server::HandlerResponse {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string why = res.status == 413   ? "request body too large"
                      : res.status == 404 ? "no such endpoint: " + req.path
                                          : "bad request";
    res.set_content(why, "text/plain");
    return httplib::Server::HandlerResponse::Handled;
  }));
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    res.status = 500;
    res.set_content("internal error: " + what, "text/plain");
  });
  // httplib's default also sets SO_REUSEPORT, which would let a second server bind the same
  // port and silently split the clients between two stores. SO_REUSEADDR alone still allows a
  // restart on the same port right away.
  server.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  // Replies are small writes after the headers: without TCP_NODELAY a client that reuses its
  // connection waits out Nagle against its delayed ack (some 40 ms a request).
  server.set_tcp_nodelay(true);
  server.set_payload_max_length(options.max_body);
  int threads = std::max(2, options.threads);
  server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
}

DirectoryServer::DirectoryServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DirectoryServer::~DirectoryServer() { Stop(); }

Result<std::unique_ptr<DirectoryServer>> DirectoryServer::Start(DirectoryServerOptions options,
                                                                std::shared_ptr<MemoryStore> store) {
  WEFT_ASSIGN_OR_RETURN(auto hp, ParseHostPort(options.bind));
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->store = store ? std::move(store) : std::make_shared<MemoryStore>();
  impl->host = hp.first;
  Impl* p = impl.get();
  try {
    p->Install();
    int port = hp.second;
    if (port == 0) {
      port = p->server.bind_to_any_port(p->host);
      if (port <= 0) return Error(Code::kUnavailable, "directory server: cannot bind {}:0", p->host);
    } else if (!p->server.bind_to_port(p->host, port)) {
      return Error(Code::kUnavailable, "directory server: cannot bind {}:{} (in use?)", p->host, port);
    }
    p->port = static_cast<uint16_t>(port);
    p->thread = std::thread([p] {
      p->server.listen_after_bind();
      p->listening_done = true;
    });
  } catch (const std::exception& e) {
    return Error(Code::kInternal, "directory server: {}", e.what());
  }
  // Stop() must find the accept loop running, or httplib's stop() would do nothing and the
  // join would wait forever; the socket already listens, so this is quick.
  while (!p->server.is_running() && !p->listening_done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (p->listening_done) {
    p->thread.join();
    return Error(Code::kUnavailable, "directory server on {}:{} stopped at once", p->host, p->port);
  }
  WEFT_LOG_INFO("directory server listening on {}:{}", p->host, p->port);
  return std::unique_ptr<DirectoryServer>(new DirectoryServer(std::move(impl)));
}

void DirectoryServer::Stop() {
  std::lock_guard lk(impl_->stop_mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->stopping = true;
  impl_->store->WakeWaiters();
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

const std::string& DirectoryServer::host() const { return impl_->host; }
uint16_t DirectoryServer::port() const { return impl_->port; }
std::string DirectoryServer::address() const { return HttpTarget{impl_->host, impl_->port}.Address(); }
const std::shared_ptr<MemoryStore>& DirectoryServer::store() const { return impl_->store; }

}  // namespace weft::meta
