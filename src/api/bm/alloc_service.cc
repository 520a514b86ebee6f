#include "api/bm/alloc_service.h"

#include "wire/codec.h"

namespace weft::bm {
namespace {

constexpr uint8_t kVersion = 1;

wire::Writer Start(AllocOp op) {
  wire::Writer w;
  w.U8(kVersion);
  w.U8(static_cast<uint8_t>(op));
  return w;
}

Status ReadMedium(wire::Reader& r, gva::Medium& out) {
  uint8_t m = 0;
  WEFT_RETURN_IF_ERROR(r.U8(m));
  if (m >= gva::kMediumCount) return Error(Code::kProtocol, "unknown medium {}", m);
  out = static_cast<gva::Medium>(m);
  return OkStatus();
}

}  // namespace

std::vector<uint8_t> EncodeAlloc(uint64_t size, gva::Placement placement) {
  auto w = Start(AllocOp::kAlloc);
  w.U64(size);
  w.U8(static_cast<uint8_t>(placement.kind));
  w.U32(placement.rank);
  w.U8(static_cast<uint8_t>(placement.medium));
  return w.Take();
}

std::vector<uint8_t> EncodeFree(uint64_t gva) {
  auto w = Start(AllocOp::kFree);
  w.U64(gva);
  return w.Take();
}

std::vector<uint8_t> EncodeAddSlice(uint32_t rank, gva::Medium medium, uint64_t capacity) {
  auto w = Start(AllocOp::kAddSlice);
  w.U32(rank);
  w.U8(static_cast<uint8_t>(medium));
  w.U64(capacity);
  return w.Take();
}

Result<AllocServiceRequest> DecodeAllocServiceRequest(std::span<const uint8_t> bytes) {
  wire::Reader r(bytes);
  uint8_t version = 0, op = 0;
  WEFT_RETURN_IF_ERROR(r.U8(version));
  if (version != kVersion) return Error(Code::kProtocol, "allocator request version {} (this peer speaks {})", version, kVersion);
  WEFT_RETURN_IF_ERROR(r.U8(op));
  AllocServiceRequest req;
  switch (static_cast<AllocOp>(op)) {
    case AllocOp::kAlloc: {
      uint8_t kind = 0;
      WEFT_RETURN_IF_ERROR(r.U64(req.size));
      WEFT_RETURN_IF_ERROR(r.U8(kind));
      if (kind > static_cast<uint8_t>(gva::Placement::Kind::kSpread))
        return Error(Code::kProtocol, "unknown placement {}", kind);
      req.placement.kind = static_cast<gva::Placement::Kind>(kind);
      WEFT_RETURN_IF_ERROR(r.U32(req.placement.rank));
      WEFT_RETURN_IF_ERROR(ReadMedium(r, req.placement.medium));
      break;
    }
    case AllocOp::kFree:
      WEFT_RETURN_IF_ERROR(r.U64(req.gva));
      break;
    case AllocOp::kAddSlice:
      WEFT_RETURN_IF_ERROR(r.U32(req.rank));
      WEFT_RETURN_IF_ERROR(ReadMedium(r, req.medium));
      WEFT_RETURN_IF_ERROR(r.U64(req.size));
      break;
    default:
      return Error(Code::kProtocol, "unknown allocator operation {}", op);
  }
  req.op = static_cast<AllocOp>(op);
  WEFT_RETURN_IF_ERROR(r.ExpectEnd());
  return req;
}

Result<uint64_t> DecodeAllocReply(std::span<const uint8_t> bytes) {
  wire::Reader r(bytes);
  uint64_t gva = 0;
  WEFT_RETURN_IF_ERROR(r.U64(gva));
  WEFT_RETURN_IF_ERROR(r.ExpectEnd());
  return gva;
}

namespace {

// The slice is there already: the same capacity is a re-add (OK, nothing changes), another one
// an error. The allocator keeps the capacity rounded down to its alignment: compare that way.
Status AddSliceOnce(gva::Allocator& allocator, const AllocServiceRequest& req) {
  Status added = allocator.AddSlice(req.rank, req.medium, req.size);
  if (added.code() != Code::kAlreadyExists) return added;
  auto existing = allocator.Stats(req.rank, req.medium);
  const uint64_t usable = req.size / allocator.alignment() * allocator.alignment();
  if (existing.ok() && existing->capacity == usable) return OkStatus();
  return Error(Code::kAlreadyExists, "rank {} already has a {} slice of {} usable bytes, not {}", req.rank,
               gva::MediumName(req.medium), existing.ok() ? existing->capacity : 0, req.size);
}

}  // namespace

Result<std::vector<uint8_t>> ServeAllocator(gva::Allocator& allocator, uint32_t from_rank,
                                            std::span<const uint8_t> request, const AllocObserver* observer) {
  WEFT_ASSIGN_OR_RETURN(auto req, DecodeAllocServiceRequest(request));
  switch (req.op) {
    case AllocOp::kAlloc: {
      WEFT_ASSIGN_OR_RETURN(uint64_t gva, allocator.Alloc(req.size, req.placement, from_rank));
      if (observer && observer->on_alloc) observer->on_alloc(gva, req.size);
      wire::Writer w;
      w.U64(gva);
      return w.Take();
    }
    case AllocOp::kFree:
      WEFT_RETURN_IF_ERROR(allocator.Free(req.gva));
      if (observer && observer->on_free) observer->on_free(req.gva);
      return std::vector<uint8_t>{};
    case AllocOp::kAddSlice:
      if (req.rank != from_rank)
        return Error(Code::kPermissionDenied, "rank {} may not add the slice of rank {}", from_rank, req.rank);
      // A rank reused after its peer died finds no slice: the coordinator's peer-gone handler
      // removed it before the rank could be handed out again.
      WEFT_RETURN_IF_ERROR(AddSliceOnce(allocator, req));
      if (observer && observer->on_add_slice) observer->on_add_slice(req.rank, req.medium, req.size);
      return std::vector<uint8_t>{};
  }
  return Error(Code::kProtocol, "unknown allocator operation");
}

}  // namespace weft::bm
