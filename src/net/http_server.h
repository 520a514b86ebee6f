// HttpServer: weft's one HTTP/1.1 server (the directory's API, Mooncake's /metadata, /metrics),
// on one net::EventLoop and one thread. Handlers run on the loop's thread and must not block;
// a request that waits for something (a directory watch) is *parked*: its connection stays open
// holding no thread, until the handler's owner answers it (Answer, on the loop's thread) or its
// time runs out.
//
// Every connection is bounded, so a few slow or hostile clients cannot starve the others:
//  - the request head must be complete within header_timeout of its first byte (of the accept
//    for a new connection), however slowly bytes trickle in; past max_header_bytes it is 431;
//  - a body within body_timeout plus its length at min_body_rate; a Content-Length over
//    max_body is answered 413 at once, from the head alone: the body is never read or kept;
//  - the reply written within write_timeout; an idle keep-alive connection is closed after
//    idle_timeout;
//  - at most max_connections at once, max_connections_per_client from one address: extra ones
//    are answered 503 and closed; bodies in flight all together within max_pending_body_bytes.
// Bodies are read only by Content-Length (net/http_message.h: chunked bodies get 501).
// Refusals and timeouts are counted in `metrics` as weft_http_refused_total{server,reason}.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>

#include "base/metrics.h"
#include "base/result.h"
#include "net/http_message.h"

namespace weft::net {

struct HttpServerOptions {
  std::string bind = "127.0.0.1:0";  // host:port; port 0 picks a free one (see port())
  std::string name = "http";         // the `server` label of its metrics, and in logs
  size_t max_header_bytes = 16 << 10;
  uint64_t max_body = 16u << 20;
  std::chrono::milliseconds header_timeout{5000};
  std::chrono::milliseconds body_timeout{10000};
  uint64_t min_body_rate = 1u << 20;  // bytes/s: a body of n bytes has body_timeout + n/rate
  // The bodies of all requests in flight together (each counted from its head until its answer
  // is written): past it a request is answered 503, so many connections cannot add up to
  // max_connections * max_body of memory.
  uint64_t max_pending_body_bytes = 256u << 20;
  std::chrono::milliseconds write_timeout{10000};
  std::chrono::milliseconds idle_timeout{30000};
  size_t max_connections = 1024;
  size_t max_connections_per_client = 128;
  MetricsRegistry* metrics = nullptr;  // not owned; may be null (nothing counted)
};

// Names a request a handler parked, for Answer.
using HttpTicket = uint64_t;

// A handler's way to say "not yet": the connection waits until Answer(ticket, ...) or `until`,
// when on_timeout gives the answer. on_drop runs (on the loop's thread, or in Stop after the
// loop ended) when the request will never be answered: the client left or the server stops.
struct HttpParked {
  std::chrono::steady_clock::time_point until;
  std::function<HttpResponse()> on_timeout;
  std::function<void()> on_drop;
};
using HttpOutcome = std::variant<HttpResponse, HttpParked>;
using HttpHandler = std::function<HttpOutcome(const HttpRequest& request, HttpTicket ticket)>;

class HttpServer {
 public:
  // Binds and starts serving on a thread. INVALID_ARGUMENT for a bind that is not host:port,
  // UNAVAILABLE when it cannot be bound.
  static Result<std::unique_ptr<HttpServer>> Start(HttpServerOptions options, HttpHandler handler);
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Stops the loop, closes every connection (parked requests get on_drop), joins the thread.
  // Idempotent.
  void Stop();

  // Loop thread only (a handler, a posted task): answers a parked request. A ticket whose
  // connection is gone, or already answered, is ignored.
  void Answer(HttpTicket ticket, HttpResponse response);
  // Any thread: runs `task` on the loop's thread (dropped once the server stops).
  void Post(std::function<void()> task);

  const std::string& host() const;
  uint16_t port() const;
  std::string address() const;  // host:port, brackets around an IPv6 host

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::net
