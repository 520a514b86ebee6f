#include "api/bm/pool_coordinator.h"

#include "api/bm/alloc_service.h"
#include "base/clock.h"

namespace weft::bm {

Result<std::unique_ptr<PoolCoordinator>> PoolCoordinator::Start(const Config& config) {
  WEFT_ASSIGN_OR_RETURN(auto layout, gva::Layout::Make(config.gva_base, config.rank_size, config.max_ranks));
  std::unique_ptr<PoolCoordinator> pc(new PoolCoordinator());
  pc->allocator_ = std::make_unique<gva::Allocator>(layout);
  gva::Allocator* allocator = pc->allocator_.get();
  meta::CoordinatorOptions options;
  options.socket_path = config.CoordinatorPath();
  options.pool_name = config.pool_name;
  options.rank_size = config.rank_size;
  options.max_ranks = config.max_ranks;
  options.peer_timeout = Millis(config.peer_timeout_ms);
  options.listen_address = config.coordinator_listen;
  options.cluster_secret = config.cluster_secret;
  WEFT_ASSIGN_OR_RETURN(
      pc->coordinator_,
      meta::Coordinator::Start(
          options,
          [allocator](uint32_t from, std::span<const uint8_t> request) {
            return ServeAllocator(*allocator, from, request);
          },
          // A peer that is gone takes its allocations with it.
          [allocator](uint32_t rank, bool) {
            allocator->RemoveSlice(rank, gva::Medium::kHost);
            allocator->RemoveSlice(rank, gva::Medium::kDevice);
          }));
  return pc;
}

}  // namespace weft::bm
