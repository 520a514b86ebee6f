#include "meta/metrics_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "base/log.h"
#include "meta/directory.h"
#include "meta/http_call.h"
#include "net/tcp_socket.h"
#include "net/unix_socket.h"

namespace weft::meta {

namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr size_t kMaxRequestHead = 8192;  // a scrape's head is a few hundred bytes

std::string Reply(int code, std::string_view reason, std::string_view type, const std::string& body, bool head_only) {
  return fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", code,
                     reason, type, body.size(), head_only ? "" : body);
}

struct Conn {
  net::UniqueFd fd;
  SteadyClock::time_point deadline;
  std::string in;
  std::string out;  // the reply, once the request is read
  size_t sent = 0;
};

}  // namespace

std::string MetricsReply(std::string_view request_head, const MetricsSource& source) {
  std::string_view line = request_head.substr(0, request_head.find("\r\n"));
  auto sp1 = line.find(' ');
  auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return Reply(400, "Bad Request", "text/plain", "bad request line\n", false);
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view path = target.substr(0, target.find('?'));  // Prometheus may add parameters
  const bool head = method == "HEAD";
  if (path != "/metrics") return Reply(404, "Not Found", "text/plain", "only /metrics is served here\n", head);
  if (method != "GET" && !head) return Reply(405, "Method Not Allowed", "text/plain", "GET /metrics\n", false);
  return Reply(200, "OK", "text/plain; version=0.0.4; charset=utf-8", source ? source() : std::string(), head);
}

struct MetricsServer::Impl {
  MetricsServerOptions options;
  MetricsSource source;
  std::string host;
  uint16_t port = 0;
  net::UniqueFd listen;
  net::UniqueFd wake;  // eventfd: Stop() writes it to end the loop
  std::vector<Conn> conns;
  std::thread thread;
  std::mutex stop_mu;
  bool stopped = false;

  void Run();
  void Accept();
  // Reads or writes what the socket allows; false when the connection is done (or failed).
  bool Step(Conn& c);
  bool Read(Conn& c);
  bool Write(Conn& c);
  int PollTimeoutMs() const;
};

int MetricsServer::Impl::PollTimeoutMs() const {
  auto wait = std::chrono::milliseconds(1000);
  const auto now = SteadyClock::now();
  for (const Conn& c : conns) {
    wait = std::min(wait, std::chrono::duration_cast<std::chrono::milliseconds>(c.deadline - now));
  }
  return static_cast<int>(std::clamp<int64_t>(wait.count() + 1, 1, 1000));
}

void MetricsServer::Impl::Accept() {
  for (;;) {
    auto sock = net::AcceptTcp(listen.get(), net::TcpOptions{.socket_buffer_bytes = 0});
    if (!sock.ok()) {
      WEFT_LOG_WARN("metrics server {}:{}: {}", host, port, sock.status().ToString());
      return;
    }
    if (!sock->valid()) return;
    if (conns.size() >= options.max_connections) continue;  // closed: a scraper retries next interval
    conns.push_back(Conn{std::move(*sock), SteadyClock::now() + options.connection_deadline, {}, {}, 0});
  }
}

bool MetricsServer::Impl::Read(Conn& c) {
  char buf[2048];
  for (;;) {
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
    if (n == 0) return false;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    c.in.append(buf, static_cast<size_t>(n));
    if (c.in.find("\r\n\r\n") != std::string::npos) {
      c.out = MetricsReply(c.in, source);
      return Write(c);
    }
    if (c.in.size() > kMaxRequestHead) {
      c.out = Reply(431, "Request Header Fields Too Large", "text/plain", "request head too large\n", false);
      return Write(c);
    }
  }
}

bool MetricsServer::Impl::Write(Conn& c) {
  while (c.sent < c.out.size()) {
    ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    c.sent += static_cast<size_t>(n);
  }
  ::shutdown(c.fd.get(), SHUT_WR);
  return false;
}

bool MetricsServer::Impl::Step(Conn& c) { return c.out.empty() ? Read(c) : Write(c); }

void MetricsServer::Impl::Run() {
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({wake.get(), POLLIN, 0});
    fds.push_back({listen.get(), POLLIN, 0});
    for (const Conn& c : conns) fds.push_back({c.fd.get(), static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
    int r = ::poll(fds.data(), fds.size(), PollTimeoutMs());
    if (r < 0) {
      if (errno == EINTR) continue;  // revents are not to be trusted then
      WEFT_LOG_ERROR("metrics server {}:{}: poll: {}", host, port, std::strerror(errno));
      return;
    }
    if (fds[0].revents != 0) return;
    // Connections first (their indices match fds), then the new ones.
    const auto now = SteadyClock::now();
    std::vector<Conn> keep;
    keep.reserve(conns.size());
    for (size_t i = 0; i < conns.size(); ++i) {
      bool alive = fds[i + 2].revents == 0 || Step(conns[i]);
      if (alive && now < conns[i].deadline) keep.push_back(std::move(conns[i]));
    }
    conns = std::move(keep);
    if (fds[1].revents != 0) Accept();
  }
}

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MetricsServer::~MetricsServer() { Stop(); }

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(MetricsServerOptions options, MetricsSource source) {
  WEFT_ASSIGN_OR_RETURN(auto hp, ParseHostPort(options.bind));
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->source = std::move(source);
  impl->host = hp.first;
  auto listen = net::ListenTcp(hp.first, hp.second, 64, net::TcpOptions{.socket_buffer_bytes = 0});
  if (!listen.ok()) {
    return Error(Code::kUnavailable, "metrics server: cannot listen on {}: {}", impl->options.bind,
                 listen.status().ToString());
  }
  impl->listen = std::move(*listen);
  WEFT_ASSIGN_OR_RETURN(impl->port, net::LocalPort(impl->listen.get()));
  impl->wake = net::UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!impl->wake.valid()) return Error(Code::kInternal, "metrics server: eventfd: {}", std::strerror(errno));
  Impl* p = impl.get();
  try {
    impl->thread = std::thread([p] { p->Run(); });
  } catch (const std::system_error& e) {
    return Error(Code::kInternal, "metrics server: cannot start its thread: {}", e.what());
  }
  WEFT_LOG_INFO("metrics server listening on {}:{}", p->host, p->port);
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
}

void MetricsServer::Stop() {
  std::lock_guard lk(impl_->stop_mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(impl_->wake.get(), &one, sizeof one);
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->conns.clear();
  impl_->listen.Reset();
}

uint16_t MetricsServer::port() const { return impl_->port; }
std::string MetricsServer::address() const { return HttpTarget{impl_->host, impl_->port}.Address(); }

}  // namespace weft::meta
