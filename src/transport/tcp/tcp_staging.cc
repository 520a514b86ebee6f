#include "transport/tcp/tcp_staging.h"

namespace weft::transport::tcp {

std::vector<Status> StagedTransfer(StagingPipeline& pipeline, TcpClient& client, const PeerAddr& peer,
                                   std::span<const TcpRequest> requests, std::span<const uint8_t> device_local,
                                   Deadline deadline, StagingStats* stats) {
  std::vector<Status> results(requests.size());
  std::vector<TcpRequest> plain;
  std::vector<size_t> plain_idx, staged_idx;
  std::vector<StagedRequest> staged;
  for (size_t i = 0; i < requests.size(); ++i) {
    const TcpRequest& r = requests[i];
    const bool dev = i < device_local.size() && device_local[i] &&
                     (r.op == wire::DataOp::kRead || r.op == wire::DataOp::kWrite);
    if (!dev) {
      plain.push_back(r);
      plain_idx.push_back(i);
      continue;
    }
    staged.push_back(StagedRequest{r.op == wire::DataOp::kWrite, static_cast<uint8_t*>(r.local), r.len});
    staged_idx.push_back(i);
  }
  if (!plain.empty()) {
    auto st = client.Transfer(peer, plain, deadline);
    for (size_t k = 0; k < st.size(); ++k) results[plain_idx[k]] = std::move(st[k]);
  }
  if (staged.empty()) return results;
  NetworkRound net = [&](std::span<const StagedPiece> pieces) {
    std::vector<TcpRequest> reqs;
    reqs.reserve(pieces.size());
    for (const StagedPiece& p : pieces) {
      TcpRequest r = requests[staged_idx[p.request]];
      r.remote_offset += p.offset;
      r.local = p.host;
      r.len = p.len;
      reqs.push_back(r);
    }
    return client.Transfer(peer, reqs, deadline);
  };
  auto st = pipeline.Run(staged, net, deadline, stats);
  for (size_t k = 0; k < st.size(); ++k) results[staged_idx[k]] = std::move(st[k]);
  return results;
}

}  // namespace weft::transport::tcp
