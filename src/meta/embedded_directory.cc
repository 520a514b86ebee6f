#include "meta/embedded_directory.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "meta/base64.h"
#include "meta/directory_auth.h"
#include "meta/directory_server.h"
#include "meta/http_call.h"

namespace weft::meta {

using json = nlohmann::json;
using Op = DirectoryRequest::Op;

namespace {

Code CodeFromName(const std::string& name, Code fallback) {
  for (int c = 0; c <= static_cast<int>(kLastCode); ++c) {
    if (CodeName(static_cast<Code>(c)) == name) return static_cast<Code>(c);
  }
  return fallback;
}

Result<json> ParseJson(const std::string& body, const std::string& address) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Error(Code::kProtocol, "directory at {} answered something that is not a JSON object", address);
  }
  return j;
}

// The server's answer to a request: the JSON body on 200, else the Status it names.
Result<json> Interpret(const HttpReply& reply, const std::string& address) {
  if (reply.status == 200) return ParseJson(reply.body, address);
  json j = json::parse(reply.body, nullptr, false);
  Code fallback = reply.status == 404   ? Code::kNotFound
                  : reply.status == 400 ? Code::kInvalidArgument
                  : reply.status == 401 ? Code::kUnauthenticated
                  : reply.status == 403 ? Code::kPermissionDenied
                                        : Code::kUnavailable;
  if (!j.is_discarded() && j.is_object() && j.contains("code") && j["code"].is_string() && j.contains("error") &&
      j["error"].is_string()) {
    return Status(CodeFromName(j["code"].get<std::string>(), fallback), j["error"].get<std::string>());
  }
  return Error(fallback, "directory at {} answered HTTP {}: {}", address, reply.status, reply.body.substr(0, 200));
}

Result<std::string> B64(const json& j, const char* name, const std::string& address) {
  if (!j.contains(name) || !j[name].is_string()) {
    return Error(Code::kProtocol, "directory at {}: answer lacks '{}'", address, name);
  }
  return Base64Decode(j[name].get<std::string>());
}

}  // namespace

struct EmbeddedDirectory::Impl {
  HttpTarget target;
  std::string secret;  // empty: writes go unsigned

  Result<json> Call(const DirectoryRequest& r, Deadline d) {
    const std::string path(DirectoryRequestPath(r.op));
    const std::string body = EncodeDirectoryRequest(r);
    HttpHeaders headers;
    if (!secret.empty() && DirectoryOpMutates(r.op)) {
      WEFT_ASSIGN_OR_RETURN(std::string proof, SignDirectoryRequest(secret, SignedRequest{"POST", path, r.key, body}));
      headers.emplace_back(std::string(kDirectoryAuthHeader), std::move(proof));
    }
    WEFT_ASSIGN_OR_RETURN(HttpReply reply, HttpCall(target, "POST", path, body, d, "directory", headers));
    return Interpret(reply, target.Address());
  }
};

EmbeddedDirectory::EmbeddedDirectory(std::string host, uint16_t port, DirectoryOptions options)
    : Directory(std::move(options)), impl_(std::make_unique<Impl>()) {
  impl_->target = HttpTarget{std::move(host), port};
  impl_->secret = this->options().cluster_secret;
}

EmbeddedDirectory::~EmbeddedDirectory() = default;

std::string EmbeddedDirectory::Describe() const { return "embedded://" + impl_->target.Address(); }

Result<std::string> EmbeddedDirectory::DoGet(const std::string& key, Deadline d) {
  DirectoryRequest r;
  r.op = Op::kGet;
  r.key = key;
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call(r, d));
  return B64(j, "value", impl_->target.Address());
}

Status EmbeddedDirectory::DoPut(const std::string& key, const std::string& value, LeaseId lease, Deadline d) {
  DirectoryRequest r;
  r.op = Op::kPut;
  r.key = key;
  r.value = value;
  r.lease = lease;
  return impl_->Call(r, d).status();
}

Status EmbeddedDirectory::DoDelete(const std::string& key, LeaseId lease, Deadline d) {
  DirectoryRequest r;
  r.op = Op::kDelete;
  r.key = key;
  r.lease = lease;
  return impl_->Call(r, d).status();
}

Result<KeyValues> EmbeddedDirectory::DoList(const std::string& prefix, Deadline d) {
  DirectoryRequest r;
  r.op = Op::kList;
  r.prefix = prefix;
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call(r, d));
  const std::string address = impl_->target.Address();
  if (!j.contains("kvs") || !j["kvs"].is_array()) {
    return Error(Code::kProtocol, "directory at {}: list answer lacks 'kvs'", address);
  }
  KeyValues out;
  for (const auto& kv : j["kvs"]) {
    if (!kv.is_object()) return Error(Code::kProtocol, "directory at {}: bad list entry", address);
    WEFT_ASSIGN_OR_RETURN(std::string k, B64(kv, "key", address));
    WEFT_ASSIGN_OR_RETURN(std::string v, B64(kv, "value", address));
    out.emplace_back(std::move(k), std::move(v));
  }
  return out;
}

Result<bool> EmbeddedDirectory::DoPutIfAbsent(const std::string& key, const std::string& value, LeaseId lease,
                                              Deadline d) {
  DirectoryRequest r;
  r.op = Op::kPutIfAbsent;
  r.key = key;
  r.value = value;
  r.lease = lease;
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call(r, d));
  if (!j.contains("created") || !j["created"].is_boolean()) {
    return Error(Code::kProtocol, "directory at {}: answer lacks 'created'", impl_->target.Address());
  }
  return j["created"].get<bool>();
}

Result<LeaseId> EmbeddedDirectory::DoGrant(std::chrono::milliseconds ttl, Deadline d) {
  if (ttl.count() <= 0) return Error(Code::kInvalidArgument, "lease ttl must be positive, got {} ms", ttl.count());
  DirectoryRequest r;
  r.op = Op::kGrant;
  r.ttl_ms = ttl.count();
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call(r, d));
  if (!j.contains("lease") || !j["lease"].is_number_integer()) {
    return Error(Code::kProtocol, "directory at {}: answer lacks 'lease'", impl_->target.Address());
  }
  return j["lease"].get<LeaseId>();
}

Status EmbeddedDirectory::DoKeepAlive(LeaseId lease, Deadline d) {
  if (lease <= 0) return Error(Code::kNotFound, "lease {} is not known", lease);
  DirectoryRequest r;
  r.op = Op::kKeepAlive;
  r.lease = lease;
  return impl_->Call(r, d).status();
}

Status EmbeddedDirectory::DoRevoke(LeaseId lease, Deadline d) {
  if (lease <= 0) return Error(Code::kNotFound, "lease {} is not known", lease);
  DirectoryRequest r;
  r.op = Op::kRevoke;
  r.lease = lease;
  return impl_->Call(r, d).status();
}

Result<WatchHandle> EmbeddedDirectory::DoWatch(const std::string& prefix, WatchCallback callback, Deadline d) {
  if (!callback) return Error(Code::kInvalidArgument, "watch of '{}' needs a callback", prefix);
  // Learn the current revision first, within the caller's deadline: events after it are the
  // ones this watch owes, and an unreachable server fails the call instead of a silent thread.
  DirectoryRequest first;
  first.op = Op::kWatch;
  first.prefix = prefix;
  first.since = -1;
  WEFT_ASSIGN_OR_RETURN(json j, impl_->Call(first, d));
  if (!j.contains("revision") || !j["revision"].is_number_integer()) {
    return Error(Code::kProtocol, "directory at {}: watch answer lacks 'revision'", impl_->target.Address());
  }
  int64_t start = j["revision"].get<int64_t>();
  uint64_t start_instance = j.value("instance", uint64_t{0});
  HttpTarget target = impl_->target;
  return StartWatchThread([target, prefix, start, start_instance, cb = std::move(callback)](WatchThreadState& st) {
    int64_t since = start;
    uint64_t instance = start_instance;
    bool warned = false;
    const std::string address = target.Address();
    while (!st.cancelled) {
      DirectoryRequest poll;
      poll.op = Op::kWatch;
      poll.prefix = prefix;
      poll.since = since;
      poll.wait_ms = kWatchWaitMs;
      httplib::Client client(target.host, target.port);
      client.set_connection_timeout(std::chrono::seconds(1));
      client.set_read_timeout(std::chrono::milliseconds(kWatchWaitMs + 5000));
      client.set_write_timeout(std::chrono::seconds(5));
      st.SetClient(&client);
      auto r = client.Post(std::string(DirectoryRequestPath(Op::kWatch)), EncodeDirectoryRequest(poll),
                           "application/json");
      st.SetClient(nullptr);
      if (st.cancelled) return;
      Result<json> reply = r ? Interpret(HttpReply{r->status, r->body}, address)
                             : Result<json>(HttpFailure(static_cast<int>(r.error()), target,
                                                        Deadline::Never(), "directory"));
      if (!reply.ok()) {
        if (!warned) WEFT_LOG_WARN("watch of '{}' on {}: {}; retrying", prefix, address, reply.status().ToString());
        warned = true;
        if (!st.SleepFor(std::chrono::milliseconds(200))) return;
        continue;
      }
      warned = false;
      const json& body = *reply;
      if (!body.contains("revision") || !body["revision"].is_number_integer() || !body.contains("events") ||
          !body["events"].is_array()) {
        WEFT_LOG_WARN("watch of '{}' on {}: malformed answer; retrying", prefix, address);
        if (!st.SleepFor(std::chrono::milliseconds(200))) return;
        continue;
      }
      int64_t revision = body["revision"].get<int64_t>();
      uint64_t now_instance = body.value("instance", uint64_t{0});
      if (now_instance != instance) {
        // Another server (a restart): its store started empty and its revisions over. What
        // the old one had not told us is lost; everything the new one did is replayed from
        // its first revision (as long as its history reaches back that far).
        WEFT_LOG_WARN("watch of '{}' on {}: the server restarted; events before the restart after "
                      "revision {} were lost; List again to resynchronise",
                      prefix, address, since);
        instance = now_instance;
        since = 0;
        continue;
      }
      if (body.value("compacted", false)) {
        // The server dropped history this watch had not seen: go on from now.
        WEFT_LOG_WARN("watch of '{}' on {}: events after revision {} were lost (history compacted); "
                      "continuing from revision {}; List again to resynchronise",
                      prefix, address, since, revision);
        since = revision;
        continue;
      }
      for (const auto& e : body["events"]) {
        if (st.cancelled) return;
        if (!e.is_object()) continue;
        auto key = B64(e, "key", address);
        auto value = B64(e, "value", address);
        if (!key.ok() || !value.ok()) continue;
        WatchEvent ev;
        ev.kind = e.value("type", std::string()) == "delete" ? WatchEvent::Kind::kDelete : WatchEvent::Kind::kPut;
        ev.key = std::move(*key);
        ev.value = std::move(*value);
        cb(ev);
      }
      since = revision;
    }
  });
}

}  // namespace weft::meta
