// MetricsServer: GET /metrics serves the registry's text, anything else is 404, and clients that
// are slow or stuck never hold up a scrape of anyone else.
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
#include <thread>
#include <vector>

#include "base/metrics.h"
#include "meta/metrics_server.h"
#include "net/unix_socket.h"

namespace weft::meta {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<MetricsServer> StartFor(MetricsRegistry& registry, MetricsServerOptions o = {}) {
  if (o.bind.empty()) o.bind = "127.0.0.1:0";
  auto s = MetricsServer::Start(o, [&registry] { return registry.PrometheusText(); });
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

httplib::Result Scrape(const MetricsServer& server, const std::string& path = "/metrics") {
  httplib::Client client("127.0.0.1", server.port());
  client.set_connection_timeout(10s);
  client.set_read_timeout(10s);
  return client.Get(path.c_str());
}

// A raw blocking connection to the server, for clients that do not behave.
net::UniqueFd Connect(const MetricsServer& server) {
  net::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(server.port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  return fd;
}

TEST(MetricsServer, ScrapeServesTheRegistryText) {
  MetricsRegistry registry;
  registry.counter("weft_test_total", "A test counter")->Add(7);
  registry.gauge("weft_test_level", "A test gauge")->Set(-3);
  auto server = StartFor(registry);
  ASSERT_NE(server, nullptr);
  EXPECT_NE(server->port(), 0);
  auto r = Scrape(*server);
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, registry.PrometheusText());
  EXPECT_NE(r->body.find("weft_test_total 7\n"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("weft_test_level -3\n"), std::string::npos) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0u);
  // Read at scrape time: a later change shows in the next scrape.
  registry.counter("weft_test_total")->Add(1);
  auto again = Scrape(*server);
  ASSERT_TRUE(again);
  EXPECT_NE(again->body.find("weft_test_total 8\n"), std::string::npos) << again->body;
}

TEST(MetricsServer, OtherPathsAndMethodsAreRefused) {
  MetricsRegistry registry;
  auto server = StartFor(registry);
  ASSERT_NE(server, nullptr);
  auto r = Scrape(*server, "/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  r = Scrape(*server, "/metrics/x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  r = Scrape(*server, "/metrics?name[]=weft");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  httplib::Client client("127.0.0.1", server->port());
  auto post = client.Post("/metrics", "x", "text/plain");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
}

TEST(MetricsServer, ReplyParsesTheRequestLineOnly) {
  MetricsSource src = [] { return std::string("a 1\n"); };
  EXPECT_EQ(MetricsReply("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", src).rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  EXPECT_EQ(MetricsReply("garbage\r\n\r\n", src).rfind("HTTP/1.1 400", 0), 0u);
  EXPECT_EQ(MetricsReply("GET /other HTTP/1.1\r\n\r\n", src).rfind("HTTP/1.1 404", 0), 0u);
  std::string head = MetricsReply("HEAD /metrics HTTP/1.1\r\n\r\n", src);
  EXPECT_EQ(head.find("a 1\n"), std::string::npos) << head;
  EXPECT_NE(head.find("Content-Length: 4\r\n"), std::string::npos) << head;
}

TEST(MetricsServer, BindTakesTheHostGiven) {
  auto bad = MetricsServer::Start({.bind = ":9464"}, nullptr);
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  MetricsRegistry registry;
  auto first = StartFor(registry);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->address(), "127.0.0.1:" + std::to_string(first->port()));
  auto taken = MetricsServer::Start({.bind = first->address()}, nullptr);
  EXPECT_FALSE(taken.ok());
  EXPECT_EQ(taken.status().code(), Code::kUnavailable);
}

// Clients that trickle their request a byte a second (each read well inside any per-read
// timeout), and one that connects and sends nothing, while others scrape: every scrape is served.
TEST(MetricsServer, SlowClientsDoNotBlockAScrape) {
  MetricsRegistry registry;
  registry.counter("weft_test_total")->Add(1);
  auto server = StartFor(registry);
  ASSERT_NE(server, nullptr);
  std::atomic<bool> done{false};
  std::vector<std::thread> slow;
  for (int i = 0; i < 8; ++i) {
    slow.emplace_back([&] {
      net::UniqueFd fd = Connect(*server);
      const std::string req = "GET /metrics HTTP/1.1\r\nHost: slow\r\n\r\n";
      for (size_t k = 0; k < req.size() && !done; ++k) {
        if (::send(fd.get(), &req[k], 1, MSG_NOSIGNAL) != 1) return;  // the server gave up on us: fine
        std::this_thread::sleep_for(1s);
      }
    });
  }
  net::UniqueFd silent = Connect(*server);
  std::this_thread::sleep_for(300ms);  // the slow ones are connected and mid-request
  for (int i = 0; i < 3; ++i) {
    auto r = Scrape(*server);
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 200);
    EXPECT_NE(r->body.find("weft_test_total 1\n"), std::string::npos);
    std::this_thread::sleep_for(500ms);
  }
  done = true;
  for (auto& t : slow) t.join();
}

// A connection that does not finish its request within connection_deadline is closed.
TEST(MetricsServer, AStuckClientIsClosedAtItsDeadline) {
  MetricsRegistry registry;
  auto server = StartFor(registry, {.bind = "127.0.0.1:0", .connection_deadline = 300ms});
  ASSERT_NE(server, nullptr);
  net::UniqueFd fd = Connect(*server);
  ASSERT_EQ(::send(fd.get(), "G", 1, MSG_NOSIGNAL), 1);
  timeval tv{30, 0};  // generous: only a server that never closes fails
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char c;
  EXPECT_EQ(::recv(fd.get(), &c, 1, 0), 0) << "expected the server to close the connection";
}

TEST(MetricsServer, StopIsIdempotentWithClientsConnected) {
  MetricsRegistry registry;
  auto server = StartFor(registry);
  ASSERT_NE(server, nullptr);
  net::UniqueFd fd = Connect(*server);
  server->Stop();
  server->Stop();
}

}  // namespace
}  // namespace weft::meta
