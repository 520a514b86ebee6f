#include "net/http_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "base/log.h"
#include "net/event_loop.h"
#include "net/tcp_socket.h"

namespace weft::net {

namespace {

using Clock = std::chrono::steady_clock;

// After a reply that ends the connection, what the client still sends is read and dropped (never
// kept) for a while before the close: closing with unread bytes resets the connection, and a
// client still writing a body it was refused (413) would lose the reply or die of SIGPIPE.
// Up to max_body + max_header_bytes are dropped, within kLinger.
constexpr auto kLinger = std::chrono::milliseconds(2000);

enum class Phase { kHead, kBody, kParked, kWriting, kLinger };

enum class Refusal {
  kConnections,        // max_connections reached
  kClientConnections,  // max_connections_per_client reached
  kHeaderTimeout,
  kBodyTimeout,
  kWriteTimeout,
  kHeaderTooLarge,  // 431
  kBodyTooLarge,    // 413
  kBadRequest,      // 400, 417, 505
  kUnsupported,     // 501: Transfer-Encoding
  kBusy,            // 503: max_pending_body_bytes reached
  kCount
};
constexpr std::array<const char*, static_cast<size_t>(Refusal::kCount)> kRefusalNames = {
    "connections",     "client_connections", "header_timeout", "body_timeout", "write_timeout",
    "header_too_large", "body_too_large",    "bad_request",    "unsupported",  "busy",
};

Refusal RefusalOfStatus(int status) {
  switch (status) {
    case 431: return Refusal::kHeaderTooLarge;
    case 413: return Refusal::kBodyTooLarge;
    case 501: return Refusal::kUnsupported;
    default: return Refusal::kBadRequest;
  }
}

// "10.0.0.5:4711" -> "10.0.0.5", "[::1]:4711" -> "[::1]": connections are capped per address.
std::string AddressOnly(const std::string& peer) {
  size_t colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

struct Conn {
  uint64_t id = 0;
  UniqueFd fd;
  std::string client;  // ip:port
  std::string client_address;
  Phase phase = Phase::kHead;
  Clock::time_point deadline;
  bool awaiting_request = true;  // kHead with no byte of the next request yet
  bool served_one = false;       // a request was answered on this connection
  bool peer_closed = false;      // the client shut down its side
  bool dead = false;             // to be destroyed once the current step ends
  std::string in;                // received, not yet consumed
  HttpRequest request;           // kBody, kParked: the request being served
  std::string out;
  size_t sent = 0;
  bool close_after_write = false;
  size_t lingered = 0;
  uint64_t reserved = 0;  // of Impl::pending_body_bytes, for this request's body
  HttpParked parked;
  uint32_t interest = 0;
};

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions options;
  HttpHandler handler;
  std::string host;
  uint16_t port = 0;
  std::unique_ptr<EventLoop> loop;
  UniqueFd listen;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns;
  std::unordered_map<std::string, size_t> per_client;
  uint64_t next_id = 1;
  uint64_t pending_body_bytes = 0;  // reserved by requests between head and written answer
  MetricsRegistry own_metrics;  // when options.metrics is null: counted, never shown
  std::array<Counter*, static_cast<size_t>(Refusal::kCount)> refused{};
  Counter* requests = nullptr;
  Gauge* open = nullptr;
  std::thread thread;
  std::mutex stop_mu;
  bool stopped = false;

  void InstallMetrics();
  void Count(Refusal r) { refused[static_cast<size_t>(r)]->Add(); }

  void OnAccept();
  void RefuseConnection(UniqueFd fd, Refusal why);
  void OnEvent(uint64_t id, uint32_t events);
  // Runs the connection as far as it can go now, then destroys it if it died on the way.
  void Pump(Conn& c);
  void Advance(Conn& c);
  void Read(Conn& c);
  void Linger(Conn& c);
  bool StepHead(Conn& c, Clock::time_point now);
  bool StepBody(Conn& c);
  void Dispatch(Conn& c);
  void Respond(Conn& c, const HttpResponse& response, bool close);
  void Refuse(Conn& c, Refusal why, int status, std::string reason);
  void Write(Conn& c);
  void AfterWrite(Conn& c);
  void SetInterest(Conn& c, uint32_t events);
  void Release(Conn& c) {
    pending_body_bytes -= c.reserved;
    c.reserved = 0;
  }
  void Destroy(uint64_t id);
  void Expire(Conn& c);
  std::chrono::milliseconds Tick();
};

void HttpServer::Impl::InstallMetrics() {
  MetricsRegistry* m = options.metrics != nullptr ? options.metrics : &own_metrics;
  const std::string help = "HTTP connections or requests refused or timed out, by server and reason";
  for (size_t i = 0; i < refused.size(); ++i) {
    refused[i] = m->counter(
        fmt::format("weft_http_refused_total{{server=\"{}\",reason=\"{}\"}}", options.name, kRefusalNames[i]), help);
  }
  requests = m->counter(fmt::format("weft_http_requests_total{{server=\"{}\"}}", options.name),
                        "HTTP requests answered by a handler, by server");
  open = m->gauge(fmt::format("weft_http_connections{{server=\"{}\"}}", options.name),
                  "HTTP connections open now, by server");
}

void HttpServer::Impl::OnAccept() {
  for (;;) {
    std::string peer;
    auto sock = AcceptTcp(listen.get(), TcpOptions{.socket_buffer_bytes = 0}, &peer);
    if (!sock.ok()) {
      WEFT_LOG_WARN("{} server {}:{}: {}", options.name, host, port, sock.status().ToString());
      return;
    }
    if (!sock->valid()) return;
    std::string address = AddressOnly(peer);
    if (conns.size() >= options.max_connections) {
      RefuseConnection(std::move(*sock), Refusal::kConnections);
      continue;
    }
    auto from_client = per_client.find(address);
    if (from_client != per_client.end() && from_client->second >= options.max_connections_per_client) {
      RefuseConnection(std::move(*sock), Refusal::kClientConnections);
      continue;
    }
    auto c = std::make_unique<Conn>();
    c->id = next_id++;
    c->fd = std::move(*sock);
    c->client = std::move(peer);
    c->client_address = address;
    c->deadline = Clock::now() + options.header_timeout;
    c->interest = EPOLLIN | EPOLLRDHUP;
    const uint64_t id = c->id;
    Status added = loop->Add(c->fd.get(), c->interest, [this, id](int, uint32_t events) { OnEvent(id, events); });
    if (!added.ok()) {
      WEFT_LOG_WARN("{} server: {}", options.name, added.ToString());
      continue;
    }
    ++per_client[address];
    conns.emplace(id, std::move(c));
    open->Set(static_cast<int64_t>(conns.size()));
  }
}

void HttpServer::Impl::RefuseConnection(UniqueFd fd, Refusal why) {
  Count(why);
  // Best effort, on a fresh socket whose send buffer is empty: one small write never blocks.
  std::string reply = FormatHttpResponse({503, "text/plain", "too many connections\n"}, true, false);
  [[maybe_unused]] ssize_t n = ::send(fd.get(), reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd.get(), SHUT_RDWR);
}

void HttpServer::Impl::OnEvent(uint64_t id, uint32_t events) {
  auto it = conns.find(id);
  if (it == conns.end()) return;
  Conn& c = *it->second;
  if ((events & EPOLLERR) != 0) {
    c.dead = true;
  } else if (c.phase == Phase::kWriting) {
    if ((events & (EPOLLOUT | EPOLLHUP)) != 0) Write(c);
  } else if (c.phase == Phase::kLinger) {
    Linger(c);
  } else if (c.phase == Phase::kParked) {
    // The client left while its request waited: nobody is there to answer.
    if ((events & (EPOLLRDHUP | EPOLLHUP)) != 0) c.dead = true;
  } else {
    Read(c);
  }
  Pump(c);
}

void HttpServer::Impl::Pump(Conn& c) {
  Advance(c);
  if (c.dead) Destroy(c.id);
}

void HttpServer::Impl::Advance(Conn& c) {
  const auto now = Clock::now();
  for (bool more = true; more && !c.dead;) {
    switch (c.phase) {
      case Phase::kHead: more = StepHead(c, now); break;
      case Phase::kBody: more = StepBody(c); break;
      default: more = false;
    }
  }
}

void HttpServer::Impl::Read(Conn& c) {
  // Never buffer more than the request being read can use: a head up to its cap (one byte more
  // tells it went over), a body up to its length, and the head of a pipelined request after it.
  const size_t cap = options.max_header_bytes + 1 + (c.phase == Phase::kBody ? c.request.content_length : 0);
  char buf[16384];
  while (c.in.size() < cap) {
    ssize_t n = ::recv(c.fd.get(), buf, std::min(sizeof buf, cap - c.in.size()), 0);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      c.peer_closed = true;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      c.dead = true;
    }
    return;
  }
}

void HttpServer::Impl::Linger(Conn& c) {
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
    if (n > 0) {
      c.lingered += static_cast<size_t>(n);
      if (c.lingered > options.max_body + options.max_header_bytes) c.dead = true;
      if (c.dead) return;
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) c.dead = true;
    return;
  }
}

bool HttpServer::Impl::StepHead(Conn& c, Clock::time_point now) {
  if (c.in.empty()) {
    // Between requests: a client that closed its side is done.
    if (c.peer_closed) c.dead = true;
    return false;
  }
  if (c.awaiting_request) {
    // The first byte of a request starts its header clock, however slowly the rest comes.
    c.awaiting_request = false;
    if (c.served_one) c.deadline = now + options.header_timeout;
  }
  HttpHeadParse p = ParseHttpHead(c.in, options.max_header_bytes, options.max_body);
  if (p.state == HttpHeadParse::State::kRefused) {
    Refuse(c, RefusalOfStatus(p.status), p.status, std::move(p.reason));
    return false;
  }
  if (p.state == HttpHeadParse::State::kIncomplete) {
    if (c.peer_closed) c.dead = true;  // it will never be complete
    return false;
  }
  c.in.erase(0, p.head_bytes);
  if (pending_body_bytes + p.request.content_length > options.max_pending_body_bytes) {
    Refuse(c, Refusal::kBusy, 503, "too many request bodies in flight; retry later");
    return false;
  }
  c.reserved = p.request.content_length;
  pending_body_bytes += c.reserved;
  c.request = std::move(p.request);
  c.phase = Phase::kBody;
  const uint64_t rate = std::max<uint64_t>(1, options.min_body_rate);
  c.deadline = now + options.body_timeout +
               std::chrono::milliseconds(c.request.content_length * 1000 / rate);
  if (c.request.expect_continue && c.in.size() < c.request.content_length) {
    // The head passed every check: tell the client to send its body. A few bytes on a socket
    // that has nothing queued never block.
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    [[maybe_unused]] ssize_t n = ::send(c.fd.get(), kContinue.data(), kContinue.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  return true;
}

bool HttpServer::Impl::StepBody(Conn& c) {
  const uint64_t length = c.request.content_length;
  if (c.in.size() < length) {
    if (c.peer_closed) c.dead = true;
    return false;
  }
  c.request.body = c.in.substr(0, length);
  c.in.erase(0, length);
  Dispatch(c);
  return c.phase == Phase::kHead;  // answered and kept alive: a pipelined request may follow
}

void HttpServer::Impl::Dispatch(Conn& c) {
  c.request.client = c.client;
  requests->Add();
  HttpOutcome outcome;
  try {
    outcome = handler(c.request, c.id);
  } catch (const std::exception& e) {
    // Handlers report errors as values; this is a last line against an allocation failure.
    outcome = HttpResponse{500, "text/plain", fmt::format("internal error: {}\n", e.what())};
  }
  if (auto* response = std::get_if<HttpResponse>(&outcome)) return Respond(c, *response, false);
  c.parked = std::move(std::get<HttpParked>(outcome));
  c.phase = Phase::kParked;
  c.deadline = c.parked.until;
  SetInterest(c, EPOLLRDHUP);
}

void HttpServer::Impl::Respond(Conn& c, const HttpResponse& response, bool close) {
  close = close || !c.request.keep_alive || c.peer_closed;
  c.out = FormatHttpResponse(response, close, c.request.method == "HEAD");
  c.sent = 0;
  c.close_after_write = close;
  c.phase = Phase::kWriting;
  c.deadline = Clock::now() + options.write_timeout;
  c.served_one = true;
  Write(c);
}

void HttpServer::Impl::Refuse(Conn& c, Refusal why, int status, std::string reason) {
  Count(why);
  c.request = HttpRequest{};
  Respond(c, HttpResponse{status, "text/plain", reason + "\n"}, true);
}

void HttpServer::Impl::Write(Conn& c) {
  while (c.sent < c.out.size()) {
    ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n >= 0) {
      c.sent += static_cast<size_t>(n);
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return SetInterest(c, EPOLLOUT);
    c.dead = true;
    return;
  }
  AfterWrite(c);
}

void HttpServer::Impl::AfterWrite(Conn& c) {
  c.out.clear();
  c.out.shrink_to_fit();
  c.request = HttpRequest{};
  Release(c);
  if (c.close_after_write) {
    ::shutdown(c.fd.get(), SHUT_WR);
    c.phase = Phase::kLinger;
    c.deadline = Clock::now() + kLinger;
    c.in.clear();
    return SetInterest(c, EPOLLIN);
  }
  c.phase = Phase::kHead;
  c.awaiting_request = true;
  c.deadline = Clock::now() + options.idle_timeout;
  SetInterest(c, EPOLLIN | EPOLLRDHUP);
}

void HttpServer::Impl::SetInterest(Conn& c, uint32_t events) {
  if (c.interest == events) return;
  c.interest = events;
  if (!loop->Modify(c.fd.get(), events).ok()) c.dead = true;
}

void HttpServer::Impl::Destroy(uint64_t id) {
  auto it = conns.find(id);
  if (it == conns.end()) return;
  std::unique_ptr<Conn> c = std::move(it->second);
  conns.erase(it);
  Release(*c);
  (void)loop->Remove(c->fd.get());
  auto pc = per_client.find(c->client_address);
  if (pc != per_client.end() && --pc->second == 0) per_client.erase(pc);
  open->Set(static_cast<int64_t>(conns.size()));
  if (c->phase == Phase::kParked && c->parked.on_drop) c->parked.on_drop();
}

void HttpServer::Impl::Expire(Conn& c) {
  switch (c.phase) {
    case Phase::kHead:
      // An idle keep-alive connection simply ends; one that never finished its head is counted.
      if (!c.awaiting_request || !c.served_one) Count(Refusal::kHeaderTimeout);
      c.dead = true;
      break;
    case Phase::kBody:
      Count(Refusal::kBodyTimeout);
      c.dead = true;
      break;
    case Phase::kParked: {
      HttpParked parked = std::move(c.parked);
      c.parked = {};
      Respond(c, parked.on_timeout ? parked.on_timeout() : HttpResponse{504, "text/plain", "timed out\n"}, false);
      break;
    }
    case Phase::kWriting:
      Count(Refusal::kWriteTimeout);
      c.dead = true;
      break;
    case Phase::kLinger: c.dead = true; break;
  }
}

std::chrono::milliseconds HttpServer::Impl::Tick() {
  const auto now = Clock::now();
  std::vector<uint64_t> due;
  auto next = now + std::chrono::seconds(60);
  for (const auto& [id, c] : conns) {
    if (c->deadline <= now) {
      due.push_back(id);
    } else {
      next = std::min(next, c->deadline);
    }
  }
  for (uint64_t id : due) {
    auto it = conns.find(id);
    if (it == conns.end()) continue;
    Conn& c = *it->second;
    Expire(c);
    Pump(c);
    // A parked request answered on time may go on (keep-alive): its next deadline counts.
    auto again = conns.find(id);
    if (again != conns.end()) next = std::min(next, again->second->deadline);
  }
  // +1: wake just after the deadline, not just before it.
  auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()) + std::chrono::milliseconds(1);
  return std::max(wait, std::chrono::milliseconds(0));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options, HttpHandler handler) {
  WEFT_ASSIGN_OR_RETURN(HostPort hp, ParseBindAddress(options.bind));
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->handler = std::move(handler);
  impl->host = hp.host;
  impl->InstallMetrics();
  WEFT_ASSIGN_OR_RETURN(impl->loop, EventLoop::Create());
  auto listen = ListenTcp(hp.host, hp.port, 512, TcpOptions{.socket_buffer_bytes = 0});
  if (!listen.ok()) {
    return Error(Code::kUnavailable, "{} server: cannot listen on {}: {}", impl->options.name, impl->options.bind,
                 listen.status().ToString());
  }
  impl->listen = std::move(*listen);
  WEFT_ASSIGN_OR_RETURN(impl->port, LocalPort(impl->listen.get()));
  Impl* p = impl.get();
  WEFT_RETURN_IF_ERROR(p->loop->Add(p->listen.get(), EPOLLIN, [p](int, uint32_t) { p->OnAccept(); }));
  p->loop->SetTick([p] { return p->Tick(); });
  try {
    p->thread = std::thread([p] {
      Status s = p->loop->Run();
      if (!s.ok()) WEFT_LOG_ERROR("{} server {}:{}: {}", p->options.name, p->host, p->port, s.ToString());
    });
  } catch (const std::system_error& e) {
    return Error(Code::kInternal, "{} server: cannot start its thread: {}", p->options.name, e.what());
  }
  WEFT_LOG_INFO("{} server listening on {}:{}", p->options.name, p->host, p->port);
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

void HttpServer::Stop() {
  std::lock_guard lk(impl_->stop_mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->loop->Stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  // The loop's thread is gone: what it owned is ours now.
  std::vector<uint64_t> ids;
  for (const auto& entry : impl_->conns) ids.push_back(entry.first);
  for (uint64_t id : ids) impl_->Destroy(id);
  impl_->listen.Reset();
}

void HttpServer::Answer(HttpTicket ticket, HttpResponse response) {
  auto it = impl_->conns.find(ticket);
  if (it == impl_->conns.end() || it->second->phase != Phase::kParked) return;
  Conn& c = *it->second;
  c.parked = {};
  impl_->Respond(c, response, false);
  impl_->Pump(c);
}

void HttpServer::Post(std::function<void()> task) { impl_->loop->Post(std::move(task)); }

const std::string& HttpServer::host() const { return impl_->host; }
uint16_t HttpServer::port() const { return impl_->port; }
std::string HttpServer::address() const {
  return HostPort{impl_->host, impl_->port}.ToString();
}

}  // namespace weft::net
