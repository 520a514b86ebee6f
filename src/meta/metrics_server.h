// MetricsServer: serves GET /metrics in Prometheus text (metrics_address; docs/ops.md) for a
// long-running process: `weft meta`, `weft store-master`, `weft trans-serve`, a pool peer.
//
// It runs on net::HttpServer (one event loop, one thread): a request head must be complete
// within connection_deadline of its first byte however slowly it trickles, the reply written
// within it too, so slow or stuck clients cost a slot each until their deadline, never a scrape
// of anyone else.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/result.h"
#include "net/http_message.h"

namespace weft::meta {

// Produces the body of a scrape (Prometheus text). Runs on the server's thread, one at a time.
using MetricsSource = std::function<std::string()>;

struct MetricsServerOptions {
  std::string bind;  // host:port (required: no default to 0.0.0.0); port 0 picks a free one
  std::chrono::milliseconds connection_deadline{5000};  // read the request head, write the reply
  size_t max_connections = 64;  // more at once are answered 503 and closed
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

// The answer to one parsed request: 200 with the source's text for GET (or HEAD) /metrics, 404
// for another path, 405 for another method.
net::HttpResponse MetricsResponse(const net::HttpRequest& request, const MetricsSource& source);

// The reply to one request, head included ("HTTP/1.1 200 OK\r\n..."): 200 with the source's
// text for GET (or HEAD) /metrics, 404 for another path, 405 for another method, 400 for a
// request line that does not parse. Pure, for tests: it parses the head as the server does.
std::string MetricsReply(std::string_view request_head, const MetricsSource& source);

}  // namespace weft::meta
