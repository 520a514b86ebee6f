// The pool allocator as a coordinator service: peers send alloc/free/add-slice requests as
// service calls; the peer hosting the coordinator owns the one gva::Allocator of the pool.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "base/result.h"
#include "gva/allocator.h"

namespace weft::bm {

enum class AllocOp : uint8_t { kAlloc = 1, kFree = 2, kAddSlice = 3 };

struct AllocServiceRequest {
  AllocOp op = AllocOp::kAlloc;
  uint64_t size = 0;            // kAlloc; capacity for kAddSlice
  gva::Placement placement;     // kAlloc
  uint64_t gva = 0;             // kFree
  uint32_t rank = 0;            // kAddSlice
  gva::Medium medium = gva::Medium::kHost;  // kAddSlice
};

std::vector<uint8_t> EncodeAlloc(uint64_t size, gva::Placement placement);
std::vector<uint8_t> EncodeFree(uint64_t gva);
std::vector<uint8_t> EncodeAddSlice(uint32_t rank, gva::Medium medium, uint64_t capacity);
// PROTOCOL for anything malformed, truncated or with trailing bytes.
Result<AllocServiceRequest> DecodeAllocServiceRequest(std::span<const uint8_t> bytes);
Result<uint64_t> DecodeAllocReply(std::span<const uint8_t> bytes);

// Told of each allocator change a peer's call made, after it succeeded (HA: the leader journals
// them). Any function may be empty. on_add_slice is told of an idempotent re-add too.
struct AllocObserver {
  std::function<void(uint64_t gva, uint64_t size)> on_alloc;
  std::function<void(uint64_t gva)> on_free;
  std::function<void(uint32_t rank, gva::Medium medium, uint64_t capacity)> on_add_slice;
};

// The coordinator's ServiceHandler: decodes, applies to the allocator, encodes the reply.
// kAddSlice of a slice the rank has already, with the same capacity, succeeds and keeps the
// slice as it is, allocations included (a peer rejoining a new leader re-adds the slice the
// leader restored); with another capacity it is ALREADY_EXISTS. observer: nullptr for none.
Result<std::vector<uint8_t>> ServeAllocator(gva::Allocator& allocator, uint32_t from_rank,
                                            std::span<const uint8_t> request,
                                            const AllocObserver* observer = nullptr);

}  // namespace weft::bm
