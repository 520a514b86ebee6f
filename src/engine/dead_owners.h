// After a batch's copies through mapped regions: which regions' owner processes exited. A killed
// owner withdraws nothing and its mapping outlives it, so a copy into it would "succeed" into
// memory nobody reads; those copies must fail PEER_DOWN instead.
#pragma once

#include <map>
#include <span>

#include "base/status.h"
#include "transport/transport.h"

namespace weft::engine {

// The regions (each given once) whose owner's process exited, each with its PEER_DOWN. An owner
// process (ImportedRegion::OwnerProcess) is asked once, whatever the number of its regions: a KV
// cache is one region per layer; regions of an unknown owner (0) are asked one by one.
std::map<const transport::ImportedRegion*, Status> DeadOwners(
    std::span<const transport::ImportedRegion* const> regions);

}  // namespace weft::engine
