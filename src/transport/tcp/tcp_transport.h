// Path "tcp": memory of a peer on another node, reached through that peer's TCP data server
// (tcp_server.h) with one-sided READ/WRITE requests from a TcpClient (tcp_client.h).
//
// The transport keeps a table (medium, rank) -> {host, port, segment id, access key, size} that
// the pool fills from the directory (AddPeer / AddPeerSlice when a peer joins, RemovePeer when it
// leaves or dies): a peer's host slice and its device slice are two segments of its data server.
// In a copy, an end is remote when its Endpoint.mapped is null (or, with self_rank set, when it is
// a GVA of another rank: that is how a forced-tcp copy between same-node peers is told apart);
// its GVA gives the medium and the remote offset through the pool Layout. Remote -> local is a
// READ, local -> remote a WRITE, remote -> remote is bounced through a local buffer.
//
// Device memory: a remote device slice is served by its owner's data server (which stages it
// through its bounce buffers). A local device end (LD, or a GD slice of this process) is staged
// here through a StagingPipeline (staging_pipeline.h): its device copy of one part overlaps the
// network transfer of another. That needs TcpTransportOptions::device; without it (no GPU) a
// local device end is NOT_SUPPORTED and nothing else changes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "base/metrics.h"
#include "gva/layout.h"
#include "mem/access_table.h"
#include "transport/tcp/tcp_server.h"
#include "transport/tcp/staging_pipeline.h"
#include "transport/tcp/tcp_client.h"
#include "transport/transport.h"

namespace weft::transport::tcp {

struct TcpPeerInfo {
  std::string host;
  uint16_t port = 0;
  uint32_t segment_id = 0;
  uint64_t access_key = 0;
  uint64_t size = 0;  // bytes of the peer's slice reachable through this segment
};

struct TcpTransportOptions {
  TcpClientOptions client;
  int copy_timeout_ms = 30000;          // deadline of one Copy/CopyBatch (Transport::Copy has none)
  uint32_t self_rank = UINT32_MAX;      // this process's rank; UINT32_MAX = only unmapped ends are remote
  double fixed_cost_ns = 50000;         // CostNanos = fixed_cost_ns + bytes / bytes_per_ns
  double bytes_per_ns = 1.2;            // 1.2 GB/s
  // How a local device end is copied to and from the bounce buffers (CUDA: HostDeviceCopier and
  // pinned memory, mem/cuda/host_device_copy.h). Unset: local device ends are NOT_SUPPORTED.
  DeviceStagingOps device;
  StagingOptions staging;               // bounce buffers of local device ends (bounded per transport)
  // The region contract (transport.h): with `serve`, Create starts a data server for the regions
  // this process exports (each one a segment of its access table with a fresh random key) and
  // advertises it as advertise_host:port. Without it the transport only reaches peers.
  std::optional<TcpServerOptions> serve;
  std::string advertise_host = "127.0.0.1";
  MetricsRegistry* metrics = nullptr;   // staging counters (weft_trans_staged_*), when given
};

class TcpTransport final : public Transport {
 public:
  TcpTransport(gva::Layout layout, TcpTransportOptions options);
  // With options.serve: also starts the data server (UNAVAILABLE when its port is taken).
  static Result<std::unique_ptr<TcpTransport>> Create(gva::Layout layout, TcpTransportOptions options);
  ~TcpTransport() override;

  // Adds or replaces the endpoint of a rank's slice of `medium` (its GVAs in that medium's region
  // are served by info's segment). Adding either slice makes a removed rank reachable again.
  void AddPeerSlice(gva::Medium medium, uint32_t rank, const TcpPeerInfo& info);
  // The host slice: AddPeerSlice(gva::Medium::kHost, rank, info).
  void AddPeer(uint32_t rank, const TcpPeerInfo& info);
  // Forgets both slices of the rank: later copies to or from it fail with PEER_DOWN; its idle
  // connections are closed.
  void RemovePeer(uint32_t rank);

  std::string_view name() const override { return "tcp"; }
  uint32_t capabilities() const override;
  // Any ends across nodes (Locality::kRemoteNode). A local device end needs options.device
  // (else the copy is NOT_SUPPORTED); a remote one, a device slice added with AddPeerSlice.
  bool Serves(const RouteKey& key) const override;
  double CostNanos(const RouteKey& key, uint64_t bytes) const override;
  Status Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) override;
  std::string_view Explain(const RouteKey& key) const override;
  bool batches() const override { return true; }
  void CopyBatch(std::span<const CopyItem> items, std::span<Status> results) override;

  // The region contract: regions are segments of this transport's data server.
  Result<std::string> EndpointBlob() const override;
  Result<std::string> ExportRegion(const LocalRegion& region) override;
  void WithdrawRegion(uint64_t region_id) override;
  Result<std::unique_ptr<PeerLink>> Connect(std::string_view endpoint_blob) override;
  Result<std::unique_ptr<ImportedRegion>> ImportRegion(const PeerLink& peer, uint64_t base, uint64_t len,
                                                       std::string_view blob) override;
  void Post(std::span<const RemoteOp> ops, std::span<Status> results, Deadline deadline) override;
  double RemoteCostNanos(uint64_t bytes) const override;
  std::string_view ExplainRemote() const override;
  Status Notify(const PeerLink& peer, std::span<const uint8_t> payload, Deadline deadline) override;
  std::optional<uint16_t> ListenPort() const override {
    return server_ ? std::optional<uint16_t>(server_->port()) : std::nullopt;
  }

  TcpClient& client() { return client_; }
  StagingPipeline& staging() { return staging_; }

 private:
  struct Target {
    PeerAddr addr;
    TcpPeerInfo info;
    uint64_t offset;
  };
  bool IsRemote(const Endpoint& e) const;
  // Whether a local end (mapped here) is device memory: an LD pointer the engine classified, or
  // a GVA of the device region.
  bool IsLocalDevice(const Endpoint& e) const;
  // The peer and segment offset of a remote end of len bytes.
  Result<Target> Locate(const Endpoint& e, uint64_t len) const;
  Status Bounce(const Target& dst, const Target& src, uint64_t len, Deadline deadline);

  gva::Layout layout_;
  TcpTransportOptions options_;
  TcpClient client_;
  StagingPipeline staging_;
  mutable std::mutex mu_;
  std::map<std::pair<gva::Medium, uint32_t>, TcpPeerInfo> peers_;
  std::set<uint32_t> removed_;

  // The region contract's data server (options.serve) and what it exports.
  AccessTable table_;
  std::unique_ptr<TcpServer> server_;
  std::map<uint64_t, uint32_t> exported_;  // region id -> segment id (under mu_)
  uint32_t next_segment_ = 1;
  Counter* staged_bytes_ = nullptr;
  Counter* staging_rounds_ = nullptr;
  Counter* staging_overlapped_ = nullptr;
  Gauge* staging_in_use_ = nullptr;
};

}  // namespace weft::transport::tcp
