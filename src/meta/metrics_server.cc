#include "meta/metrics_server.h"

#include <mutex>

#include "meta/directory.h"
#include "meta/http_call.h"
#include "net/http_server.h"

namespace weft::meta {

namespace {

constexpr size_t kMaxRequestHead = 8192;  // a scrape's head is a few hundred bytes
constexpr uint64_t kMaxRequestBody = 4096;  // a scrape has none; a small one still gets its 405

}  // namespace

net::HttpResponse MetricsResponse(const net::HttpRequest& request, const MetricsSource& source) {
  if (request.path != "/metrics") return {404, "text/plain", "only /metrics is served here\n"};  // Prometheus may add parameters
  if (request.method != "GET" && request.method != "HEAD") return {405, "text/plain", "GET /metrics\n"};
  return {200, "text/plain; version=0.0.4; charset=utf-8", source ? source() : std::string()};
}

std::string MetricsReply(std::string_view request_head, const MetricsSource& source) {
  auto parsed = net::ParseHttpHead(request_head, kMaxRequestHead, kMaxRequestBody);
  using State = net::HttpHeadParse::State;
  if (parsed.state == State::kIncomplete) return net::FormatHttpResponse({400, "text/plain", "incomplete request\n"}, true, false);
  if (parsed.state == State::kRefused) {
    return net::FormatHttpResponse({parsed.status, "text/plain", parsed.reason + "\n"}, true, false);
  }
  return net::FormatHttpResponse(MetricsResponse(parsed.request, source), true, parsed.request.method == "HEAD");
}

struct MetricsServer::Impl {
  std::unique_ptr<net::HttpServer> http;
  std::mutex stop_mu;
  bool stopped = false;
};

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MetricsServer::~MetricsServer() { Stop(); }

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(MetricsServerOptions options, MetricsSource source) {
  // No default bind (an empty one is an error) and no host-less ":port": metrics are not for
  // every interface unless the operator names one.
  WEFT_RETURN_IF_ERROR(ParseHostPort(options.bind).status());
  net::HttpServerOptions http;
  http.bind = options.bind;
  http.name = "metrics";
  http.max_header_bytes = kMaxRequestHead;
  http.max_body = kMaxRequestBody;
  http.header_timeout = options.connection_deadline;
  http.body_timeout = options.connection_deadline;
  http.write_timeout = options.connection_deadline;
  http.idle_timeout = options.connection_deadline;
  http.max_connections = options.max_connections;
  http.max_connections_per_client = options.max_connections;
  auto handler = [source = std::move(source)](const net::HttpRequest& request, net::HttpTicket) -> net::HttpOutcome {
    return MetricsResponse(request, source);
  };
  auto started = net::HttpServer::Start(std::move(http), std::move(handler));
  if (!started.ok()) return started.status().Annotate("metrics server");
  auto impl = std::make_unique<Impl>();
  impl->http = std::move(*started);
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
}

void MetricsServer::Stop() {
  std::lock_guard lk(impl_->stop_mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->http->Stop();
}

uint16_t MetricsServer::port() const { return impl_->http->port(); }
std::string MetricsServer::address() const { return HttpTarget{impl_->http->host(), impl_->http->port()}.Address(); }

}  // namespace weft::meta
