#include "api/symm/heap_collectives.h"

#include <cstring>

#include <fmt/format.h>

#include "api/symm/reduce.h"
#include "base/status.h"

namespace weft::symm {
namespace {

using Impl = Team::Impl;

// Piece m of count elements split over n ranks: [first, first + len).
struct Piece {
  uint64_t first, len;
};
Piece PieceOf(uint64_t count, uint32_t n, uint32_t m) {
  uint64_t first = m * count / n;
  return {first, (m + 1) * count / n - first};
}

// Whether [p, p + len) lies in this rank's heap; its offset there.
std::optional<uint64_t> HeapOffset(const Impl& t, const void* p, uint64_t len) {
  const auto a = reinterpret_cast<uintptr_t>(p), h = reinterpret_cast<uintptr_t>(t.heaps->own());
  const uint64_t hb = t.heaps->heap_bytes();
  if (!p || a < h || a - h > hb || len > hb - (a - h)) return std::nullopt;
  return a - h;
}

bool AllMapped(const Impl& t) {
  for (uint32_t m = 0; m < t.size(); ++m)
    if (m != t.me && !t.channel->mapped(m)) return false;
  return true;
}

// The round every rank ends a heap collective with: once it is done, nobody reads any rank's
// buffers any more.
Status Done(Impl& t, const OpDesc& d, Deadline dl) {
  return t.Round(d, dl, [] { return OkStatus(); });
}

}  // namespace

Result<std::vector<std::vector<uint64_t>>> HeapPlacement::Exchange(
    Impl& t, const OpDesc& desc, Deadline dl, std::initializer_list<std::pair<const void*, uint64_t>> buffers) {
  const bool mapped = AllMapped(t);
  std::vector<uint64_t> mine;
  for (const auto& [p, len] : buffers) mine.push_back(mapped ? HeapOffset(t, p, len).value_or(kNotInHeap) : kNotInHeap);
  const uint64_t bytes = mine.size() * sizeof(uint64_t);
  WEFT_RETURN_IF_ERROR(t.Round(desc, dl, [&]() -> Status {
    for (uint32_t m = 0; m < t.size(); ++m)
      if (m != t.me) WEFT_RETURN_IF_ERROR(t.channel->Send(m, mine.data(), bytes));
    return OkStatus();
  }));
  std::vector<std::vector<uint64_t>> all(t.size());
  for (uint32_t m = 0; m < t.size(); ++m) {
    if (m == t.me) {
      all[m] = mine;
      continue;
    }
    // Same description, so the same buffers: a different length is a rank of another build.
    if (t.channel->ReceivedBytes(m) != bytes)
      return Error(Code::kProtocol, "team rank {} described {} bytes of buffer placement, not {}", m,
                   t.channel->ReceivedBytes(m), bytes);
    all[m].resize(mine.size());
    std::memcpy(all[m].data(), t.channel->Received(m), bytes);
  }
  return all;
}

Result<bool> HeapAllReduce(Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl) {
  const uint64_t count = d.count, bytes = count * es;
  WEFT_ASSIGN_OR_RETURN(auto at, HeapPlacement::Agree(t, d, dl, {{send, bytes}, {recv, bytes}},
                                                      [](uint32_t, size_t) { return true; }));
  if (!at) return false;
  const uint32_t n = t.size();
  // Reduce-scatter: this rank's piece from every rank's send, in team-rank order.
  const Piece own = PieceOf(count, n, t.me);
  std::vector<const void*> in(n);
  for (uint32_t m = 0; m < n; ++m) in[m] = at->At(m, 0, own.first * es);
  ReduceN(static_cast<DType>(d.dtype), static_cast<ReduceOp>(d.op), static_cast<uint8_t*>(recv) + own.first * es, in,
          own.len);
  WEFT_RETURN_IF_ERROR(t.Round(d, dl, [] { return OkStatus(); }));
  // Allgather: every other piece from the rank that reduced it.
  for (uint32_t m = 0; m < n; ++m) {
    if (m == t.me) continue;
    const Piece p = PieceOf(count, n, m);
    std::memcpy(static_cast<uint8_t*>(recv) + p.first * es, at->At(m, 1, p.first * es), p.len * es);
  }
  WEFT_RETURN_IF_ERROR(Done(t, d, dl));
  return true;
}

Result<bool> HeapReduceScatter(Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl) {
  const uint64_t count = d.count, n = t.size();
  WEFT_ASSIGN_OR_RETURN(auto at, HeapPlacement::Agree(t, d, dl, {{send, n * count * es}},
                                                      [](uint32_t, size_t) { return true; }));
  if (!at) return false;
  std::vector<const void*> in(n);
  for (uint32_t m = 0; m < n; ++m) in[m] = at->At(m, 0, t.me * count * es);
  ReduceN(static_cast<DType>(d.dtype), static_cast<ReduceOp>(d.op), recv, in, count);
  WEFT_RETURN_IF_ERROR(Done(t, d, dl));
  return true;
}

Result<bool> HeapReduce(Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl) {
  const uint64_t bytes = d.count * es;
  WEFT_ASSIGN_OR_RETURN(auto at, HeapPlacement::Agree(t, d, dl, {{send, bytes}},
                                                      [](uint32_t, size_t) { return true; }));
  if (!at) return false;
  if (t.me == d.root) {
    std::vector<const void*> in(t.size());
    for (uint32_t m = 0; m < t.size(); ++m) in[m] = at->At(m, 0, 0);
    ReduceN(static_cast<DType>(d.dtype), static_cast<ReduceOp>(d.op), recv, in, d.count);
  }
  WEFT_RETURN_IF_ERROR(Done(t, d, dl));
  return true;
}

Result<bool> HeapAllGather(Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl) {
  const uint64_t bytes = d.count * es;
  WEFT_ASSIGN_OR_RETURN(auto at, HeapPlacement::Agree(t, d, dl, {{send, bytes}},
                                                      [](uint32_t, size_t) { return true; }));
  if (!at) return false;
  for (uint32_t m = 0; m < t.size(); ++m) {
    uint8_t* to = static_cast<uint8_t*>(recv) + m * bytes;
    const void* from = m == t.me ? send : at->At(m, 0, 0);
    if (to != from) std::memmove(to, from, bytes);
  }
  WEFT_RETURN_IF_ERROR(Done(t, d, dl));
  return true;
}

Result<bool> HeapGather(Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl) {
  const uint64_t bytes = d.count * es;
  WEFT_ASSIGN_OR_RETURN(auto at, HeapPlacement::Agree(t, d, dl, {{send, bytes}},
                                                      [&](uint32_t m, size_t) { return m != d.root; }));
  if (!at) return false;
  if (t.me == d.root) {
    for (uint32_t m = 0; m < t.size(); ++m) {
      uint8_t* to = static_cast<uint8_t*>(recv) + m * bytes;
      const void* from = m == t.me ? send : at->At(m, 0, 0);
      if (to != from) std::memmove(to, from, bytes);
    }
  }
  WEFT_RETURN_IF_ERROR(Done(t, d, dl));
  return true;
}

Result<bool> HeapBroadcast(Impl& t, const OpDesc& d, void* buf, size_t es, Deadline dl) {
  const uint64_t bytes = d.count * es;
  WEFT_ASSIGN_OR_RETURN(auto at, HeapPlacement::Agree(t, d, dl, {{buf, bytes}},
                                                      [&](uint32_t m, size_t) { return m == d.root; }));
  if (!at) return false;
  if (t.me != d.root) std::memcpy(buf, at->At(d.root, 0, 0), bytes);
  WEFT_RETURN_IF_ERROR(Done(t, d, dl));
  return true;
}

Result<bool> HeapScatter(Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl) {
  const uint64_t bytes = d.count * es;
  const void* root_send = t.me == d.root ? send : nullptr;
  WEFT_ASSIGN_OR_RETURN(auto at, HeapPlacement::Agree(t, d, dl, {{root_send, t.size() * bytes}},
                                                      [&](uint32_t m, size_t) { return m == d.root; }));
  if (!at) return false;
  const void* from = t.me == d.root ? static_cast<const uint8_t*>(send) + t.me * bytes : at->At(d.root, 0, t.me * bytes);
  if (recv != from) std::memmove(recv, from, bytes);
  WEFT_RETURN_IF_ERROR(Done(t, d, dl));
  return true;
}

Result<bool> HeapAllToAll(Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl) {
  const uint64_t bytes = d.count * es, total = t.size() * bytes;
  // In place, a rank would overwrite its block for rank m while rank m still reads it.
  const auto s = reinterpret_cast<uintptr_t>(send), r = reinterpret_cast<uintptr_t>(recv);
  const bool overlap = s < r + total && r < s + total;
  WEFT_ASSIGN_OR_RETURN(auto at, HeapPlacement::Agree(t, d, dl, {{overlap ? nullptr : send, total}},
                                                      [](uint32_t, size_t) { return true; }));
  if (!at) return false;
  for (uint32_t m = 0; m < t.size(); ++m) {
    const void* from = m == t.me ? static_cast<const uint8_t*>(send) + m * bytes : at->At(m, 0, t.me * bytes);
    std::memcpy(static_cast<uint8_t*>(recv) + m * bytes, from, bytes);
  }
  WEFT_RETURN_IF_ERROR(Done(t, d, dl));
  return true;
}

}  // namespace weft::symm
