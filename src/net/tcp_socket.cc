#include "net/tcp_socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace weft::net {

namespace {

constexpr size_t kMaxIov = IOV_MAX < 1024 ? IOV_MAX : 1024;

struct AddrInfoDeleter {
  void operator()(addrinfo* a) const {
    if (a) freeaddrinfo(a);
  }
};

Result<std::unique_ptr<addrinfo, AddrInfoDeleter>> Resolve(const std::string& host, uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  const char* node = host.empty() ? nullptr : host.c_str();
  if (passive && host == "0.0.0.0") hints.ai_family = AF_INET;
  int rc = ::getaddrinfo(node, service.c_str(), &hints, &res);
  if (rc != 0) {
    return Error(Code::kInvalidArgument, "cannot resolve '{}': {}", host, rc == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(rc));
  }
  return std::unique_ptr<addrinfo, AddrInfoDeleter>(res);
}

std::string AddrText(const sockaddr* sa) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
    return fmt::format("{}:{}", host, port);
  }
  if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
    return fmt::format("[{}]:{}", host, port);
  }
  return "?";
}

bool IsPeerGone(int err) {
  switch (err) {
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case EPIPE:
    case ENOTCONN:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case ENETUNREACH:
    case ENETDOWN:
    case ENETRESET:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

namespace {

Result<HostPort> ParseAddress(std::string_view text, bool allow_port_zero) {
  HostPort hp;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return Error(Code::kInvalidArgument, "'{}' is not [v6addr]:port", text);
    hp.host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return Error(Code::kInvalidArgument, "'{}' is not host:port", text);
    hp.host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  if (port_text.empty() || port_text.size() > 5) return Error(Code::kInvalidArgument, "bad port in '{}'", text);
  uint32_t port = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9') return Error(Code::kInvalidArgument, "bad port in '{}'", text);
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if ((port == 0 && !allow_port_zero) || port > 65535) {
    return Error(Code::kInvalidArgument, "port out of range in '{}'", text);
  }
  hp.port = static_cast<uint16_t>(port);
  return hp;
}

}  // namespace

Result<HostPort> ParseHostPort(std::string_view text) { return ParseAddress(text, false); }

Result<HostPort> ParseBindAddress(std::string_view text) { return ParseAddress(text, true); }

Status SocketError(std::string_view what, std::string_view peer, int err) {
  if (IsPeerGone(err)) {
    return Error(Code::kPeerDown, "{} {}: {} (the peer is down, restarted or unreachable)", what, peer,
                 std::strerror(err));
  }
  return Error(Code::kIo, "{} {}: {} (errno {})", what, peer, std::strerror(err), err);
}

Status TuneTcp(int fd, const TcpOptions& options) {
  int one = options.no_delay ? 1 : 0;
  // Not every socket is TCP (tests pass socketpairs); ignore EOPNOTSUPP for NODELAY.
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 && errno != EOPNOTSUPP && errno != ENOPROTOOPT)
    return ErrnoStatus("setsockopt(TCP_NODELAY)", errno);
  if (options.socket_buffer_bytes > 0) {
    int b = options.socket_buffer_bytes;
    // Failures only mean the kernel keeps its default; not worth failing a connection for.
    (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof b);
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof b);
  }
  return OkStatus();
}

Result<UniqueFd> ListenTcp(const std::string& host, uint16_t port, int backlog, const TcpOptions& options) {
  std::string where = HostPort{host.empty() ? "0.0.0.0" : host, port}.ToString();
  WEFT_ASSIGN_OR_RETURN(auto ai, Resolve(host.empty() ? "0.0.0.0" : host, port, true));
  int last_err = 0;
  for (addrinfo* a = ai.get(); a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_err = errno;
      continue;
    }
    UniqueFd sock(fd);
    int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    // Accepted sockets inherit the buffer sizes set before listen (needed for window scaling).
    if (options.socket_buffer_bytes > 0) {
      int b = options.socket_buffer_bytes;
      (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof b);
      (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof b);
    }
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0) {
      last_err = errno;
      continue;
    }
    if (::listen(fd, backlog) != 0) {
      last_err = errno;
      continue;
    }
    return sock;
  }
  if (last_err == EADDRINUSE)
    return Error(Code::kAlreadyExists, "listen on {}: the port is in use; choose another or use port 0", where);
  return Error(Code::kIo, "listen on {}: {} (errno {})", where, std::strerror(last_err), last_err);
}

Result<uint16_t> LocalPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return ErrnoStatus("getsockname", errno);
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return Error(Code::kInvalidArgument, "socket is not an IP socket");
}

Result<UniqueFd> ConnectTcp(const HostPort& peer, Deadline deadline, const TcpOptions& options) {
  std::string where = peer.ToString();
  auto ai = Resolve(peer.host, peer.port, false);
  if (!ai.ok()) return ai.status().Annotate(fmt::format("connect to {}", where));
  Status last = Error(Code::kPeerDown, "connect to {}: no address", where);
  for (addrinfo* a = ai->get(); a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last = ErrnoStatus(fmt::format("socket() for {}", where), errno);
      continue;
    }
    UniqueFd sock(fd);
    // Before connect, so that the SYN advertises window scaling for the large buffer.
    WEFT_RETURN_IF_ERROR(TuneTcp(fd, options));
    int rc;
    do {
      rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    } while (rc != 0 && errno == EINTR);
    if (rc == 0) return sock;
    int err = errno;
    if (err == EINPROGRESS) {
      Status w = WaitFd(fd, POLLOUT, deadline, fmt::format("connect to {}", where));
      if (!w.ok()) return w;
      int so_error = 0;
      socklen_t len = sizeof so_error;
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) return ErrnoStatus("getsockopt(SO_ERROR)", errno);
      if (so_error == 0) return sock;
      err = so_error;
    }
    last = SocketError("connect to", where, err);
  }
  return last;
}

Result<UniqueFd> AcceptTcp(int listen_fd, const TcpOptions& options, std::string* peer) {
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      UniqueFd sock(fd);
      WEFT_RETURN_IF_ERROR(TuneTcp(fd, options));
      if (peer) *peer = AddrText(reinterpret_cast<sockaddr*>(&ss));
      return sock;
    }
    int err = errno;
    if (err == EINTR) continue;
    // A connection that died in the queue is not our error.
    if (err == EAGAIN || err == EWOULDBLOCK || err == ECONNABORTED || err == EPROTO) return UniqueFd();
    return ErrnoStatus("accept4", err);
  }
}

Status WaitFd(int fd, short events, Deadline deadline, std::string_view what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, deadline.left_ms_for_poll());
    if (rc > 0) return OkStatus();
    if (rc == 0) {
      if (deadline.expired()) return Error(Code::kTimeout, "{}: the deadline passed", what);
      continue;  // poll rounds down to whole milliseconds
    }
    if (errno != EINTR) return ErrnoStatus("poll", errno);
  }
}

size_t AdvanceIov(iovec* iov, size_t iovcnt, size_t n) {
  size_t i = 0;
  while (i < iovcnt && n > 0) {
    size_t take = std::min(n, iov[i].iov_len);
    iov[i].iov_base = static_cast<uint8_t*>(iov[i].iov_base) + take;
    iov[i].iov_len -= take;
    n -= take;
    if (iov[i].iov_len == 0) ++i;
  }
  while (i < iovcnt && iov[i].iov_len == 0) ++i;
  return i;
}

Result<size_t> SendvSome(int fd, const iovec* iov, size_t iovcnt, std::string_view peer) {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = std::min(iovcnt, kMaxIov);
  for (;;) {
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<size_t>(n);
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) return size_t{0};
    return SocketError("send to", peer, err);
  }
}

Result<size_t> RecvvSome(int fd, const iovec* iov, size_t iovcnt, std::string_view peer) {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = std::min(iovcnt, kMaxIov);
  for (;;) {
    ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n > 0) return static_cast<size_t>(n);
    if (n == 0) return Error(Code::kPeerDown, "receive from {}: the peer closed the connection", peer);
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) return size_t{0};
    return SocketError("receive from", peer, err);
  }
}

Status SendvAll(int fd, iovec* iov, size_t iovcnt, Deadline deadline, std::string_view peer) {
  size_t first = AdvanceIov(iov, iovcnt, 0);
  while (first < iovcnt) {
    auto n = SendvSome(fd, iov + first, iovcnt - first, peer);
    if (!n.ok()) return n.status();
    if (*n == 0) {
      WEFT_RETURN_IF_ERROR(WaitFd(fd, POLLOUT, deadline, fmt::format("send to {}", peer)));
      continue;
    }
    first += AdvanceIov(iov + first, iovcnt - first, *n);
  }
  return OkStatus();
}

Status RecvvAll(int fd, iovec* iov, size_t iovcnt, Deadline deadline, std::string_view peer) {
  size_t first = AdvanceIov(iov, iovcnt, 0);
  while (first < iovcnt) {
    auto n = RecvvSome(fd, iov + first, iovcnt - first, peer);
    if (!n.ok()) return n.status();
    if (*n == 0) {
      WEFT_RETURN_IF_ERROR(WaitFd(fd, POLLIN, deadline, fmt::format("receive from {}", peer)));
      continue;
    }
    first += AdvanceIov(iov + first, iovcnt - first, *n);
  }
  return OkStatus();
}

Status SendAllTcp(int fd, const void* data, size_t len, Deadline deadline, std::string_view peer) {
  iovec iov{const_cast<void*>(data), len};
  return SendvAll(fd, &iov, 1, deadline, peer);
}

Status RecvAllTcp(int fd, void* data, size_t len, Deadline deadline, std::string_view peer) {
  iovec iov{data, len};
  return RecvvAll(fd, &iov, 1, deadline, peer);
}

}  // namespace weft::net
