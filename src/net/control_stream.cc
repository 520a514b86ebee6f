#include "net/control_stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

namespace weft::net {

std::string ControlAddress::ToString() const {
  return tcp ? std::string(kTcpScheme) + where.ToString() : path;
}

Result<ControlAddress> ParseControlAddress(std::string_view text) {
  ControlAddress a;
  if (text.empty()) return Error(Code::kInvalidArgument, "the coordinator address is empty");
  if (text.substr(0, kTcpScheme.size()) != kTcpScheme) {
    if (text.find("://") != std::string_view::npos) {
      return Error(Code::kInvalidArgument,
                   "coordinator '{}': only tcp://host:port or a unix socket path are understood", text);
    }
    a.path = std::string(text);
    return a;
  }
  a.tcp = true;
  std::string_view rest = text.substr(kTcpScheme.size());
  // ParseHostPort refuses port 0, which a listener may ask for; parse it as port 1 and put 0 back.
  const bool port_zero = rest.size() >= 2 && rest.substr(rest.size() - 2) == ":0";
  std::string probe(rest);
  if (port_zero) probe.back() = '1';
  auto hp = ParseHostPort(probe);
  if (!hp.ok() || hp->host.empty()) {
    return Error(Code::kInvalidArgument, "coordinator '{}' is not tcp://host:port", text);
  }
  a.where = *hp;
  if (port_zero) a.where.port = 0;
  return a;
}

Result<UniqueFd> ConnectControl(const ControlAddress& address, const AuthOptions& auth, Deadline deadline) {
  if (!address.tcp) return ConnectUnix(address.path, deadline);
  const std::string where = address.ToString();
  if (address.where.port == 0) {
    return Error(Code::kUnavailable, "coordinator {} names no port: only a host may listen on port 0", where);
  }
  // Checked before connecting, so that a peer without a secret is told what to set even when the
  // coordinator is not up yet.
  WEFT_RETURN_IF_ERROR(CheckAuthPolicy(auth).Annotate(fmt::format("joining the coordinator at {}", where)));
  TcpOptions options;
  options.socket_buffer_bytes = 0;  // control traffic is small; keep the kernel's autotuning
  auto sock = ConnectTcp(address.where, deadline, options);
  if (!sock.ok()) {
    // Refused or unreachable means "no coordinator there", as a missing unix socket does.
    if (sock.status().code() == Code::kPeerDown) {
      return Error(Code::kUnavailable, "no coordinator answers at {}: {}", where, sock.status().message());
    }
    return sock.status();
  }
  Status s = AuthenticateClient(sock->get(), auth, deadline, where);
  if (!s.ok()) {
    if (s.code() == Code::kPeerDown) return Error(Code::kUnavailable, "{}", s.message());
    return s;
  }
  return sock;
}

Status SetStreamLiveness(int fd, std::chrono::milliseconds timeout) {
  int one = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) != 0) {
    if (errno == EOPNOTSUPP || errno == ENOPROTOOPT) return OkStatus();
    return ErrnoStatus("setsockopt(SO_KEEPALIVE)", errno);
  }
  const int secs = static_cast<int>(std::max<int64_t>(1, timeout.count() / 1000));
  int idle = 1, intvl = 1, cnt = std::max(1, secs);
  unsigned int user_timeout = static_cast<unsigned int>(std::max<int64_t>(1, timeout.count()));
  // Failures here only leave the kernel's (slower) defaults; heartbeats still catch a dead peer.
  if (::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) != 0 && errno != ENOPROTOOPT &&
      errno != EOPNOTSUPP)
    return ErrnoStatus("setsockopt(TCP_KEEPIDLE)", errno);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
  return OkStatus();
}

}  // namespace weft::net
