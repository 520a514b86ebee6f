// The tcp transport's side of the region contract (transport.h): exported regions are segments
// of its data server's access table, each with a random key; peers' regions are reached with
// one-sided READ/WRITE through the client, local device memory staged through bounce buffers.
#include <algorithm>

#include "base/random.h"
#include "transport/blob.h"
#include "transport/tcp/tcp_transport.h"

namespace weft::transport::tcp {

namespace {

constexpr uint8_t kBlobVersion = 1;

struct TcpPeer final : PeerLink {
  PeerAddr addr;
  uint64_t client_id = 0;  // the peer's TcpClient in its lanes' sessions (0: an endpoint blob without it)
};

struct TcpRegion final : ImportedRegion {
  uint32_t segment_id = 0;
  uint64_t access_key = 0;
};

// Sets the tcp client's and data server's series from their statistics (they count with atomics
// of their own on the data path); `server` is null where this process serves no regions.
std::function<void()> TcpScrapeHook(MetricsRegistry& m, TcpClient& client, TcpServer* server) {
  struct Client {
    Gauge* lanes;
    Counter *connects, *resets, *superseded, *idle_closes, *cap_closes, *requests, *written, *read;
  } c{m.gauge("weft_tcp_client_lanes_open", "Connections (lanes) open to peers' data servers"),
      m.counter("weft_tcp_client_connects_total", "Lanes connected and authenticated"),
      m.counter("weft_tcp_client_lane_resets_total", "Lanes closed after an error or a timeout"),
      m.counter("weft_tcp_client_sessions_superseded_total",
                "Peers' lane generations raised after a lane reset with a write outstanding"),
      m.counter("weft_tcp_client_idle_closes_total", "Lanes closed for being unused (idle_close_ms)"),
      m.counter("weft_tcp_client_cap_closes_total", "Idle lanes closed to stay under max_open_lanes"),
      m.counter("weft_tcp_client_requests_total", "Request slices sent"),
      m.counter("weft_tcp_client_bytes_total{dir=\"write\"}", "Payload bytes moved by this process's requests"),
      m.counter("weft_tcp_client_bytes_total{dir=\"read\"}")};
  struct Server {
    Gauge *connections, *bounce_in_use;
    Counter *accepted, *auth_failures, *protocol_errors, *reads, *writes, *notifies, *refused, *fenced, *read,
        *written, *staged, *unpooled;
  } s{};
  if (server) {
    s = Server{m.gauge("weft_tcp_server_connections", "Connections open to this process's data server"),
               m.gauge("weft_tcp_server_device_buffers_in_use", "Device bounce buffers held by requests in flight"),
               m.counter("weft_tcp_server_connections_accepted_total", "Connections accepted"),
               m.counter("weft_tcp_server_auth_failures_total", "Connections that failed the handshake"),
               m.counter("weft_tcp_server_protocol_errors_total", "Connections closed for malformed frames or stalls"),
               m.counter("weft_tcp_server_requests_total{op=\"read\"}", "Requests served, by operation"),
               m.counter("weft_tcp_server_requests_total{op=\"write\"}"),
               m.counter("weft_tcp_server_requests_total{op=\"notify\"}"),
               m.counter("weft_tcp_server_refused_total", "Requests answered with an error status"),
               m.counter("weft_tcp_server_fenced_total",
                         "Writes and notifications refused because a newer connection of their client superseded theirs"),
               m.counter("weft_tcp_server_bytes_total{dir=\"read\"}", "Payload bytes served to peers' requests"),
               m.counter("weft_tcp_server_bytes_total{dir=\"write\"}"),
               m.counter("weft_tcp_server_device_requests_total{buffer=\"pooled\"}",
                         "Requests for device memory, by where they were staged"),
               m.counter("weft_tcp_server_device_requests_total{buffer=\"own\"}")};
  }
  return [c, s, &client, server] {
    const TcpClientStats cs = client.stats();
    c.lanes->Set(static_cast<int64_t>(cs.open_lanes));
    c.connects->SetTotal(cs.connects);
    c.resets->SetTotal(cs.lane_resets);
    c.superseded->SetTotal(cs.superseded);
    c.idle_closes->SetTotal(cs.idle_closes);
    c.cap_closes->SetTotal(cs.cap_closes);
    c.requests->SetTotal(cs.requests);
    c.written->SetTotal(cs.bytes_written);
    c.read->SetTotal(cs.bytes_read);
    if (!server) return;
    const TcpServerStats ss = server->stats();
    s.connections->Set(static_cast<int64_t>(server->connections()));
    s.bounce_in_use->Set(static_cast<int64_t>(server->staging_stats().in_use));
    s.accepted->SetTotal(ss.connections_accepted);
    s.auth_failures->SetTotal(ss.auth_failures);
    s.protocol_errors->SetTotal(ss.protocol_errors);
    s.reads->SetTotal(ss.reads);
    s.writes->SetTotal(ss.writes);
    s.notifies->SetTotal(ss.notifies);
    s.refused->SetTotal(ss.refused);
    s.fenced->SetTotal(ss.fenced);
    s.read->SetTotal(ss.bytes_read);
    s.written->SetTotal(ss.bytes_written);
    s.staged->SetTotal(ss.device_staged);
    s.unpooled->SetTotal(ss.device_unpooled);
  };
}

}  // namespace

Result<std::unique_ptr<TcpTransport>> TcpTransport::Create(TcpTransportOptions options) {
  auto t = std::make_unique<TcpTransport>(std::move(options));
  if (t->options_.serve) {
    WEFT_ASSIGN_OR_RETURN(t->server_, TcpServer::Start(*t->options_.serve, &t->table_));
  }
  if (MetricsRegistry* m = t->options_.metrics) {
    t->staged_bytes_ = m->counter("weft_trans_staged_bytes_total", "Bytes of local device buffers staged");
    t->staging_rounds_ = m->counter("weft_trans_staging_rounds_total", "Network rounds of device staging");
    t->staging_overlapped_ = m->counter("weft_trans_staging_overlapped_rounds_total",
                                        "Staging rounds during which a device copy of another round ran");
    t->staging_in_use_ = m->gauge("weft_trans_staging_buffers_in_use",
                                  "Bounce buffers held after the last staged group finished");
    t->scrape_hook_ = m->OnScrape(TcpScrapeHook(*m, t->client_, t->server_.get()));
  }
  return t;
}

uint32_t TcpTransport::capabilities() const {
  uint32_t caps = kCapHostMemory | kCapRemoteNode | kCapSameNode | kCapRegions | kCapNotify;
  if (options_.device.copy) caps |= kCapDeviceMemory;
  return caps;
}

Result<std::string> TcpTransport::EndpointBlob() const {
  if (!server_) return Error(Code::kNotSupported, "path tcp: this process runs no data server for regions");
  auto w = BlobWriter(kBlobVersion);
  w.String(options_.advertise_host);
  w.U16(server_->port());
  w.U64(client_.id());  // so that a peer that sees this process declared down fences its writes
  return BlobText(w);
}

Result<std::string> TcpTransport::ExportRegion(const LocalRegion& region) {
  if (!server_) return Error(Code::kNotSupported, "path tcp: this process runs no data server for regions");
  if (region.device && !(options_.serve->device_copy))
    return Error(Code::kNotSupported, "path tcp: device memory needs a device copy (no GPU here)");
  uint32_t segment = 0;
  {
    std::lock_guard lock(mu_);
    // A second export under one id would leave the first segment served after the withdrawal.
    if (exported_.count(region.id))
      return Error(Code::kAlreadyExists, "path tcp: region {} is exported already", region.id);
    segment = next_segment_++;
  }
  uint64_t seed = FreshSeed();
  const uint64_t key = SplitMix64(seed);
  WEFT_RETURN_IF_ERROR(table_.Register(SegmentEntry{segment, region.base, region.len, key, mem::kReadWrite,
                                                    region.device}));
  {
    std::lock_guard lock(mu_);
    exported_[region.id] = segment;
  }
  auto w = BlobWriter(kBlobVersion);
  w.U32(segment);
  w.U64(key);
  return BlobText(w);
}

void TcpTransport::WithdrawRegion(uint64_t region_id) {
  uint32_t segment = 0;
  {
    std::lock_guard lock(mu_);
    auto it = exported_.find(region_id);
    if (it == exported_.end()) return;
    segment = it->second;
    exported_.erase(it);
  }
  // Waits for peer requests using the region; new ones are refused NOT_FOUND.
  (void)table_.Unregister(segment);
}

Result<std::unique_ptr<PeerLink>> TcpTransport::Connect(std::string_view endpoint_blob) {
  WEFT_ASSIGN_OR_RETURN(auto r, OpenBlob(endpoint_blob, kBlobVersion, "tcp", "endpoint"));
  auto peer = std::make_unique<TcpPeer>();
  Status s = r.String(peer->addr.host, 1024);
  if (s.ok()) s = r.U16(peer->addr.port);
  if (s.ok() && r.remaining() > 0) s = r.U64(peer->client_id);  // absent in blobs of older builds
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return BadBlob(s, "tcp", "endpoint");
  if (peer->addr.host.empty() || peer->addr.port == 0)
    return Error(Code::kProtocol, "endpoint blob of path tcp names no host or port 0");
  client_.Revive(peer->addr);  // a peer that rejoined at an address declared down before
  return std::unique_ptr<PeerLink>(std::move(peer));
}

void TcpTransport::PeerDown(const PeerLink& link, const Status& why) {
  const auto& peer = static_cast<const TcpPeer&>(link);
  client_.Abort(peer.addr, why);
  // Its writes to us that are still in flight (a kernel delivers what a killed process had queued,
  // and a cut link retransmits it once back) are refused from now on.
  if (server_ && peer.client_id != 0) server_->FenceClient(peer.client_id);
}

Result<std::unique_ptr<ImportedRegion>> TcpTransport::ImportRegion(const PeerLink&, uint64_t base, uint64_t len,
                                                                   std::string_view blob) {
  WEFT_ASSIGN_OR_RETURN(auto r, OpenBlob(blob, kBlobVersion, "tcp", "region"));
  auto region = std::make_unique<TcpRegion>();
  Status s = r.U32(region->segment_id);
  if (s.ok()) s = r.U64(region->access_key);
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return BadBlob(s, "tcp", "region");
  if (region->segment_id == 0) return Error(Code::kProtocol, "region blob of path tcp has segment id 0");
  region->base = base;
  region->len = len;
  return std::unique_ptr<ImportedRegion>(std::move(region));
}

void TcpTransport::Post(std::span<const RemoteOp> ops, std::span<Status> results, Deadline deadline) {
  if (ops.empty()) return;
  std::vector<TcpRequest> reqs;
  std::vector<uint8_t> on_device;
  reqs.reserve(ops.size());
  on_device.reserve(ops.size());
  for (const RemoteOp& op : ops) {
    const auto& region = static_cast<const TcpRegion&>(*op.region);
    reqs.push_back(TcpRequest{op.kind == RemoteOpKind::kWrite ? wire::DataOp::kWrite : wire::DataOp::kRead,
                              region.segment_id, region.access_key, op.offset, op.local, op.len});
    on_device.push_back(op.local_device);
  }
  const PeerAddr& addr = static_cast<const TcpPeer*>(ops[0].peer)->addr;
  StagingStats st;
  auto got = StagedTransfer(staging_, client_, addr, reqs, on_device, deadline, &st);
  std::copy(got.begin(), got.end(), results.begin());
  if (staged_bytes_ && st.bytes > 0) {
    staged_bytes_->Add(st.bytes);
    staging_rounds_->Add(st.rounds);
    staging_overlapped_->Add(st.overlapped_rounds);
  }
  if (staging_in_use_ && st.runs > 0) staging_in_use_->Set(static_cast<int64_t>(staging_.pool_stats().in_use));
}

double TcpTransport::RemoteCostNanos(uint64_t bytes) const {
  return options_.fixed_cost_ns + static_cast<double>(bytes) / options_.bytes_per_ns;
}

std::string_view TcpTransport::ExplainRemote() const {
  return "the peer's data server over TCP: one-sided READ/WRITE checked for key, bounds and permission by its "
         "progress threads (local device memory staged through bounce buffers)";
}

Status TcpTransport::Notify(const PeerLink& peer, std::span<const uint8_t> payload, Deadline deadline) {
  return client_.Notify(static_cast<const TcpPeer&>(peer).addr, payload, deadline);
}

}  // namespace weft::transport::tcp
