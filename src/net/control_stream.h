// Where a pool's control plane (the coordinator) is reached, and the connected stream to it.
//
// A coordinator address is either a unix socket path ("/tmp/weft-kv.sock") or "tcp://host:port".
// A unix stream carries segment memfds (SCM_RIGHTS) and needs no authentication: the socket
// file is 0600, so only the same user on the same machine can connect. A tcp stream carries no
// descriptors and is authenticated first with the cluster-secret handshake of net/auth.h; after
// it the same length-prefixed control frames (wire/control.h) flow as over unix.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/clock.h"
#include "base/result.h"
#include "net/auth.h"
#include "net/tcp_socket.h"
#include "net/unix_socket.h"

namespace weft::net {

inline constexpr std::string_view kTcpScheme = "tcp://";

struct ControlAddress {
  bool tcp = false;
  std::string path;  // unix: the socket path
  HostPort where;    // tcp: host and port; port 0 only makes sense for a listener
  std::string ToString() const;  // the path, or "tcp://host:port"
};

// A path (anything without the tcp:// scheme) or tcp://host:port (port 0 allowed: a listener
// then takes any free port). INVALID_ARGUMENT for an empty text or a malformed tcp:// URL.
Result<ControlAddress> ParseControlAddress(std::string_view text);

// Connects to a coordinator. unix: UNAVAILABLE when nothing listens. tcp: UNAVAILABLE when the
// connection is refused (no coordinator there), TIMEOUT at the deadline, UNAUTHENTICATED when
// the secrets differ or this side has none (the message says to set WEFT_CLUSTER_SECRET).
Result<UniqueFd> ConnectControl(const ControlAddress& address, const AuthOptions& auth, Deadline deadline);

// Liveness of a long-lived tcp control connection: keepalive probes every second once idle for
// a second, and TCP_USER_TIMEOUT, so that a connection whose other end vanished without a FIN
// (machine off, link down: half-open) errors out after about `timeout` instead of the kernel's
// default of many minutes. A no-op on non-TCP sockets.
Status SetStreamLiveness(int fd, std::chrono::milliseconds timeout);

}  // namespace weft::net
