// Reads a pool's status from its coordinator without joining (`weft status`): connects as a
// peer would (unix path, or tcp:// with the cluster-secret handshake), sends StatusRequest pages
// until the last one, and never takes a rank or a slice (wire/control.h).
#pragma once

#include <cstdint>
#include <string>

#include "base/clock.h"
#include "base/result.h"
#include "net/auth.h"
#include "wire/control.h"

namespace weft::meta {

struct StatusQuery {
  std::string address;  // the coordinator: a unix socket path or tcp://host:port
  net::AuthOptions auth;  // tcp only: the cluster secret to prove
  Deadline deadline = Deadline::After(std::chrono::seconds(3));  // for the whole query
  uint32_t page_size = wire::kMaxStatusPeersPerReply;  // rows per page, 1..kMaxStatusPeersPerReply
};

// The pool as one reply: the last page's figures with every page's rows. UNAVAILABLE when no
// coordinator answers or it closes the connection unanswered (one older than control protocol 5
// does); UNAUTHENTICATED when the secrets differ; TIMEOUT at the deadline; PROTOCOL for a reply
// that does not parse or pages that do not advance; otherwise the coordinator's own refusal.
Result<wire::StatusReply> QueryPoolStatus(const StatusQuery& query);

}  // namespace weft::meta
