#include "meta/etcd_directory.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <mutex>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "meta/base64.h"
#include "meta/http_call.h"

namespace weft::meta {

using json = nlohmann::json;

namespace {

// gRPC status codes as the gateway reports them in {"error", "code"}.
Code CodeFromGrpc(int grpc) {
  switch (grpc) {
    case 3: return Code::kInvalidArgument;
    case 4: return Code::kTimeout;
    case 5: return Code::kNotFound;
    case 6: return Code::kAlreadyExists;
    case 7: return Code::kPermissionDenied;
    case 16: return Code::kUnauthenticated;
    case 12: return Code::kNotSupported;
    default: return Code::kUnavailable;  // 14 unavailable, 8 exhausted, 13 internal, ...
  }
}

// The gateway writes 64-bit integers as strings ("revision": "5") and omits zero values.
int64_t JsonInt(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    try {
      return std::stoll(it->get<std::string>());
    } catch (const std::exception&) {
      return 0;
    }
  }
  return 0;
}

// A base64 field that the gateway omits when it is empty.
Result<std::string> B64Opt(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return std::string();
  if (!it->is_string()) return Error(Code::kProtocol, "etcd answer: '{}' is not a string", name);
  return Base64Decode(it->get<std::string>());
}

Status ErrorOf(const json& j, int http_status, const std::string& address) {
  std::string message;
  int grpc = 0;
  if (j.is_object()) {
    const json* e = &j;
    if (j.contains("error") && j["error"].is_object()) e = &j["error"];  // streaming form
    if (e->contains("message") && (*e)["message"].is_string()) message = (*e)["message"].get<std::string>();
    if (message.empty() && e->contains("error") && (*e)["error"].is_string()) message = (*e)["error"].get<std::string>();
    if (e->contains("code") && (*e)["code"].is_number_integer()) grpc = (*e)["code"].get<int>();
  }
  if (message.empty()) message = fmt::format("HTTP {}", http_status);
  if (message.find("user name is empty") != std::string::npos ||
      message.find("authentication failed") != std::string::npos ||
      message.find("invalid auth token") != std::string::npos) {
    return Error(Code::kUnauthenticated, "etcd at {}: {} (set WEFT_ETCD_USER and WEFT_ETCD_PASSWORD to a user of "
                 "this etcd)", address, message);
  }
  if (message.find("permission denied") != std::string::npos) {
    return Error(Code::kPermissionDenied, "etcd at {}: {} (the etcd user needs read and write on weft's keys)",
                 address, message);
  }
  return Error(CodeFromGrpc(grpc), "etcd at {}: {}", address, message);
}

// Whether etcd refused a call because its token is stale (expired, or the server restarted).
bool StaleToken(const Status& s) {
  return s.code() == Code::kUnauthenticated && s.message().find("invalid auth token") != std::string::npos;
}

}  // namespace

// etcd's authentication: a user's token, shared by the calls and the watch threads.
struct EtcdAuth {
  std::string user;
  std::string password;
  std::mutex mu;
  std::string token;  // guarded by mu; empty until the first call

  bool enabled() const { return !user.empty(); }

  // The token for a call to `ep` ("" without a user): fetched when there is none yet, or when it
  // is still `stale`, the one etcd just refused. mu is held across the fetch so that threads
  // that need a token wait for one authentication instead of each making their own.
  Result<std::string> Token(const HttpTarget& ep, Deadline d, const std::string& stale = "") {
    if (!enabled()) return std::string();
    std::lock_guard lk(mu);
    if (token.empty() || token == stale) {
      json body = {{"name", user}, {"password", password}};
      WEFT_ASSIGN_OR_RETURN(HttpReply reply, HttpCall(ep, "POST", "/v3/auth/authenticate", body.dump(), d, "etcd"));
      json j = json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
      if (reply.status != 200 || !j.is_object() || j.contains("error")) return ErrorOf(j, reply.status, ep.Address());
      if (!j.contains("token") || !j["token"].is_string() || j["token"].get<std::string>().empty()) {
        return Error(Code::kUnauthenticated, "etcd at {}: authenticating user '{}' gave no token: is auth enabled "
                     "on this etcd?", ep.Address(), user);
      }
      token = j["token"].get<std::string>();
    }
    return token;
  }
};

namespace {

HttpHeaders AuthHeaders(const std::string& token) {
  if (token.empty()) return {};
  return {{"Authorization", token}};
}

}  // namespace

std::string PrefixRangeEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

struct EtcdDirectory::Impl {
  std::vector<HttpTarget> endpoints;
  std::atomic<size_t> current{0};
  std::shared_ptr<EtcdAuth> auth = std::make_shared<EtcdAuth>();

  std::string Names() const {
    std::string s;
    for (const auto& e : endpoints) s += (s.empty() ? "" : ",") + e.Address();
    return s;
  }

  // One gateway call, trying the endpoints in turn while they are unreachable; a call refused
  // for a stale token is made once more with a fresh one.
  Result<json> Call(const std::string& path, const json& body, Deadline d) {
    std::string text = body.dump();
    Status last;
    size_t start = current.load();
    for (size_t i = 0; i < endpoints.size(); ++i) {
      size_t idx = (start + i) % endpoints.size();
      const HttpTarget& ep = endpoints[idx];
      std::string used;
      auto j = CallOne(ep, path, text, d, "", &used);
      if (!j.ok() && StaleToken(j.status())) j = CallOne(ep, path, text, d, used, &used);
      if (!j.ok()) {
        last = j.status();
        if (last.code() == Code::kUnavailable && !d.expired()) continue;
        return last;
      }
      current = idx;
      return j;
    }
    return last;
  }

  // One call to `ep` with a token that is not `stale`; `used` gets the token it carried.
  Result<json> CallOne(const HttpTarget& ep, const std::string& path, const std::string& text, Deadline d,
                       const std::string& stale, std::string* used) {
    WEFT_ASSIGN_OR_RETURN(*used, auth->Token(ep, d, stale));
    WEFT_ASSIGN_OR_RETURN(HttpReply reply, HttpCall(ep, "POST", path, text, d, "etcd", AuthHeaders(*used)));
    json j = json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
    if (reply.status != 200) return ErrorOf(j, reply.status, ep.Address());
    if (j.is_discarded() || !j.is_object()) {
      return Error(Code::kProtocol, "etcd at {}: {} answered something that is not a JSON object", ep.Address(), path);
    }
    if (j.contains("error")) return ErrorOf(j, reply.status, ep.Address());
    return j;
  }
};

EtcdDirectory::EtcdDirectory(std::vector<std::pair<std::string, uint16_t>> endpoints, DirectoryOptions options)
    : Directory(std::move(options)), impl_(std::make_unique<Impl>()) {
  for (auto& [h, p] : endpoints) impl_->endpoints.push_back(HttpTarget{h, p});
  impl_->auth->user = this->options().etcd_user;
  impl_->auth->password = this->options().etcd_password;
}

EtcdDirectory::~EtcdDirectory() = default;

std::string EtcdDirectory::Describe() const {
  return "etcd://" + impl_->Names() + (impl_->auth->enabled() ? " as user " + impl_->auth->user : "");
}

Result<std::string> EtcdDirectory::DoGet(const std::string& key, Deadline d) {
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call("/v3/kv/range", {{"key", Base64Encode(key)}}, d));
  if (!j.contains("kvs") || !j["kvs"].is_array() || j["kvs"].empty()) {
    return Error(Code::kNotFound, "key '{}' is not in the directory", key);
  }
  return B64Opt(j["kvs"][0], "value");
}

Status EtcdDirectory::DoPut(const std::string& key, const std::string& value, LeaseId lease, Deadline d) {
  json body = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  return impl_->Call("/v3/kv/put", body, d).status();
}

// etcd has no notion of a delete by the lease holder: its own auth (users, roles) guards keys.
Status EtcdDirectory::DoDelete(const std::string& key, LeaseId, Deadline d) {
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call("/v3/kv/deleterange", {{"key", Base64Encode(key)}}, d));
  if (JsonInt(j, "deleted") == 0) return Error(Code::kNotFound, "key '{}' is not in the directory", key);
  return OkStatus();
}

Result<KeyValues> EtcdDirectory::DoList(const std::string& prefix, Deadline d) {
  // The empty prefix is the whole keyspace: key "\0" with range_end "\0".
  std::string from = prefix.empty() ? std::string(1, '\0') : prefix;
  json body = {{"key", Base64Encode(from)}, {"range_end", Base64Encode(PrefixRangeEnd(prefix))}};
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call("/v3/kv/range", body, d));
  KeyValues out;
  if (j.contains("kvs") && j["kvs"].is_array()) {
    for (const auto& kv : j["kvs"]) {
      WEFT_ASSIGN_OR_RETURN(std::string k, B64Opt(kv, "key"));
      WEFT_ASSIGN_OR_RETURN(std::string v, B64Opt(kv, "value"));
      out.emplace_back(std::move(k), std::move(v));
    }
  }
  // etcd already sorts by key; sorting again keeps the contract independent of that default.
  std::sort(out.begin(), out.end());
  return out;
}

Result<bool> EtcdDirectory::DoPutIfAbsent(const std::string& key, const std::string& value, LeaseId lease,
                                          Deadline d) {
  json put = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
  if (lease != 0) put["lease"] = std::to_string(lease);
  // Created only if the key has never been created since its last delete: create_revision 0.
  json txn = {
      {"compare",
       json::array({{{"key", Base64Encode(key)}, {"result", "EQUAL"}, {"target", "CREATE"}, {"create_revision", "0"}}})},
      {"success", json::array({{{"request_put", put}}})},
  };
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call("/v3/kv/txn", txn, d));
  auto it = j.find("succeeded");
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

// One transaction: the writes apply only while the guard key is under the guard lease (a key
// that is gone compares as lease 0, which no grant returns).
Status EtcdDirectory::DoCommit(std::span<const DirectoryWrite> writes, const WriteGuard& guard, Deadline d) {
  json ops = json::array();
  for (const DirectoryWrite& w : writes) {
    if (w.value) {
      ops.push_back({{"request_put", {{"key", Base64Encode(w.key)}, {"value", Base64Encode(*w.value)}}}});
    } else {
      ops.push_back({{"request_delete_range", {{"key", Base64Encode(w.key)}}}});
    }
  }
  json txn = {
      {"compare", json::array({{{"key", Base64Encode(guard.key)},
                                {"result", "EQUAL"},
                                {"target", "LEASE"},
                                {"lease", std::to_string(guard.lease)}}})},
      {"success", std::move(ops)},
  };
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call("/v3/kv/txn", txn, d));
  auto it = j.find("succeeded");
  if (it != j.end() && it->is_boolean() && it->get<bool>()) return OkStatus();
  return Error(Code::kPermissionDenied, "'{}' is not held under lease {} any more: nothing written", guard.key,
               guard.lease);
}

Result<LeaseId> EtcdDirectory::DoGrant(std::chrono::milliseconds ttl, Deadline d) {
  if (ttl.count() <= 0) return Error(Code::kInvalidArgument, "lease ttl must be positive, got {} ms", ttl.count());
  int64_t seconds = (ttl.count() + 999) / 1000;  // etcd counts whole seconds: round up, never shorten
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call("/v3/lease/grant", {{"TTL", std::to_string(seconds)}}, d));
  LeaseId id = JsonInt(j, "ID");
  if (id == 0) return Error(Code::kProtocol, "etcd: lease grant answered no ID");
  return id;
}

Status EtcdDirectory::DoKeepAlive(LeaseId lease, Deadline d) {
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call("/v3/lease/keepalive", {{"ID", std::to_string(lease)}}, d));
  // The gateway wraps stream messages in "result"; an expired lease comes back with TTL 0
  // (omitted) rather than an error.
  const json& r = j.contains("result") && j["result"].is_object() ? j["result"] : j;
  if (JsonInt(r, "TTL") <= 0) return Error(Code::kNotFound, "lease {} has expired or was revoked", lease);
  return OkStatus();
}

Status EtcdDirectory::DoRevoke(LeaseId lease, Deadline d) {
  auto r = impl_->Call("/v3/lease/revoke", {{"ID", std::to_string(lease)}}, d);
  if (!r.ok() && r.status().code() == Code::kNotFound) {
    return Error(Code::kNotFound, "lease {} has expired or was revoked", lease);
  }
  return r.status();
}

Result<WatchHandle> EtcdDirectory::DoWatch(const std::string& prefix, WatchCallback callback, Deadline d) {
  if (!callback) return Error(Code::kInvalidArgument, "watch of '{}' needs a callback", prefix);
  // The current revision, within the caller's deadline; the stream then starts right after it,
  // so no event after this call is missed however late the stream gets going (or reconnects).
  std::string from = prefix.empty() ? std::string(1, '\0') : prefix;
  std::string range_end = PrefixRangeEnd(prefix);
  json probe = {{"key", Base64Encode(from)}, {"range_end", Base64Encode(range_end)}, {"count_only", true}};
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call("/v3/kv/range", probe, d));
  int64_t revision = j.contains("header") ? JsonInt(j["header"], "revision") : 0;
  std::vector<HttpTarget> endpoints = impl_->endpoints;
  size_t first = impl_->current.load();
  std::shared_ptr<EtcdAuth> auth = impl_->auth;

  return StartWatchThread([endpoints, first, auth, prefix, from, range_end, revision,
                           cb = std::move(callback)](WatchThreadState& st) {
    int64_t next = revision + 1;
    size_t idx = first;
    bool warned = false;
    std::string stale_token;  // the token the last stream was refused for
    while (!st.cancelled) {
      const HttpTarget& ep = endpoints[idx % endpoints.size()];
      auto token = auth->Token(ep, Deadline::After(std::chrono::seconds(5)), stale_token);
      stale_token.clear();
      if (!token.ok()) {
        if (!warned) WEFT_LOG_WARN("watch of '{}' on etcd {}: {}; retrying", prefix, ep.Address(), token.status().ToString());
        warned = true;
        ++idx;
        if (!st.SleepFor(std::chrono::milliseconds(200))) return;
        continue;
      }
      json create = {{"create_request",
                      {{"key", Base64Encode(from)}, {"range_end", Base64Encode(range_end)},
                       {"start_revision", std::to_string(next)}}}};
      httplib::Client client(ep.host, ep.port);
      client.set_connection_timeout(std::chrono::seconds(1));
      // An idle stream sends nothing; after this long the watch reconnects from `next`.
      client.set_read_timeout(std::chrono::seconds(10));
      httplib::Request req;
      req.method = "POST";
      req.path = "/v3/watch";
      req.body = create.dump();
      req.set_header("Content-Type", "application/json");
      for (const auto& [name, value] : AuthHeaders(*token)) req.set_header(name, value);
      std::string buffer;
      bool restart = false;  // the stream told us to start over (compaction, cancel)
      req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
        buffer.append(data, len);
        size_t nl;
        while ((nl = buffer.find('\n')) != std::string::npos) {
          std::string line = buffer.substr(0, nl);
          buffer.erase(0, nl + 1);
          json m = json::parse(line, nullptr, /*allow_exceptions=*/false);
          if (m.is_discarded() || !m.is_object()) continue;
          if (!m.contains("result") || !m["result"].is_object()) {
            WEFT_LOG_WARN("watch of '{}' on etcd {}: {}", prefix, ep.Address(), line.substr(0, 200));
            if (line.find("auth token") != std::string::npos) stale_token = *token;
            restart = true;
            return false;
          }
          const json& r = m["result"];
          int64_t compact = JsonInt(r, "compact_revision");
          if (compact != 0) {
            WEFT_LOG_WARN("watch of '{}' on etcd {}: revisions before {} were compacted, events lost; "
                          "List again to resynchronise", prefix, ep.Address(), compact);
            next = compact;
            restart = true;
            return false;
          }
          if (r.contains("canceled") && r["canceled"].is_boolean() && r["canceled"].get<bool>()) {
            restart = true;
            return false;
          }
          if (r.contains("events") && r["events"].is_array()) {
            for (const auto& e : r["events"]) {
              if (st.cancelled) return false;
              if (!e.is_object() || !e.contains("kv") || !e["kv"].is_object()) continue;
              const json& kv = e["kv"];
              auto key = B64Opt(kv, "key");
              auto value = B64Opt(kv, "value");
              if (!key.ok() || !value.ok()) continue;
              WatchEvent ev;
              ev.kind = e.value("type", std::string()) == "DELETE" ? WatchEvent::Kind::kDelete : WatchEvent::Kind::kPut;
              ev.key = std::move(*key);
              if (ev.kind == WatchEvent::Kind::kPut) ev.value = std::move(*value);
              next = std::max(next, JsonInt(kv, "mod_revision") + 1);
              cb(ev);
            }
          }
          warned = false;
        }
        return !st.cancelled.load();
      };
      httplib::Response res;
      httplib::Error err = httplib::Error::Success;
      st.SetClient(&client);
      bool ok = client.send(req, res, err);
      st.SetClient(nullptr);
      if (st.cancelled) return;
      // A stream that ended (idle read timeout, compaction, cancel by etcd) is opened again
      // from `next`; the short pause keeps a misbehaving server from making this a busy loop.
      if (restart || (!ok && err == httplib::Error::Read)) {
        if (!st.SleepFor(std::chrono::milliseconds(20))) return;
        continue;
      }
      if (!ok || res.status != 200) {
        if (!warned) {
          WEFT_LOG_WARN("watch of '{}' on etcd {}: {}; retrying", prefix, ep.Address(),
                        ok ? fmt::format("HTTP {}", res.status) : httplib::to_string(err));
        }
        warned = true;
        ++idx;  // try the next endpoint
        if (!st.SleepFor(std::chrono::milliseconds(200))) return;
      }
    }
  });
}

}  // namespace weft::meta
