#include "meta/directory.h"

#include <cstdlib>

#include <charconv>

#include "meta/embedded_directory.h"
#include "meta/etcd_directory.h"
#include "meta/memory_store.h"
#include "meta/mooncake_http_directory.h"
#include "meta/p2p_directory.h"

namespace weft::meta {

Status Directory::Commit(std::span<const DirectoryWrite> writes, const WriteGuard& guard, OptDeadline d) {
  if (writes.size() > kMaxCommitWrites) {
    return Error(Code::kInvalidArgument, "{} writes in one commit, at most {}: split the batch", writes.size(),
                 kMaxCommitWrites);
  }
  if (writes.empty()) return OkStatus();
  return DoCommit(writes, guard, Pick(d));
}

Status Directory::DoCommit(std::span<const DirectoryWrite>, const WriteGuard&, Deadline) {
  return Error(Code::kNotSupported, "{} cannot commit guarded batches: use etcd:// (or the in-process store)",
               Describe());
}

Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& text) {
  auto bad = [&](const char* why) {
    return Error(Code::kInvalidArgument, "'{}' is not host:port ({})", text, why);
  };
  std::string host;
  std::string port;
  if (!text.empty() && text[0] == '[') {  // [v6]:port
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') return bad("bad brackets");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) return bad("no port");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) return bad("IPv6 addresses need [brackets]");
  }
  if (host.empty()) return bad("empty host");
  if (host.find_first_of("/?#@ ") != std::string::npos) return bad("bad character in host");
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return bad("port must be 0..65535");
  }
  return std::make_pair(host, static_cast<uint16_t>(value));
}

Result<std::unique_ptr<Directory>> OpenDirectory(const std::string& url, DirectoryOptions options) {
  auto strip = [&](std::string_view scheme) -> std::optional<std::string> {
    if (url.compare(0, scheme.size(), scheme) == 0) return url.substr(scheme.size());
    return std::nullopt;
  };
  auto endpoint = [&](const std::string& text) -> Result<std::pair<std::string, uint16_t>> {
    auto hp = ParseHostPort(text);
    if (!hp.ok()) return hp.status().Annotate(fmt::format("directory URL '{}'", url));
    if (hp->second == 0) return Error(Code::kInvalidArgument, "directory URL '{}': port 0 names no server", url);
    return hp;
  };

  if (url == "local" || url == "embedded" || url == "embedded://") {
    return std::unique_ptr<Directory>(std::make_unique<MemoryStore>(std::move(options)));
  }
  if (auto rest = strip("embedded://")) {
    WEFT_ASSIGN_OR_RETURN(auto hp, endpoint(*rest));
    return std::unique_ptr<Directory>(std::make_unique<EmbeddedDirectory>(hp.first, hp.second, std::move(options)));
  }
  if (auto rest = strip("etcd://")) {
    // Endpoints are separated by ',' or by ';' (Mooncake's and etcd's own clients write
    // "etcd://h1:2379;h2:2379" for HA masters).
    std::vector<std::pair<std::string, uint16_t>> eps;
    size_t start = 0;
    while (start <= rest->size()) {
      size_t comma = rest->find_first_of(",;", start);
      if (comma == std::string::npos) comma = rest->size();
      WEFT_ASSIGN_OR_RETURN(auto hp, endpoint(rest->substr(start, comma - start)));
      eps.push_back(std::move(hp));
      start = comma + 1;
    }
    if (options.etcd_user.empty()) {
      const char* user = std::getenv("WEFT_ETCD_USER");
      const char* password = std::getenv("WEFT_ETCD_PASSWORD");
      if (user != nullptr) options.etcd_user = user;
      if (password != nullptr) options.etcd_password = password;
    }
    return std::unique_ptr<Directory>(std::make_unique<EtcdDirectory>(std::move(eps), std::move(options)));
  }
  if (auto rest = strip("http://")) {
    size_t slash = rest->find('/');
    std::string path = slash == std::string::npos ? "/metadata" : rest->substr(slash);
    WEFT_ASSIGN_OR_RETURN(auto hp, endpoint(rest->substr(0, slash)));
    return std::unique_ptr<Directory>(
        std::make_unique<MooncakeHttpDirectory>(hp.first, hp.second, std::move(path), std::move(options)));
  }
  if (url == "p2p" || url == "P2PHANDSHAKE" || url == "p2p://") {
    std::string bind = options.p2p_bind;
    WEFT_ASSIGN_OR_RETURN(auto p2p, P2PDirectory::Open(bind, std::move(options)));
    return std::unique_ptr<Directory>(std::move(p2p));
  }
  if (auto rest = strip("p2p://")) {
    WEFT_ASSIGN_OR_RETURN(auto p2p, P2PDirectory::Open(*rest, std::move(options)));
    return std::unique_ptr<Directory>(std::move(p2p));
  }
  return Error(Code::kInvalidArgument,
               "unknown directory URL '{}': use local, embedded://host:port, etcd://host:port[,host:port] (or ;), "
               "http://host:port/metadata (Mooncake's metadata protocol) or p2p[://host:port]",
               url);
}

}  // namespace weft::meta
