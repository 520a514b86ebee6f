// MetricsServer: serves GET /metrics in Prometheus text (metrics_address; docs/ops.md) for a
// long-running process: `weft meta`, `weft store-master`, `weft trans-serve`, a pool peer.
//
// One thread runs a poll loop over non-blocking sockets. Every connection has one deadline for
// its whole life (request read and reply written), not a timeout per read: a client that
// trickles a byte a second would otherwise keep a worker for as long as it likes. So slow or
// stuck clients cost a slot each until their deadline, never a scrape of anyone else. Each
// connection carries one request (Connection: close): scrapers open one per scrape anyway.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/result.h"

namespace weft::meta {

// Produces the body of a scrape (Prometheus text). Runs on the server's thread, one at a time.
using MetricsSource = std::function<std::string()>;

struct MetricsServerOptions {
  std::string bind;  // host:port (required: no default to 0.0.0.0); port 0 picks a free one
  std::chrono::milliseconds connection_deadline{5000};  // read the request and write the reply in this
  size_t max_connections = 64;  // more at once are closed on accept
};

class MetricsServer {
 public:
  // Binds and starts serving. INVALID_ARGUMENT for a bind that is not host:port, UNAVAILABLE
  // when it cannot be bound.
  static Result<std::unique_ptr<MetricsServer>> Start(MetricsServerOptions options, MetricsSource source);
  ~MetricsServer();  // Stop()
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Closes every connection and joins the thread. Idempotent.
  void Stop();

  uint16_t port() const;        // the port bound (the free one, for port 0)
  std::string address() const;  // host:port

  struct Impl;

 private:
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The reply to one request, head included ("HTTP/1.1 200 OK\r\n..."): 200 with the source's
// text for GET (or HEAD) /metrics, 404 for another path, 405 for another method, 400 for a
// request line that does not parse. Pure, for tests.
std::string MetricsReply(std::string_view request_head, const MetricsSource& source);

}  // namespace weft::meta
