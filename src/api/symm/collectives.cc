// The eight collectives on a team's channel (channel.h), for host buffers. Each runs in steps
// of at most slot_bytes per peer and message; a step is one round (two for the large
// allreduce). Every rank reduces its inputs in team-rank order, so all ranks get the same bits.
#include <algorithm>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "api/symm/device_collectives.h"
#include "api/symm/heap_collectives.h"
#include "api/symm/reduce.h"
#include "api/symm/team_impl.h"
#include "base/status.h"

namespace weft::symm {
namespace {

using Impl = Team::Impl;

const uint8_t* At(const void* p, uint64_t elem, size_t elem_size) {
  return static_cast<const uint8_t*>(p) + elem * elem_size;
}
uint8_t* At(void* p, uint64_t elem, size_t elem_size) { return static_cast<uint8_t*>(p) + elem * elem_size; }

// What a call asks for, checked the same way on every rank before any round.
struct Call {
  OpDesc desc;
  size_t es = 0;        // element size
  uint64_t per = 0;     // elements per message
  uint64_t steps = 1;   // rounds (at least one, so ranks that disagree find out even at count 0)
};

Status CheckArguments(const Impl& t, const OpDesc& d, bool reduces, std::initializer_list<const void*> buffers) {
  if (d.dtype > static_cast<uint8_t>(DType::kU8)) return Error(Code::kInvalidArgument, "unknown dtype {}", d.dtype);
  if (reduces && d.op > static_cast<uint8_t>(ReduceOp::kProd))
    return Error(Code::kInvalidArgument, "unknown reduce op {}", d.op);
  if (d.root >= t.size())
    return Error(Code::kInvalidArgument, "root {} is not a rank of this team of {}", d.root, t.size());
  uint64_t limit = (uint64_t{1} << 56) / DTypeSize(static_cast<DType>(d.dtype)) / t.size();
  if (d.count > limit) return Error(Code::kInvalidArgument, "count {} is too large", d.count);
  if (d.count > 0)
    for (const void* b : buffers)
      if (!b) return Error(Code::kInvalidArgument, "{} with count {} got a null buffer", KindName(d.kind), d.count);
  return OkStatus();
}

// A rank whose own arguments are bad still takes part in one round, marked as refusing, so the
// other ranks return MISMATCH at once instead of waiting for it until their deadline.
Status Refuse(Impl& t, OpDesc d, const Status& why, Deadline deadline) {
  d.pad = 1;
  Status s = t.Round(d, deadline, [] { return OkStatus(); });
  return s.ok() || s.code() == Code::kMismatch ? why : s;
}

Result<Call> Prepare(Impl& t, Kind kind, uint64_t count, DType dtype, ReduceOp op, uint32_t root, bool reduces,
                     std::initializer_list<const void*> buffers, Deadline deadline) {
  ++t.stats.collectives;
  Call c;
  c.desc = OpDesc{static_cast<uint8_t>(kind), static_cast<uint8_t>(dtype),
                  static_cast<uint8_t>(reduces ? op : ReduceOp::kSum), 0, root, count};
  Status ok = CheckArguments(t, c.desc, reduces, buffers);
  if (!ok.ok()) {
    c.desc.count = 0;
    return Refuse(t, c.desc, ok, deadline);
  }
  c.es = DTypeSize(dtype);
  c.per = std::max<uint64_t>(1, t.slot_bytes / c.es);
  c.steps = std::max<uint64_t>(1, (count + c.per - 1) / c.per);
  return c;
}

// Step s of a call covers elements [first, first + len).
struct Step {
  uint64_t first;
  uint64_t len;
};
Step StepOf(const Call& c, uint64_t s) {
  uint64_t first = s * c.per;
  return {first, first >= c.desc.count ? 0 : std::min(c.per, c.desc.count - first)};
}

template <typename SendFn>
Status SendToAll(Impl& t, SendFn&& payload_for) {
  for (uint32_t m = 0; m < t.size(); ++m) {
    if (m == t.me) continue;
    auto [data, len] = payload_for(m);
    WEFT_RETURN_IF_ERROR(t.channel->Send(m, data, len));
  }
  return OkStatus();
}

void CopyIn(void* dst, const void* src, uint64_t len) {
  if (len && dst != src) std::memmove(dst, src, len);
}

std::vector<const void*> Inputs(const Impl& t, const void* own) {
  std::vector<const void*> in(t.size());
  for (uint32_t m = 0; m < t.size(); ++m) in[m] = m == t.me ? own : t.channel->Received(m);
  return in;
}

Status OneShotAllReduce(Impl& t, const Call& c, const void* send, void* recv, ReduceOp op, Deadline dl) {
  for (uint64_t s = 0; s < c.steps; ++s) {
    Step st = StepOf(c, s);
    const uint8_t* mine = At(send, st.first, c.es);
    WEFT_RETURN_IF_ERROR(t.Round(c.desc, dl, [&] {
      return SendToAll(t, [&](uint32_t) { return std::pair{mine, st.len * c.es}; });
    }));
    auto in = Inputs(t, mine);
    ReduceN(static_cast<DType>(c.desc.dtype), op, At(recv, st.first, c.es), in, st.len);
  }
  return OkStatus();
}

// Reduce-scatter then allgather, per step of up to size × per elements: rank m reduces piece m
// of the step and sends the result to everyone, so each rank moves 2 (size-1)/size of the data
// instead of size-1 times it.
Status TwoPhaseAllReduce(Impl& t, const Call& c, const void* send, void* recv, ReduceOp op, Deadline dl) {
  const uint64_t n = t.size();
  const uint64_t span = n * c.per;
  for (uint64_t first = 0; first < c.desc.count; first += span) {
    uint64_t len = std::min(span, c.desc.count - first);
    auto piece = [&](uint64_t m) { return Step{first + m * len / n, (m + 1) * len / n - m * len / n}; };
    Step own = piece(t.me);
    WEFT_RETURN_IF_ERROR(t.Round(c.desc, dl, [&] {
      return SendToAll(t, [&](uint32_t m) { return std::pair{At(send, piece(m).first, c.es), piece(m).len * c.es}; });
    }));
    auto in = Inputs(t, At(send, own.first, c.es));
    ReduceN(static_cast<DType>(c.desc.dtype), op, At(recv, own.first, c.es), in, own.len);
    WEFT_RETURN_IF_ERROR(t.Round(c.desc, dl, [&] {
      return SendToAll(t, [&](uint32_t) { return std::pair{At(static_cast<const void*>(recv), own.first, c.es),
                                                           own.len * c.es}; });
    }));
    for (uint32_t m = 0; m < n; ++m)
      if (m != t.me) CopyIn(At(recv, piece(m).first, c.es), t.channel->Received(m), piece(m).len * c.es);
  }
  return OkStatus();
}

}  // namespace

Status Team::AllReduce(const void* send, void* recv, uint64_t count, DType dtype, ReduceOp op, OptDeadline deadline) {
  Impl& t = *impl_;
  Deadline dl = t.DeadlineOf(deadline);
  if (OnDevice(t, {send, recv})) return DeviceCollective(t, {Kind::kAllReduce, send, recv, count, dtype, op, 0}, dl);
  WEFT_ASSIGN_OR_RETURN(Call c, Prepare(t, Kind::kAllReduce, count, dtype, op, 0, true, {send, recv}, dl));
  if (!TriesHeapPath(t, count * c.es)) return OneShotAllReduce(t, c, send, recv, op, dl);
  WEFT_ASSIGN_OR_RETURN(bool done, HeapAllReduce(t, c.desc, send, recv, c.es, dl));
  return done ? OkStatus() : TwoPhaseAllReduce(t, c, send, recv, op, dl);
}

Status Team::Broadcast(void* buf, uint64_t count, DType dtype, uint32_t root, OptDeadline deadline) {
  Impl& t = *impl_;
  Deadline dl = t.DeadlineOf(deadline);
  if (OnDevice(t, {buf}))
    return DeviceCollective(t, {Kind::kBroadcast, buf, nullptr, count, dtype, ReduceOp::kSum, root}, dl);
  WEFT_ASSIGN_OR_RETURN(Call c, Prepare(t, Kind::kBroadcast, count, dtype, {}, root, false, {buf}, dl));
  if (TriesHeapPath(t, count * c.es)) {
    WEFT_ASSIGN_OR_RETURN(bool done, HeapBroadcast(t, c.desc, buf, c.es, dl));
    if (done) return OkStatus();
  }
  for (uint64_t s = 0; s < c.steps; ++s) {
    Step st = StepOf(c, s);
    WEFT_RETURN_IF_ERROR(t.Round(c.desc, dl, [&] {
      if (t.me != root) return OkStatus();
      return SendToAll(t, [&](uint32_t) { return std::pair{At(static_cast<const void*>(buf), st.first, c.es),
                                                           st.len * c.es}; });
    }));
    if (t.me != root) CopyIn(At(buf, st.first, c.es), t.channel->Received(root), st.len * c.es);
  }
  return OkStatus();
}

Status Team::Scatter(const void* send, void* recv, uint64_t count, DType dtype, uint32_t root, OptDeadline deadline) {
  Impl& t = *impl_;
  Deadline dl = t.DeadlineOf(deadline);
  if (OnDevice(t, {send, recv}))
    return DeviceCollective(t, {Kind::kScatter, send, recv, count, dtype, ReduceOp::kSum, root}, dl);
  const void* root_send = impl_->me == root ? send : recv;  // only the root's send is read
  WEFT_ASSIGN_OR_RETURN(Call c, Prepare(t, Kind::kScatter, count, dtype, {}, root, false, {root_send, recv}, dl));
  if (TriesHeapPath(t, t.size() * count * c.es)) {
    WEFT_ASSIGN_OR_RETURN(bool done, HeapScatter(t, c.desc, send, recv, c.es, dl));
    if (done) return OkStatus();
  }
  for (uint64_t s = 0; s < c.steps; ++s) {
    Step st = StepOf(c, s);
    WEFT_RETURN_IF_ERROR(t.Round(c.desc, dl, [&] {
      if (t.me != root) return OkStatus();
      return SendToAll(t, [&](uint32_t m) { return std::pair{At(send, m * count + st.first, c.es), st.len * c.es}; });
    }));
    const void* from = t.me == root ? At(send, root * count + st.first, c.es) : t.channel->Received(root);
    CopyIn(At(recv, st.first, c.es), from, st.len * c.es);
  }
  return OkStatus();
}

Status Team::Gather(const void* send, void* recv, uint64_t count, DType dtype, uint32_t root, OptDeadline deadline) {
  Impl& t = *impl_;
  Deadline dl = t.DeadlineOf(deadline);
  if (OnDevice(t, {send, recv}))
    return DeviceCollective(t, {Kind::kGather, send, recv, count, dtype, ReduceOp::kSum, root}, dl);
  const void* root_recv = impl_->me == root ? recv : send;  // only the root's recv is written
  WEFT_ASSIGN_OR_RETURN(Call c, Prepare(t, Kind::kGather, count, dtype, {}, root, false, {send, root_recv}, dl));
  if (TriesHeapPath(t, t.size() * count * c.es)) {
    WEFT_ASSIGN_OR_RETURN(bool done, HeapGather(t, c.desc, send, recv, c.es, dl));
    if (done) return OkStatus();
  }
  for (uint64_t s = 0; s < c.steps; ++s) {
    Step st = StepOf(c, s);
    const uint8_t* mine = At(send, st.first, c.es);
    WEFT_RETURN_IF_ERROR(t.Round(c.desc, dl, [&] {
      return t.me == root ? OkStatus() : t.channel->Send(root, mine, st.len * c.es);
    }));
    if (t.me != root) continue;
    for (uint32_t m = 0; m < t.size(); ++m)
      CopyIn(At(recv, m * count + st.first, c.es), m == root ? mine : t.channel->Received(m), st.len * c.es);
  }
  return OkStatus();
}

Status Team::AllGather(const void* send, void* recv, uint64_t count, DType dtype, OptDeadline deadline) {
  Impl& t = *impl_;
  Deadline dl = t.DeadlineOf(deadline);
  if (OnDevice(t, {send, recv}))
    return DeviceCollective(t, {Kind::kAllGather, send, recv, count, dtype, ReduceOp::kSum, 0}, dl);
  WEFT_ASSIGN_OR_RETURN(Call c, Prepare(t, Kind::kAllGather, count, dtype, {}, 0, false, {send, recv}, dl));
  if (TriesHeapPath(t, t.size() * count * c.es)) {
    WEFT_ASSIGN_OR_RETURN(bool done, HeapAllGather(t, c.desc, send, recv, c.es, dl));
    if (done) return OkStatus();
  }
  for (uint64_t s = 0; s < c.steps; ++s) {
    Step st = StepOf(c, s);
    const uint8_t* mine = At(send, st.first, c.es);
    WEFT_RETURN_IF_ERROR(t.Round(c.desc, dl, [&] {
      return SendToAll(t, [&](uint32_t) { return std::pair{mine, st.len * c.es}; });
    }));
    for (uint32_t m = 0; m < t.size(); ++m)
      CopyIn(At(recv, m * count + st.first, c.es), m == t.me ? mine : t.channel->Received(m), st.len * c.es);
  }
  return OkStatus();
}

Status Team::Reduce(const void* send, void* recv, uint64_t count, DType dtype, ReduceOp op, uint32_t root,
                    OptDeadline deadline) {
  Impl& t = *impl_;
  Deadline dl = t.DeadlineOf(deadline);
  if (OnDevice(t, {send, recv})) return DeviceCollective(t, {Kind::kReduce, send, recv, count, dtype, op, root}, dl);
  const void* root_recv = impl_->me == root ? recv : send;
  WEFT_ASSIGN_OR_RETURN(Call c, Prepare(t, Kind::kReduce, count, dtype, op, root, true, {send, root_recv}, dl));
  if (TriesHeapPath(t, count * c.es)) {
    WEFT_ASSIGN_OR_RETURN(bool done, HeapReduce(t, c.desc, send, recv, c.es, dl));
    if (done) return OkStatus();
  }
  for (uint64_t s = 0; s < c.steps; ++s) {
    Step st = StepOf(c, s);
    const uint8_t* mine = At(send, st.first, c.es);
    WEFT_RETURN_IF_ERROR(t.Round(c.desc, dl, [&] {
      return t.me == root ? OkStatus() : t.channel->Send(root, mine, st.len * c.es);
    }));
    if (t.me == root) ReduceN(dtype, op, At(recv, st.first, c.es), Inputs(t, mine), st.len);
  }
  return OkStatus();
}

Status Team::ReduceScatter(const void* send, void* recv, uint64_t count, DType dtype, ReduceOp op,
                           OptDeadline deadline) {
  Impl& t = *impl_;
  Deadline dl = t.DeadlineOf(deadline);
  if (OnDevice(t, {send, recv}))
    return DeviceCollective(t, {Kind::kReduceScatter, send, recv, count, dtype, op, 0}, dl);
  WEFT_ASSIGN_OR_RETURN(Call c, Prepare(t, Kind::kReduceScatter, count, dtype, op, 0, true, {send, recv}, dl));
  if (TriesHeapPath(t, t.size() * count * c.es)) {
    WEFT_ASSIGN_OR_RETURN(bool done, HeapReduceScatter(t, c.desc, send, recv, c.es, dl));
    if (done) return OkStatus();
  }
  for (uint64_t s = 0; s < c.steps; ++s) {
    Step st = StepOf(c, s);
    WEFT_RETURN_IF_ERROR(t.Round(c.desc, dl, [&] {
      return SendToAll(t, [&](uint32_t m) { return std::pair{At(send, m * count + st.first, c.es), st.len * c.es}; });
    }));
    auto in = Inputs(t, At(send, t.me * count + st.first, c.es));
    ReduceN(dtype, op, At(recv, st.first, c.es), in, st.len);
  }
  return OkStatus();
}

Status Team::AllToAll(const void* send, void* recv, uint64_t count, DType dtype, OptDeadline deadline) {
  Impl& t = *impl_;
  Deadline dl = t.DeadlineOf(deadline);
  if (OnDevice(t, {send, recv}))
    return DeviceCollective(t, {Kind::kAllToAll, send, recv, count, dtype, ReduceOp::kSum, 0}, dl);
  WEFT_ASSIGN_OR_RETURN(Call c, Prepare(t, Kind::kAllToAll, count, dtype, {}, 0, false, {send, recv}, dl));
  if (TriesHeapPath(t, t.size() * count * c.es)) {
    WEFT_ASSIGN_OR_RETURN(bool done, HeapAllToAll(t, c.desc, send, recv, c.es, dl));
    if (done) return OkStatus();
  }
  for (uint64_t s = 0; s < c.steps; ++s) {
    Step st = StepOf(c, s);
    WEFT_RETURN_IF_ERROR(t.Round(c.desc, dl, [&] {
      return SendToAll(t, [&](uint32_t m) { return std::pair{At(send, m * count + st.first, c.es), st.len * c.es}; });
    }));
    // Every block of this step was sent above, so recv may be send (in place).
    for (uint32_t m = 0; m < t.size(); ++m) {
      const void* from = m == t.me ? At(send, m * count + st.first, c.es) : t.channel->Received(m);
      CopyIn(At(recv, m * count + st.first, c.es), from, st.len * c.es);
    }
  }
  return OkStatus();
}

Status Team::Barrier(OptDeadline deadline) {
  OpDesc d{static_cast<uint8_t>(Kind::kBarrier), 0, 0, 0, 0, 0};
  return impl_->Round(d, impl_->DeadlineOf(deadline), [] { return OkStatus(); });
}

CollectivePlan Team::Plan(std::string_view collective, uint64_t bytes) const {
  const Impl& t = *impl_;
  CollectivePlan plan;
  uint64_t per_step = t.slot_bytes;
  bool two_phase = collective == "allreduce" && bytes > t.one_shot_max_bytes && t.size() > 1;
  if (two_phase) {
    plan.algorithm = "reduce-scatter+allgather";
    per_step = t.slot_bytes * t.size();
  } else {
    plan.algorithm = collective == "allreduce" ? "one-shot" : "direct";
  }
  plan.steps = std::max<uint64_t>(1, (bytes + per_step - 1) / per_step) * (two_phase ? 2 : 1);
  bool all_mapped = true;
  for (uint32_t m = 0; m < t.size(); ++m) {
    plan.paths.push_back(m == t.me ? "self" : t.channel->mapped(m) ? "mapped" : "copy engine");
    all_mapped = all_mapped && (m == t.me || t.channel->mapped(m));
  }
  if (all_mapped && TriesHeapPath(t, bytes))
    plan.heap_algorithm = collective == "allreduce" ? "heap: reduce own piece in place, gather (3 rounds)"
                                                    : "heap: read peers in place (2 rounds)";
  if (t.device && t.root) {
    plan.device_algorithm = fmt::format("one kernel of {} blocks, ", cuda::kDeviceBlocks);
    plan.device_algorithm += collective != "allreduce" ? "peers read in place (2 barriers)"
                             : bytes > t.one_shot_max_bytes
                                 ? "reduce-scatter+allgather with recv in the heap, else one-shot (3 or 2 barriers)"
                                 : "one-shot, or reduce-scatter+allgather in place (2 or 3 barriers)";
    if (t.device_async) plan.device_algorithm += "; asynchronous: returns once launched, DeviceSynchronize reports";
  }
  return plan;
}

TeamStats Team::stats() const { return impl_->stats; }

std::string CollectivePlan::ToString() const {
  std::string p;
  for (size_t m = 0; m < paths.size(); ++m) p += fmt::format("{}{}: {}", m ? ", " : "", m, paths[m]);
  return fmt::format("{} in {} round(s){}{}; peers: {}", algorithm, steps,
                     heap_algorithm.empty() ? "" : "; with heap buffers: " + heap_algorithm,
                     device_algorithm.empty() ? "" : "; with device heap buffers: " + device_algorithm, p);
}

}  // namespace weft::symm
