#include "api/bm/pool_coordinator.h"

#include "api/bm/alloc_service.h"
#include "api/store/protocol.h"
#include "base/clock.h"

namespace weft::bm {
namespace {

store::MasterOptions StoreOptions(const Config& config) {
  store::MasterOptions o;
  o.lease_ttl = Millis(config.store_lease_ttl_ms);
  o.high_watermark = config.store_high_watermark_pct / 100.0;
  o.eviction_ratio = config.store_eviction_pct / 100.0;
  o.put_timeout = Millis(config.store_put_timeout_ms);
  o.soft_pin_ttl = Millis(config.store_soft_pin_ttl_ms);
  return o;
}

}  // namespace

Result<std::unique_ptr<PoolCoordinator>> PoolCoordinator::Start(const Config& config) {
  WEFT_ASSIGN_OR_RETURN(auto layout, gva::Layout::Make(config.gva_base, config.rank_size, config.max_ranks));
  std::unique_ptr<PoolCoordinator> pc(new PoolCoordinator());
  pc->allocator_ = std::make_unique<gva::Allocator>(layout);
  gva::Allocator* allocator = pc->allocator_.get();
  pc->master_ = std::make_unique<store::Master>(*allocator, StoreOptions(config));
  store::Master* master = pc->master_.get();
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
          // One handler, two services: a store call says so in its first byte.
          [allocator, master](uint32_t from, std::span<const uint8_t> request) {
            if (store::IsStoreCall(request)) return store::ServeStore(*master, from, request);
            return ServeAllocator(*allocator, from, request);
          },
          // A peer that is gone takes its allocations with it, and the store its objects there.
          [allocator, master](uint32_t rank, bool) {
            master->DropRank(rank);
            allocator->RemoveSlice(rank, gva::Medium::kHost);
            allocator->RemoveSlice(rank, gva::Medium::kDevice);
          }));
  return pc;
}

}  // namespace weft::bm
