// net::HttpServer under hostile and heavy use, through the directory server (its main user):
// slow clients are cut off at the header deadline and never starve the others, long-polls hold
// no thread, bodies are capped by Content-Length whatever their content type, connections are
// capped per client and in total, and malformed requests are refused while serving goes on.
// Also the request head parser (net/http_message.h), which is fuzzed too.
#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "base/metrics.h"
#include "meta/base64.h"
#include "meta/directory_server.h"
#include "net/http_message.h"
#include "net/unix_socket.h"

namespace weft {
namespace {

using namespace std::chrono_literals;
using meta::DirectoryServer;
using meta::DirectoryServerOptions;
using SteadyClock = std::chrono::steady_clock;

std::unique_ptr<DirectoryServer> StartDirectory(DirectoryServerOptions o) {
  auto s = DirectoryServer::Start(std::move(o));
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

// A raw blocking connection to 127.0.0.1:port, from `source` (another loopback address counts
// as another client).
net::UniqueFd Connect(uint16_t port, const char* source = "127.0.0.1") {
  net::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in from{};
  from.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &from.sin_addr);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&from), sizeof from), 0) << std::strerror(errno);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  return fd;
}

void SendAll(int fd, const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;  // the server closed: the caller looks at what it answered
    sent += static_cast<size_t>(n);
  }
}

// What the server sends until it closes the connection or `timeout` passes.
std::string ReadUntilClose(int fd, std::chrono::seconds timeout) {
  timeval tv{static_cast<time_t>(timeout.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

// The status of the reply at the start of `reply`, 0 when there is none.
int StatusOf(const std::string& reply) {
  if (reply.rfind("HTTP/1.1 ", 0) != 0 || reply.size() < 12) return 0;
  return std::stoi(reply.substr(9, 3));
}

// True when the server closed the connection (EOF or reset) within `timeout`.
bool ClosedByServer(int fd, std::chrono::seconds timeout) {
  timeval tv{static_cast<time_t>(timeout.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[256];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) return true;
    if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
  }
}

uint64_t Refused(MetricsRegistry& registry, const std::string& server, const std::string& reason) {
  return registry.counter("weft_http_refused_total{server=\"" + server + "\",reason=\"" + reason + "\"}")->value();
}

httplib::Client ClientOf(const DirectoryServer& server) {
  httplib::Client c("127.0.0.1", server.port());
  c.set_connection_timeout(5s);
  c.set_read_timeout(5s);
  c.set_write_timeout(5s);
  return c;
}

// 16 connections trickle a header byte every 100 ms, forever; 12 ordinary GETs meanwhile all
// succeed, and the slow connections are closed once their header deadline passes.
TEST(HttpServerTest, SlowLorisClientsAreCutOffAndDoNotBlockOthers) {
  MetricsRegistry registry;
  DirectoryServerOptions o;
  o.http.header_timeout = 300ms;
  o.http.metrics = &registry;
  auto server = StartDirectory(o);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(server->store()->Put("k", "v").ok());

  constexpr int kSlow = 16;
  std::vector<net::UniqueFd> slow;
  for (int i = 0; i < kSlow; ++i) slow.push_back(Connect(server->port()));
  std::atomic<bool> done{false};
  std::thread trickler([&] {
    const std::string head = "GET /metadata?key=k HTTP/1.1\r\nX-Slow: " + std::string(4096, 'a');
    for (size_t k = 0; k < head.size() && !done; ++k) {
      for (auto& fd : slow) ::send(fd.get(), &head[k], 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      std::this_thread::sleep_for(100ms);
    }
  });
  int ok = 0;
  for (int i = 0; i < 12; ++i) {
    auto c = ClientOf(*server);
    auto r = c.Get("/metadata?key=k");
    if (r && r->status == 200 && r->body == "v") ++ok;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(ok, 12);
  for (auto& fd : slow) EXPECT_TRUE(ClosedByServer(fd.get(), 10s)) << "a slow connection outlived its header deadline";
  done = true;
  trickler.join();
  EXPECT_GE(Refused(registry, "directory", "header_timeout"), static_cast<uint64_t>(kSlow));
}

// 20 watches wait on the directory; a GET is answered promptly, and every watch still gets the
// event of a key put under its prefix (and not one put elsewhere).
TEST(HttpServerTest, ParkedWatchesHoldNoThread) {
  auto server = StartDirectory({});
  ASSERT_NE(server, nullptr);
  constexpr int kWatches = 20;
  const std::string body = meta::EncodeDirectoryRequest(
      {.op = meta::DirectoryRequest::Op::kWatch, .prefix = "w/", .since = 0, .wait_ms = meta::kMaxWatchWaitMs});
  std::vector<std::string> replies(kWatches);
  std::vector<std::thread> watchers;
  for (int i = 0; i < kWatches; ++i) {
    watchers.emplace_back([&server, &replies, &body, i] {
      auto c = ClientOf(*server);
      c.set_read_timeout(30s);
      auto r = c.Post("/v1/watch", body, "application/json");
      if (r && r->status == 200) replies[i] = r->body;
    });
  }
  std::this_thread::sleep_for(300ms);  // the watches are parked
  ASSERT_TRUE(server->store()->Put("elsewhere", "x").ok());  // wakes them; not theirs
  auto c = ClientOf(*server);
  const auto start = SteadyClock::now();
  auto r = c.Get("/metadata?key=elsewhere");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(SteadyClock::now() - start, 1s) << "a GET waited behind the long-polls";

  const auto put_at = SteadyClock::now();
  ASSERT_TRUE(server->store()->Put("w/key", "y").ok());
  for (auto& t : watchers) t.join();
  // Well before their 10 s wait_ms: the event answered them.
  EXPECT_LT(SteadyClock::now() - put_at, 8s);
  const std::string key = "\"" + meta::Base64Encode("w/key") + "\"";
  for (int i = 0; i < kWatches; ++i) {
    EXPECT_NE(replies[i].find(key), std::string::npos) << "watch " << i << ": " << replies[i];
    EXPECT_EQ(replies[i].find(meta::Base64Encode("elsewhere")), std::string::npos) << replies[i];
  }
}

// A declared 1 GiB body is refused from the head alone, whatever its content type; a 9 KiB
// form-encoded body is within the 16 MiB cap and served.
TEST(HttpServerTest, BodyCapIsContentLengthWhateverTheContentType) {
  MetricsRegistry registry;
  DirectoryServerOptions o;
  o.http.metrics = &registry;
  auto server = StartDirectory(o);
  ASSERT_NE(server, nullptr);
  for (std::string type : {"application/x-www-form-urlencoded", "application/json", "multipart/form-data"}) {
    for (std::string target : {"/v1/kv/put", "/metadata?key=big"}) {
      auto fd = Connect(server->port());
      std::string method = target[1] == 'v' ? "POST" : "PUT";
      SendAll(fd.get(), method + " " + target + " HTTP/1.1\r\nHost: x\r\nContent-Type: " + type +
                            "\r\nContent-Length: 1073741824\r\n\r\n");
      std::string reply = ReadUntilClose(fd.get(), 10s);  // no body sent: only the head decides
      EXPECT_EQ(StatusOf(reply), 413) << type << " " << target << ": " << reply;
    }
  }
  EXPECT_GE(Refused(registry, "directory", "body_too_large"), 6u);

  auto c = ClientOf(*server);
  const std::string form = "a=" + std::string(9 * 1024, 'b');
  auto r = c.Put("/metadata?key=form", form, "application/x-www-form-urlencoded");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(server->store()->Get("form").value_or("?"), form);
  const std::string put = meta::EncodeDirectoryRequest(
      {.op = meta::DirectoryRequest::Op::kPut, .key = "form2", .value = std::string(9 * 1024, 'c')});
  r = c.Post("/v1/kv/put", put, "application/x-www-form-urlencoded");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(server->store()->Get("form2").value_or("?"), std::string(9 * 1024, 'c'));
}

// Connections over the per-client cap, then over the total cap, are answered 503 and closed;
// once the held ones close, serving goes on.
TEST(HttpServerTest, ConnectionCapsPerClientAndInTotal) {
  MetricsRegistry registry;
  DirectoryServerOptions o;
  o.http.max_connections_per_client = 4;
  o.http.max_connections = 6;
  o.http.header_timeout = 20s;  // the held connections must not time out during the test
  o.http.metrics = &registry;
  auto server = StartDirectory(o);
  ASSERT_NE(server, nullptr);
  std::vector<net::UniqueFd> held;
  for (int i = 0; i < 4; ++i) held.push_back(Connect(server->port(), "127.0.0.1"));
  auto extra = Connect(server->port(), "127.0.0.1");
  EXPECT_EQ(StatusOf(ReadUntilClose(extra.get(), 10s)), 503);
  EXPECT_EQ(Refused(registry, "directory", "client_connections"), 1u);

  for (int i = 0; i < 2; ++i) held.push_back(Connect(server->port(), "127.0.0.2"));
  auto over = Connect(server->port(), "127.0.0.2");
  EXPECT_EQ(StatusOf(ReadUntilClose(over.get(), 10s)), 503);
  EXPECT_EQ(Refused(registry, "directory", "connections"), 1u);
  // The held ones are still served.
  SendAll(held[0].get(), "GET /metadata?key=none HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(StatusOf(ReadUntilClose(held[0].get(), 10s)), 404);

  held.clear();
  bool served = false;
  for (auto until = SteadyClock::now() + 5s; !served && SteadyClock::now() < until;) {
    auto c = ClientOf(*server);
    auto r = c.Get("/metadata?key=none");
    served = r && r->status == 404;
    if (!served) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(served);
}

// Bodies in flight are bounded all together: a head whose body would pass the budget is
// answered 503, a smaller one within it is served, and the budget frees once a body is done.
TEST(HttpServerTest, BodiesInFlightShareOneBudget) {
  MetricsRegistry registry;
  DirectoryServerOptions o;
  o.http.max_pending_body_bytes = 1000;
  o.http.metrics = &registry;
  auto server = StartDirectory(o);
  ASSERT_NE(server, nullptr);
  auto holder = Connect(server->port());  // declares 800 bytes and sends none of them yet
  SendAll(holder.get(), "PUT /metadata?key=held HTTP/1.1\r\nHost: x\r\nContent-Length: 800\r\n\r\n");
  std::this_thread::sleep_for(200ms);  // its head is read
  auto over = Connect(server->port());
  SendAll(over.get(), "PUT /metadata?key=over HTTP/1.1\r\nHost: x\r\nContent-Length: 800\r\n\r\n");
  EXPECT_EQ(StatusOf(ReadUntilClose(over.get(), 10s)), 503);
  EXPECT_EQ(Refused(registry, "directory", "busy"), 1u);
  auto c = ClientOf(*server);
  auto r = c.Put("/metadata?key=small", std::string(100, 's'), "text/plain");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  SendAll(holder.get(), std::string(800, 'h'));  // done: its 800 bytes are free again
  timeval tv{10, 0};
  ::setsockopt(holder.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[512];
  ASSERT_GT(::recv(holder.get(), buf, sizeof buf, 0), 0);
  EXPECT_EQ(StatusOf(std::string(buf, 12)), 200);
  r = c.Put("/metadata?key=again", std::string(800, 'a'), "text/plain");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
}

// Garbage, an oversized head, a chunked body and an unknown HTTP version are refused with the
// right status, and the server goes on serving.
TEST(HttpServerTest, MalformedRequestsAreRefusedAndServingGoesOn) {
  MetricsRegistry registry;
  DirectoryServerOptions o;
  o.http.metrics = &registry;
  auto server = StartDirectory(o);
  ASSERT_NE(server, nullptr);
  struct Case {
    std::string request;
    int status;
  };
  const std::vector<Case> cases = {
      {"\x01\x02GARBAGE\r\n\r\n", 400},
      {"GET  /metadata HTTP/1.1\r\n\r\n", 400},
      {"GET metadata HTTP/1.1\r\n\r\n", 400},
      {"GET /metadata HTTP/1.1\r\nBad Header: x\r\n\r\n", 400},
      {"GET /metadata HTTP/1.1\r\nX: a\rb\r\n\r\n", 400},
      {"GET /metadata HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
      {"GET /metadata HTTP/1.1\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n", 431},
      {"GET /metadata HTTP/1.1\r\nX-Big: " + std::string(20000, 'a'), 431},  // never ends
      {"PUT /metadata?key=c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", 501},
      {"GET /metadata HTTP/2.0\r\n\r\n", 505},
  };
  for (const auto& tc : cases) {
    auto fd = Connect(server->port());
    SendAll(fd.get(), tc.request);
    std::string reply = ReadUntilClose(fd.get(), 10s);
    EXPECT_EQ(StatusOf(reply), tc.status) << tc.request.substr(0, 80) << " -> " << reply;
  }
  EXPECT_GE(Refused(registry, "directory", "bad_request"), 6u);
  EXPECT_EQ(Refused(registry, "directory", "header_too_large"), 2u);
  EXPECT_EQ(Refused(registry, "directory", "unsupported"), 1u);
  ASSERT_TRUE(server->store()->Put("still", "here").ok());
  auto c = ClientOf(*server);
  auto r = c.Get("/metadata?key=still");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "here");
}

// Keep-alive and pipelining: two requests in one write get two answers, in order.
TEST(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  auto server = StartDirectory({});
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(server->store()->Put("a", "1").ok());
  ASSERT_TRUE(server->store()->Put("b", "22").ok());
  auto fd = Connect(server->port());
  SendAll(fd.get(),
          "GET /metadata?key=a HTTP/1.1\r\nHost: x\r\n\r\n"
          "GET /metadata?key=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string reply = ReadUntilClose(fd.get(), 10s);
  size_t first = reply.find("\r\n\r\n1");
  size_t second = reply.find("\r\n\r\n22");
  EXPECT_NE(first, std::string::npos) << reply;
  EXPECT_NE(second, std::string::npos) << reply;
  EXPECT_LT(first, second);
}

// --- the head parser (also fuzzed: fuzz/http_head_fuzz.cc) ---

TEST(HttpHeadTest, ParsesARequestHead) {
  const std::string head =
      "PUT /metadata?key=a%20b+c&x HTTP/1.1\r\nHost: h\r\ncontent-LENGTH:  3 \r\nConnection: keep-alive, "
      "Close\r\n\r\nabc";
  auto p = net::ParseHttpHead(head, 16384, 100);
  ASSERT_EQ(p.state, net::HttpHeadParse::State::kComplete) << p.reason;
  EXPECT_EQ(p.head_bytes, head.size() - 3);
  EXPECT_EQ(p.request.method, "PUT");
  EXPECT_EQ(p.request.path, "/metadata");
  EXPECT_EQ(p.request.QueryParam("key").value_or("?"), "a b c");
  EXPECT_EQ(p.request.QueryParam("x").value_or("?"), "");
  EXPECT_FALSE(p.request.QueryParam("y").has_value());
  EXPECT_EQ(p.request.content_length, 3u);
  EXPECT_FALSE(p.request.keep_alive);
  EXPECT_EQ(p.request.Header("HOST"), "h");
}

TEST(HttpHeadTest, IncompleteUntilTheBlankLineAndBounded) {
  EXPECT_EQ(net::ParseHttpHead("GET / HTTP/1.1\r\nHost: h\r\n", 64, 0).state, net::HttpHeadParse::State::kIncomplete);
  auto big = net::ParseHttpHead(std::string(65, 'a'), 64, 0);
  EXPECT_EQ(big.state, net::HttpHeadParse::State::kRefused);
  EXPECT_EQ(big.status, 431);
  auto http10 = net::ParseHttpHead("GET / HTTP/1.0\r\n\r\n", 64, 0);
  ASSERT_EQ(http10.state, net::HttpHeadParse::State::kComplete);
  EXPECT_FALSE(http10.request.keep_alive);
  auto over = net::ParseHttpHead("POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 64, 100);
  EXPECT_EQ(over.status, 413);
  auto huge = net::ParseHttpHead("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 128, 100);
  EXPECT_EQ(huge.status, 400);
}

}  // namespace
}  // namespace weft
