// Path "tcp": memory of a peer on any node, reached through that peer's TCP data server
// (tcp_server.h) with one-sided READ/WRITE requests from a TcpClient (tcp_client.h). It serves
// the region contract (transport.h) only: with options.serve it runs a data server whose access
// table holds the regions this process exports (each a segment with a fresh random key), and its
// endpoint blob is that server's host:port; a peer's regions are reached by Post.
//
// Device memory: a device region is served by its owner's data server, which stages it through
// its bounce buffers (TcpServerOptions::device_copy). A local device end of an op is staged here
// through a StagingPipeline (transport/staging/staging_pipeline.h): its device copy of one part overlaps the
// network transfer of another. That needs TcpTransportOptions::device; without it (no GPU) an op
// with a local device end is NOT_SUPPORTED and nothing else changes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "base/metrics.h"
#include "mem/access_table.h"
#include "transport/tcp/tcp_server.h"
#include "transport/tcp/tcp_staging.h"
#include "transport/tcp/tcp_client.h"
#include "transport/transport.h"

namespace weft::transport::tcp {

struct TcpTransportOptions {
  TcpClientOptions client;
  double fixed_cost_ns = 50000;         // RemoteCostNanos = fixed_cost_ns + bytes / bytes_per_ns
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
  // When given: staging counters (weft_trans_staged_*) and the client's and data server's
  // connections, requests, bytes and refusals (weft_tcp_client_*, weft_tcp_server_*; docs/ops.md).
  MetricsRegistry* metrics = nullptr;
};

class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(TcpTransportOptions options);
  // With options.serve: also starts the data server (UNAVAILABLE when its port is taken).
  static Result<std::unique_ptr<TcpTransport>> Create(TcpTransportOptions options);
  ~TcpTransport() override;

  std::string_view name() const override { return "tcp"; }
  uint32_t capabilities() const override;
  // No resolved copy: regions only (Copy is NOT_SUPPORTED).
  bool Serves(const RouteKey& key) const override;
  double CostNanos(const RouteKey& key, uint64_t bytes) const override;
  Status Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) override;
  std::string_view Explain(const RouteKey& key) const override;

  // The region contract: regions are segments of this transport's data server.
  Result<std::string> EndpointBlob() const override;
  Result<std::string> ExportRegion(const LocalRegion& region) override;
  void WithdrawRegion(uint64_t region_id) override;
  Result<std::unique_ptr<PeerLink>> Connect(std::string_view endpoint_blob) override;
  void PeerDown(const PeerLink& peer, const Status& why) override;
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
  TcpTransportOptions options_;
  TcpClient client_;
  StagingPipeline staging_;
  mutable std::mutex mu_;

  // The region contract's data server (options.serve) and what it exports.
  AccessTable table_;
  std::unique_ptr<TcpServer> server_;
  std::map<uint64_t, uint32_t> exported_;  // region id -> segment id (under mu_)
  uint32_t next_segment_ = 1;
  Counter* staged_bytes_ = nullptr;
  Counter* staging_rounds_ = nullptr;
  Counter* staging_overlapped_ = nullptr;
  Gauge* staging_in_use_ = nullptr;
  // The client's and data server's statistics, published when the metrics are read. Last: it
  // goes first, before the client and server it reads.
  MetricsRegistry::ScrapeHook scrape_hook_;
};

}  // namespace weft::transport::tcp
