#include "transport/tcp/tcp_transport.h"

namespace weft::transport::tcp {

TcpTransport::TcpTransport(TcpTransportOptions options)
    : options_(std::move(options)), client_(options_.client), staging_(options_.staging, options_.device) {}

TcpTransport::~TcpTransport() = default;

// Regions only: a copy between two ends the engine resolved is never a tcp op (a pool slice that
// is not mapped here is a region of its owner: engine/peer_slices.h).
bool TcpTransport::Serves(const RouteKey&) const { return false; }

double TcpTransport::CostNanos(const RouteKey&, uint64_t bytes) const { return RemoteCostNanos(bytes); }

Status TcpTransport::Copy(const Endpoint&, const Endpoint&, uint64_t) {
  return Error(Code::kNotSupported, "path tcp carries one-sided ops on a peer's regions only (Post)");
}

std::string_view TcpTransport::Explain(const RouteKey&) const { return ExplainRemote(); }

}  // namespace weft::transport::tcp
