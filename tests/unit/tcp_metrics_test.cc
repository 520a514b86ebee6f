// The tcp transport's client and data server publish their counts in the metrics registry they
// were given (weft_tcp_client_*, weft_tcp_server_*; docs/ops.md), read when the registry is
// rendered: every figure checked against what was moved, refused and connected.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/metrics.h"
#include "base/random.h"
#include "transport/tcp/tcp_transport.h"

namespace weft::transport::tcp {
namespace {

constexpr char kSecret[] = "unit-test-cluster-secret-metrics";
constexpr uint64_t kRegion = 8u << 20;

Deadline Soon() { return Deadline::After(Millis(30000)); }

// The value of one series in Prometheus text ("name{labels} value" on a line of its own), or -1.
int64_t Series(const std::string& text, const std::string& series) {
  const std::string head = series + " ";
  for (size_t at = text.find(head); at != std::string::npos; at = text.find(head, at + 1)) {
    if (at != 0 && text[at - 1] != '\n') continue;
    return std::stoll(text.substr(at + head.size()));
  }
  return -1;
}

struct Pair {
  MetricsRegistry owner_metrics, initiator_metrics;
  std::vector<uint8_t> remote = std::vector<uint8_t>(kRegion), local = std::vector<uint8_t>(kRegion);
  std::unique_ptr<TcpTransport> owner, initiator;
  std::unique_ptr<PeerLink> peer;
  std::unique_ptr<ImportedRegion> region;

  void Start() {
    TcpTransportOptions oo;
    TcpServerOptions so;
    so.host = "127.0.0.1";
    so.auth.cluster_secret = kSecret;
    oo.serve = so;
    oo.client.auth.cluster_secret = kSecret;
    oo.metrics = &owner_metrics;
    auto o = TcpTransport::Create(oo);
    ASSERT_TRUE(o.ok()) << o.status().ToString();
    owner = std::move(*o);
    auto endpoint = owner->EndpointBlob();
    ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
    auto blob = owner->ExportRegion(LocalRegion{1, remote.data(), kRegion});
    ASSERT_TRUE(blob.ok()) << blob.status().ToString();

    TcpTransportOptions io;
    io.client.auth.cluster_secret = kSecret;
    io.metrics = &initiator_metrics;
    auto i = TcpTransport::Create(io);
    ASSERT_TRUE(i.ok()) << i.status().ToString();
    initiator = std::move(*i);
    auto p = initiator->Connect(*endpoint);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    peer = std::move(*p);
    auto r = initiator->ImportRegion(*peer, reinterpret_cast<uint64_t>(remote.data()), kRegion, *blob);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    region = std::move(*r);
  }

  Status Post(RemoteOpKind kind, uint64_t offset, uint64_t len) {
    RemoteOp op{kind, local.data() + offset, false, peer.get(), region.get(), offset, len};
    std::vector<Status> res(1);
    initiator->Post({&op, 1}, res, Soon());
    return res[0];
  }
};

TEST(TcpMetrics, ClientAndServerCountWhatMovedAndWhatWasRefused) {
  Pair p;
  ASSERT_NO_FATAL_FAILURE(p.Start());
  // Nothing moved yet: the series exist and are zero.
  std::string text = p.initiator_metrics.PrometheusText();
  EXPECT_EQ(Series(text, "weft_tcp_client_lanes_open"), 0) << text;
  EXPECT_EQ(Series(text, "weft_tcp_client_bytes_total{dir=\"write\"}"), 0) << text;

  // Random sizes, both ways, every byte compared.
  uint64_t state = FreshSeed(), written = 0, read = 0;
  int writes = 0, reads = 0;
  for (int i = 0; i < 12; ++i) {
    const uint64_t len = 1 + SplitMix64(state) % (3u << 20);
    const uint64_t offset = SplitMix64(state) % (kRegion - len);
    const uint64_t seed = SplitMix64(state);
    FillRandom(p.local.data() + offset, len, seed);
    ASSERT_TRUE(p.Post(RemoteOpKind::kWrite, offset, len).ok());
    ASSERT_FALSE(FirstMismatch(p.remote.data() + offset, len, seed).has_value());
    std::memset(p.local.data() + offset, 0xA5, len);
    ASSERT_TRUE(p.Post(RemoteOpKind::kRead, offset, len).ok());
    ASSERT_FALSE(FirstMismatch(p.local.data() + offset, len, seed).has_value());
    written += len, read += len, ++writes, ++reads;
  }
  // One refused request: the owner withdraws the region, the initiator still names it.
  p.owner->WithdrawRegion(1);
  EXPECT_EQ(p.Post(RemoteOpKind::kRead, 0, 4096).code(), Code::kNotFound);

  text = p.initiator_metrics.PrometheusText();
  EXPECT_EQ(Series(text, "weft_tcp_client_bytes_total{dir=\"write\"}"), static_cast<int64_t>(written)) << text;
  EXPECT_EQ(Series(text, "weft_tcp_client_bytes_total{dir=\"read\"}"), static_cast<int64_t>(read)) << text;
  const int64_t lanes = Series(text, "weft_tcp_client_lanes_open");
  EXPECT_GE(lanes, 1) << text;
  EXPECT_LE(lanes, p.initiator->client().options().lanes) << text;
  EXPECT_EQ(Series(text, "weft_tcp_client_connects_total"), lanes) << "no lane was reset:\n" << text;
  EXPECT_EQ(Series(text, "weft_tcp_client_lane_resets_total"), 0) << text;
  EXPECT_GE(Series(text, "weft_tcp_client_requests_total"), writes + reads + 1) << text;

  text = p.owner_metrics.PrometheusText();
  EXPECT_EQ(Series(text, "weft_tcp_server_bytes_total{dir=\"write\"}"), static_cast<int64_t>(written)) << text;
  EXPECT_EQ(Series(text, "weft_tcp_server_bytes_total{dir=\"read\"}"), static_cast<int64_t>(read)) << text;
  EXPECT_EQ(Series(text, "weft_tcp_server_refused_total"), 1) << text;
  EXPECT_EQ(Series(text, "weft_tcp_server_connections"), lanes) << text;
  EXPECT_EQ(Series(text, "weft_tcp_server_connections_accepted_total"), lanes) << text;
  EXPECT_EQ(Series(text, "weft_tcp_server_auth_failures_total"), 0) << text;
  EXPECT_EQ(Series(text, "weft_tcp_server_device_requests_total{buffer=\"pooled\"}"), 0) << text;

  // The initiator goes: its lanes close, and the server sees them go (within a deadline).
  p.region.reset();
  p.peer.reset();
  p.initiator.reset();
  // Its registry outlives it: rendering no longer calls into the transport that is gone.
  EXPECT_GE(Series(p.initiator_metrics.PrometheusText(), "weft_tcp_client_lanes_open"), 0);
  const Deadline until = Deadline::After(Millis(10000));
  while (Series(p.owner_metrics.PrometheusText(), "weft_tcp_server_connections") != 0 && !until.expired())
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(Series(p.owner_metrics.PrometheusText(), "weft_tcp_server_connections"), 0);
}

// A client with another secret: the server proves itself first, so the client refuses and hangs
// up mid-handshake, which the server counts as a failed handshake of its own kind (a protocol
// error: nothing was served).
TEST(TcpMetrics, AStrangersDroppedHandshakeIsCountedAndNothingServed) {
  Pair p;
  ASSERT_NO_FATAL_FAILURE(p.Start());
  TcpTransportOptions io;
  io.client.auth.cluster_secret = "not-the-cluster-secret-at-all";
  MetricsRegistry stranger_metrics;
  io.metrics = &stranger_metrics;
  auto stranger = TcpTransport::Create(io);
  ASSERT_TRUE(stranger.ok()) << stranger.status().ToString();
  auto endpoint = p.owner->EndpointBlob();
  ASSERT_TRUE(endpoint.ok());
  auto peer = (*stranger)->Connect(*endpoint);
  ASSERT_TRUE(peer.ok()) << peer.status().ToString();
  auto blob = p.owner->ExportRegion(LocalRegion{2, p.remote.data(), 4096});
  ASSERT_TRUE(blob.ok()) << blob.status().ToString();
  auto region = (*stranger)->ImportRegion(**peer, reinterpret_cast<uint64_t>(p.remote.data()), 4096, *blob);
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  std::vector<uint8_t> buf(4096);
  RemoteOp op{RemoteOpKind::kRead, buf.data(), false, peer->get(), region->get(), 0, 4096};
  std::vector<Status> res(1);
  (*stranger)->Post({&op, 1}, res, Soon());
  EXPECT_EQ(res[0].code(), Code::kUnauthenticated) << res[0].ToString();
  const Deadline until = Deadline::After(Millis(10000));  // the server sees the hang-up a moment later
  std::string text = p.owner_metrics.PrometheusText();
  while (Series(text, "weft_tcp_server_protocol_errors_total") < 1 && !until.expired()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    text = p.owner_metrics.PrometheusText();
  }
  EXPECT_GE(Series(text, "weft_tcp_server_protocol_errors_total"), 1) << text;
  EXPECT_EQ(Series(text, "weft_tcp_server_connections"), 0) << text;
  EXPECT_EQ(Series(text, "weft_tcp_server_requests_total{op=\"read\"}"), 0) << text;
  EXPECT_EQ(Series(stranger_metrics.PrometheusText(), "weft_tcp_client_lanes_open"), 0);
}

}  // namespace
}  // namespace weft::transport::tcp
