// Fuzzes the pool allocator's service decoder and the allocator behind it: arbitrary bytes
// either fail with PROTOCOL or decode to a request that the allocator answers with a Status,
// never a crash.
#include <cstddef>
#include <cstdint>

#include "api/bm/alloc_service.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace weft;
  auto request = bm::DecodeAllocServiceRequest({data, size});
  if (!request.ok()) {
    if (request.status().code() != Code::kProtocol) __builtin_trap();
    return 0;
  }
  static const gva::Layout layout = *gva::Layout::Make(0x200000000000ull, 1 << 20, 4);
  gva::Allocator allocator(layout);
  (void)allocator.AddSlice(0, gva::Medium::kHost, 1 << 20);
  auto reply = bm::ServeAllocator(allocator, 0, {data, size});
  if (reply.ok() && request->op == bm::AllocOp::kAlloc && !bm::DecodeAllocReply(*reply).ok()) __builtin_trap();
  return 0;
}
