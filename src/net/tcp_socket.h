// TCP sockets for the data plane: listen, connect with a deadline, and send/receive whole
// buffers or iovec lists with a deadline.
//
// Every socket made here is non-blocking and close-on-exec, has TCP_NODELAY and large kernel
// buffers; sends use MSG_NOSIGNAL, so a closed peer is an error value, never SIGPIPE. Waiting
// is poll(2) bounded by the caller's Deadline; EINTR is retried.
//
// Error mapping (every message names the peer as host:port):
//   ECONNREFUSED, ECONNRESET, EPIPE, ENOTCONN, EOF in the middle of a buffer -> PEER_DOWN
//   ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ENETDOWN (kernel gave up)           -> PEER_DOWN
//   the deadline passed                                                        -> TIMEOUT
//   anything else                                                              -> IO (with errno)
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/clock.h"
#include "base/result.h"
#include "net/unix_socket.h"  // UniqueFd

namespace weft::net {

struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const;  // "host:port", "[v6]:port"
  bool operator==(const HostPort&) const = default;
  auto operator<=>(const HostPort&) const = default;
};

// "host:port" or "[v6addr]:port" -> HostPort. INVALID_ARGUMENT for anything else.
Result<HostPort> ParseHostPort(std::string_view text);
// The same for an address to listen on, where port 0 means "any free one".
Result<HostPort> ParseBindAddress(std::string_view text);

struct TcpOptions {
  int socket_buffer_bytes = 4 << 20;  // SO_SNDBUF and SO_RCVBUF (the kernel caps them at wmem/rmem_max)
  bool no_delay = true;               // TCP_NODELAY
};

// Binds host:port (port 0 = an ephemeral port; host "" or "0.0.0.0" = every IPv4 address,
// "::" = every address) and listens. The socket is non-blocking, SO_REUSEADDR.
Result<UniqueFd> ListenTcp(const std::string& host, uint16_t port, int backlog = 512,
                           const TcpOptions& options = {});

// The port a bound socket got.
Result<uint16_t> LocalPort(int fd);

// Non-blocking connect + poll until the deadline. PEER_DOWN when refused or unreachable,
// TIMEOUT when the deadline passes, INVALID_ARGUMENT when the host does not resolve.
Result<UniqueFd> ConnectTcp(const HostPort& peer, Deadline deadline, const TcpOptions& options = {});

// One pending connection (tuned with `options`), or an invalid UniqueFd when there is none.
// `peer` (optional) receives the client's address as text.
Result<UniqueFd> AcceptTcp(int listen_fd, const TcpOptions& options = {}, std::string* peer = nullptr);

// TCP_NODELAY and buffer sizes on an existing socket.
Status TuneTcp(int fd, const TcpOptions& options);

// Sends/receives exactly len bytes, waiting with poll until the deadline. `peer` names the other
// end in messages. On error the stream position is unknown: drop the connection.
Status SendAllTcp(int fd, const void* data, size_t len, Deadline deadline, std::string_view peer);
Status RecvAllTcp(int fd, void* data, size_t len, Deadline deadline, std::string_view peer);

// Scatter/gather versions (sendmsg/recvmsg with iovecs). The iovec array is consumed in place
// (entries are advanced as bytes move), so pass a copy if you need it afterwards.
Status SendvAll(int fd, iovec* iov, size_t iovcnt, Deadline deadline, std::string_view peer);
Status RecvvAll(int fd, iovec* iov, size_t iovcnt, Deadline deadline, std::string_view peer);

// One non-blocking sendmsg/recvmsg. Returns the bytes moved; 0 from SendvSome means the socket
// is full (EAGAIN); RecvvSome returns 0 for EAGAIN and PEER_DOWN for end of stream.
Result<size_t> SendvSome(int fd, const iovec* iov, size_t iovcnt, std::string_view peer);
Result<size_t> RecvvSome(int fd, const iovec* iov, size_t iovcnt, std::string_view peer);

// Waits for `events` (POLLIN/POLLOUT) until the deadline; TIMEOUT when it passes. Returns OK also
// on POLLERR/POLLHUP so that the next syscall reports the error.
Status WaitFd(int fd, short events, Deadline deadline, std::string_view what);

// Maps an errno from a socket call to a Status naming the peer.
Status SocketError(std::string_view what, std::string_view peer, int err);

// Advances an iovec array by n bytes; returns the index of the first non-empty entry.
size_t AdvanceIov(iovec* iov, size_t iovcnt, size_t n);

}  // namespace weft::net
