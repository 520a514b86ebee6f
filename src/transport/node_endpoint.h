// The endpoint blob of the same-node transports (shm, cma, cuda's IPC regions): the node
// identity (base/node_identity.h) and the process id. Connect refuses a peer on another node
// with UNAVAILABLE, so those transports step aside for tcp.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace weft::transport {

std::string EncodeNodeEndpoint(const std::string& node_id);  // this process
// The peer's pid. PROTOCOL for a blob that does not parse, UNAVAILABLE for another node.
Result<uint32_t> DecodeNodeEndpoint(std::string_view blob, const std::string& node_id, std::string_view transport);

}  // namespace weft::transport
