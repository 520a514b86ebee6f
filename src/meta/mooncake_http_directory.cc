#include "meta/mooncake_http_directory.h"

#include "meta/directory_auth.h"
#include "meta/http_call.h"

namespace weft::meta {

struct MooncakeHttpDirectory::Impl {
  HttpTarget target;
  std::string path;
  std::string secret;  // empty: writes go unsigned

  std::string Url(const std::string& key) const { return path + "?key=" + UrlEncode(key); }

  // A write: PUT or DELETE, with a proof of the secret when there is one (a weft directory
  // server with a secret wants it; Mooncake's own servers ignore the header).
  Result<HttpReply> Write(const char* method, const std::string& key, const std::string& body, Deadline d) const {
    HttpHeaders headers;
    if (!secret.empty()) {
      WEFT_ASSIGN_OR_RETURN(std::string proof, SignDirectoryRequest(secret, SignedRequest{method, path, key, body}));
      headers.emplace_back(std::string(kDirectoryAuthHeader), std::move(proof));
    }
    return HttpCall(target, method, Url(key), body, d, "metadata server", headers);
  }

  // Maps the reply of a metadata server: 200 OK, 404 NOT_FOUND, 401 UNAUTHENTICATED and 403
  // PERMISSION_DENIED (a weft server's refusals, its reason in the body), anything else UNAVAILABLE.
  Result<std::string> Interpret(const HttpReply& reply, const std::string& key) const {
    if (reply.status == 200) return reply.body;
    if (reply.status == 404) return Error(Code::kNotFound, "no key '{}' at metadata server {}", key, target.Address());
    if (reply.status == 401 || reply.status == 403) {
      return Error(reply.status == 401 ? Code::kUnauthenticated : Code::kPermissionDenied,
                   "metadata server {} refused key '{}': {}", target.Address(), key, reply.body.substr(0, 300));
    }
    return Error(Code::kUnavailable, "metadata server {} answered HTTP {} for key '{}': {}", target.Address(),
                 reply.status, key, reply.body.substr(0, 200));
  }

  Status Unsupported(const char* what) const {
    return Error(Code::kNotSupported,
                 "{} is not part of Mooncake's HTTP metadata protocol (http://{}{}); use an embedded:// or etcd:// "
                 "directory for it",
                 what, target.Address(), path);
  }
};

MooncakeHttpDirectory::MooncakeHttpDirectory(std::string host, uint16_t port, std::string path,
                                             DirectoryOptions options)
    : Directory(std::move(options)), impl_(std::make_unique<Impl>()) {
  impl_->target = HttpTarget{std::move(host), port};
  impl_->path = path.empty() ? "/metadata" : std::move(path);
  impl_->secret = this->options().cluster_secret;
}

MooncakeHttpDirectory::~MooncakeHttpDirectory() = default;

std::string MooncakeHttpDirectory::Describe() const { return "http://" + impl_->target.Address() + impl_->path; }

Result<std::string> MooncakeHttpDirectory::DoGet(const std::string& key, Deadline d) {
  WEFT_ASSIGN_OR_RETURN(HttpReply reply, HttpCall(impl_->target, "GET", impl_->Url(key), "", d, "metadata server"));
  return impl_->Interpret(reply, key);
}

Status MooncakeHttpDirectory::DoPut(const std::string& key, const std::string& value, LeaseId lease, Deadline d) {
  if (lease != 0) return impl_->Unsupported("a lease");
  WEFT_ASSIGN_OR_RETURN(HttpReply reply, impl_->Write("PUT", key, value, d));
  return impl_->Interpret(reply, key).status();
}

Status MooncakeHttpDirectory::DoDelete(const std::string& key, LeaseId, Deadline d) {
  WEFT_ASSIGN_OR_RETURN(HttpReply reply, impl_->Write("DELETE", key, "", d));
  return impl_->Interpret(reply, key).status();
}

Result<KeyValues> MooncakeHttpDirectory::DoList(const std::string&, Deadline) { return impl_->Unsupported("List"); }
Result<bool> MooncakeHttpDirectory::DoPutIfAbsent(const std::string&, const std::string&, LeaseId, Deadline) {
  return impl_->Unsupported("PutIfAbsent");
}
Result<LeaseId> MooncakeHttpDirectory::DoGrant(std::chrono::milliseconds, Deadline) {
  return impl_->Unsupported("a lease");
}
Status MooncakeHttpDirectory::DoKeepAlive(LeaseId, Deadline) { return impl_->Unsupported("a lease"); }
Status MooncakeHttpDirectory::DoRevoke(LeaseId, Deadline) { return impl_->Unsupported("a lease"); }
Result<WatchHandle> MooncakeHttpDirectory::DoWatch(const std::string&, WatchCallback, Deadline) {
  return impl_->Unsupported("Watch");
}

}  // namespace weft::meta
