// The tcp side of staging (transport/staging/staging_pipeline.h): a batch of tcp requests to one
// peer, some of whose local ends are device memory, carried with the host ones in one client
// call and the device ones through the pipeline's bounce buffers.
#pragma once

#include <span>
#include <vector>

#include "transport/staging/staging_pipeline.h"
#include "transport/tcp/tcp_client.h"

namespace weft::transport::tcp {

// requests[i].local is device memory where device_local[i] is non-zero and host memory
// otherwise; one Status per request. `stats`, when given, is added the staged part's counts.
std::vector<Status> StagedTransfer(StagingPipeline& pipeline, TcpClient& client, const PeerAddr& peer,
                                   std::span<const TcpRequest> requests, std::span<const uint8_t> device_local,
                                   Deadline deadline, StagingStats* stats = nullptr);

}  // namespace weft::transport::tcp
