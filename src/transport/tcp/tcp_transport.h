// Path "tcp": host memory of a peer on another node, reached through that peer's TCP data server
// (tcp_server.h) with one-sided READ/WRITE requests from a TcpClient (tcp_client.h).
//
// The transport keeps a table rank -> {host, port, segment id, access key, size} that the pool
// fills from the directory (AddPeer when a peer joins, RemovePeer when it leaves or dies). In a
// copy, an end is remote when its Endpoint.mapped is null (or, with self_rank set, when it is a
// GVA of another rank: that is how a forced-tcp copy between same-node peers is told apart); its
// GVA gives the remote offset through the pool Layout. Remote -> local is a READ, local ->
// remote a WRITE, remote -> remote is bounced through a local buffer.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "gva/layout.h"
#include "transport/tcp/tcp_client.h"
#include "transport/transport.h"

namespace weft::transport::tcp {

struct TcpPeerInfo {
  std::string host;
  uint16_t port = 0;
  uint32_t segment_id = 0;
  uint64_t access_key = 0;
  uint64_t size = 0;  // bytes of the peer's host slice reachable through this segment
};

struct TcpTransportOptions {
  TcpClientOptions client;
  int copy_timeout_ms = 30000;          // deadline of one Copy/CopyBatch (Transport::Copy has none)
  uint32_t self_rank = UINT32_MAX;      // this process's rank; UINT32_MAX = only unmapped ends are remote
  double fixed_cost_ns = 50000;         // CostNanos = fixed_cost_ns + bytes / bytes_per_ns
  double bytes_per_ns = 1.2;            // 1.2 GB/s
};

class TcpTransport final : public Transport {
 public:
  TcpTransport(gva::Layout layout, TcpTransportOptions options);
  ~TcpTransport() override;

  // Adds or replaces the endpoint of a rank.
  void AddPeer(uint32_t rank, const TcpPeerInfo& info);
  // Later copies to or from the rank fail with PEER_DOWN; its idle connections are closed.
  void RemovePeer(uint32_t rank);

  std::string_view name() const override { return "tcp"; }
  // Host <-> host across nodes (Locality::kRemoteNode); device ends are not served.
  bool Serves(const RouteKey& key) const override;
  double CostNanos(const RouteKey& key, uint64_t bytes) const override;
  Status Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) override;
  std::string_view Explain(const RouteKey& key) const override;
  bool batches() const override { return true; }
  void CopyBatch(std::span<const CopyItem> items, std::span<Status> results) override;

  TcpClient& client() { return client_; }

 private:
  struct Target {
    PeerAddr addr;
    TcpPeerInfo info;
    uint64_t offset;
  };
  bool IsRemote(const Endpoint& e) const;
  // The peer and segment offset of a remote end of len bytes.
  Result<Target> Locate(const Endpoint& e, uint64_t len) const;
  Status Bounce(const Target& dst, const Target& src, uint64_t len, Deadline deadline);

  gva::Layout layout_;
  TcpTransportOptions options_;
  TcpClient client_;
  mutable std::mutex mu_;
  std::map<uint32_t, TcpPeerInfo> peers_;
  std::set<uint32_t> removed_;
};

}  // namespace weft::transport::tcp
