#include "engine/dead_owners.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace weft::engine {

std::map<const transport::ImportedRegion*, Status> DeadOwners(
    std::span<const transport::ImportedRegion* const> regions) {
  std::map<const transport::ImportedRegion*, Status> gone;
  std::vector<std::pair<uint64_t, Status>> asked;  // owner process -> its answer (few owners a batch)
  for (const transport::ImportedRegion* region : regions) {
    const uint64_t owner = region->OwnerProcess();
    auto it = std::find_if(asked.begin(), asked.end(), [&](const auto& a) { return owner != 0 && a.first == owner; });
    if (it == asked.end()) it = asked.insert(asked.end(), {owner, region->OwnerAlive()});
    if (!it->second.ok()) gone.emplace(region, it->second);
  }
  return gone;
}

}  // namespace weft::engine
