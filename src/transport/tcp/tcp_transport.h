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
#include <set>
#include <string>

#include "gva/layout.h"
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
};

class TcpTransport final : public Transport {
 public:
  TcpTransport(gva::Layout layout, TcpTransportOptions options);
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
  // Any ends across nodes (Locality::kRemoteNode). A local device end needs options.device
  // (else the copy is NOT_SUPPORTED); a remote one, a device slice added with AddPeerSlice.
  bool Serves(const RouteKey& key) const override;
  double CostNanos(const RouteKey& key, uint64_t bytes) const override;
  Status Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) override;
  std::string_view Explain(const RouteKey& key) const override;
  bool batches() const override { return true; }
  void CopyBatch(std::span<const CopyItem> items, std::span<Status> results) override;

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
};

}  // namespace weft::transport::tcp
