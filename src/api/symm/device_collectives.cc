#include "api/symm/device_collectives.h"

#include <functional>

#include <fmt/format.h>

#include "base/status.h"

namespace weft::symm {
namespace {

using Impl = Team::Impl;
using cuda::DeviceWork;
using Where = DeviceHeap::Where;

constexpr uint64_t kRefused = 1;  // the description of a rank that refuses its own call

uint64_t Mix(uint64_t h, uint64_t v) {
  for (int b = 0; b < 8; ++b) h = (h ^ ((v >> (8 * b)) & 0xff)) * 1099511628211ull;
  return h;
}

// The sizes a call's buffers span on this rank.
struct Spans {
  uint64_t send = 0;
  uint64_t recv = 0;
  bool recv_written = true;  // false where this rank's recv is not touched (gather/reduce off the root)
};

Spans SpansOf(const DeviceCall& c, uint32_t n, uint32_t me) {
  const uint64_t bytes = c.count * DTypeSize(c.dtype);
  switch (c.kind) {
    case Kind::kScatter: return {n * bytes, bytes};
    case Kind::kGather: return {bytes, n * bytes, me == c.root};
    case Kind::kAllGather: return {bytes, n * bytes};
    case Kind::kReduce: return {bytes, bytes, me == c.root};
    case Kind::kReduceScatter: return {n * bytes, bytes};
    case Kind::kAllToAll: return {n * bytes, n * bytes};
    default: return {bytes, bytes};  // broadcast (one buffer), allreduce
  }
}

bool Reduces(Kind k) { return k == Kind::kReduce || k == Kind::kReduceScatter || k == Kind::kAllReduce; }

DeviceWork WorkOf(Kind k) {
  switch (k) {
    case Kind::kBroadcast: return DeviceWork::kBroadcast;
    case Kind::kScatter: return DeviceWork::kScatter;
    case Kind::kGather: return DeviceWork::kGather;
    case Kind::kAllGather: return DeviceWork::kAllGather;
    case Kind::kReduce: return DeviceWork::kReduce;
    case Kind::kReduceScatter: return DeviceWork::kReduceScatter;
    case Kind::kAllToAll: return DeviceWork::kAllToAll;
    default: return DeviceWork::kAllReduceOneShot;
  }
}

Status CheckScalars(const Impl& t, const DeviceCall& c) {
  if (static_cast<uint8_t>(c.dtype) > static_cast<uint8_t>(DType::kU8))
    return Error(Code::kInvalidArgument, "unknown dtype {}", static_cast<int>(c.dtype));
  if (Reduces(c.kind) && static_cast<uint8_t>(c.op) > static_cast<uint8_t>(ReduceOp::kProd))
    return Error(Code::kInvalidArgument, "unknown reduce op {}", static_cast<int>(c.op));
  if (c.root >= t.size())
    return Error(Code::kInvalidArgument, "root {} is not a rank of this team of {}", c.root, t.size());
  if (c.count > (uint64_t{1} << 56) / DTypeSize(c.dtype) / t.size())
    return Error(Code::kInvalidArgument, "count {} is too large", c.count);
  return OkStatus();
}

// Where the buffer the other ranks read lies: in the heap, over `len` bytes.
Status CheckRead(const DeviceHeap& heap, const void* p, uint64_t len, std::string_view name) {
  if (heap.Contains(p, len)) return OkStatus();
  switch (heap.Locate(p)) {
    case Where::kHeap:
      return Error(Code::kOutOfRange, "{} runs past the device heap ({} bytes from offset {}, heap of {}): allocate "
                   "it with DeviceMalloc", name, len, heap.OffsetOf(p), heap.heap_bytes());
    case Where::kHost:
      return Error(Code::kInvalidArgument, "{} is host memory next to device buffers: pass device buffers only, or "
                   "host buffers only", name);
    default:
      return Error(Code::kInvalidArgument, "{} is GPU memory outside the team's device heap: the other ranks read it, "
                   "so it must lie in the heap (DeviceMalloc, DeviceLocal) at the same offset on every rank", name);
  }
}

// recv, written by this rank only: the heap, or any memory of the heap's GPU.
Status CheckWrite(const DeviceHeap& heap, const void* p, uint64_t len) {
  switch (heap.Locate(p)) {
    case Where::kHeap:
      if (heap.Contains(p, len)) return OkStatus();
      return Error(Code::kOutOfRange, "recv runs past the device heap ({} bytes from offset {}, heap of {})", len,
                   heap.OffsetOf(p), heap.heap_bytes());
    case Where::kThisGpu: return OkStatus();
    case Where::kHost:
      return Error(Code::kInvalidArgument, "recv is host memory next to device buffers: pass device buffers only, or "
                   "host buffers only");
    default:
      return Error(Code::kInvalidArgument, "recv is memory of another GPU than the device heap's (GPU {})", heap.gpu());
  }
}

// The launch of a call whose arguments are good, or why they are not.
Result<cuda::DeviceLaunch> Describe(const Impl& t, const DeviceCall& c) {
  WEFT_RETURN_IF_ERROR(CheckScalars(t, c));
  const DeviceHeap& heap = *t.device;
  const size_t es = DTypeSize(c.dtype);
  const uint64_t bytes = c.count * es;
  const Spans spans = SpansOf(c, t.size(), t.me);
  cuda::DeviceLaunch l;
  l.work = WorkOf(c.kind);
  l.dtype = static_cast<uint8_t>(c.dtype);
  l.op = Reduces(c.kind) ? static_cast<uint8_t>(c.op) : 0;
  l.root = c.root;
  l.count = c.count;
  auto* recv = static_cast<uint8_t*>(c.kind == Kind::kBroadcast ? const_cast<void*>(c.send) : c.recv);
  if (c.count > 0) {
    if (!c.send || (spans.recv_written && !recv))
      return Error(Code::kInvalidArgument, "{} with count {} got a null buffer", KindName(static_cast<uint8_t>(c.kind)),
                   c.count);
    l.send_in_recv = c.kind == Kind::kAllGather && c.send == recv + t.me * bytes;
    if (c.kind == Kind::kAllToAll && c.send == recv)
      return Error(Code::kInvalidArgument, "all-to-all in place on device buffers: pass separate send and recv");
    if (spans.recv_written) WEFT_RETURN_IF_ERROR(CheckWrite(heap, recv, spans.recv));
    if (l.send_in_recv) WEFT_RETURN_IF_ERROR(CheckRead(heap, recv, spans.recv, "recv (allgather in place)"));
    else WEFT_RETURN_IF_ERROR(CheckRead(heap, c.send, spans.send, "send"));
    l.send_offset = l.send_in_recv ? 0 : heap.OffsetOf(c.send);
    l.recv = spans.recv_written ? recv : nullptr;
    l.recv_offset = heap.Contains(recv, spans.recv) ? heap.OffsetOf(recv) : 0;
    if (c.kind == Kind::kAllReduce && (c.send == recv || (bytes > t.one_shot_max_bytes && heap.Contains(recv, bytes))))
      l.work = DeviceWork::kAllReduceTwoPhase;  // in place needs it (a rank must not overwrite what others read)
  }
  // Not part of the description: a recv that only this rank writes may be aligned otherwise than
  // the others' (their kernels split the work differently, harmlessly); where the peers read
  // recv (two-phase) it lies at the same heap offset everywhere, so every rank decides alike.
  l.vector = l.send_offset % 16 == 0 && reinterpret_cast<uintptr_t>(l.recv) % 16 == 0 && bytes % 16 == 0;
  // What every rank must agree on: the call, and the offsets of what the others read.
  const bool peers_read_recv = l.send_in_recv || l.work == DeviceWork::kAllReduceTwoPhase;
  uint64_t d = 1469598103934665603ull;
  for (uint64_t v : {uint64_t(l.work), uint64_t(l.dtype), uint64_t(l.op), uint64_t(l.root), l.count,
                     l.send_offset, peers_read_recv ? l.recv_offset : 0, uint64_t(l.send_in_recv)})
    d = Mix(d, v);
  l.desc = d == kRefused ? d + 2 : d;
  return l;
}

std::function<bool()> PeersAlive(const Impl& t) {
  return [&t] {
    for (uint32_t r = 0; r < t.size(); ++r)
      if (!t.heaps->Alive(t.members[r])) return false;
    return true;
  };
}

// Whether a launch's outcome leaves the team usable: a mismatched call ends in step on every rank.
void BreakUnlessMismatch(Impl& t, const Status& s) {
  if (!s.ok() && s.code() != Code::kMismatch)
    t.broken = Status(s.code(), "this team is unusable after an earlier failure (" + s.message() + "); make a new team");
}

// Waits for the team's oldest launch in flight and keeps its failure for DeviceSynchronize.
void WaitOldest(Impl& t, Deadline deadline) {
  const Impl::InFlight f = t.in_flight.front();
  t.in_flight.pop_front();
  const Status s = t.device->Wait(f.slot, deadline, PeersAlive(t));
  BreakUnlessMismatch(t, s);
  if (!s.ok() && !(f.refused && s.code() == Code::kMismatch) && t.async_failure.ok()) t.async_failure = s;
}

// The asynchronous form: the finished launches reaped, room made, this one launched.
Status LaunchAsync(Impl& t, const cuda::DeviceLaunch& l, const Status& described, Deadline deadline) {
  while (!t.in_flight.empty() && (t.in_flight.size() >= kMaxInFlight || t.device->Finished(t.in_flight.front().slot)))
    WaitOldest(t, deadline);
  if (!t.broken.ok()) return t.broken;
  auto slot = t.device->Launch(l, t.members, t.me, t.device_sync, t.stream, deadline);
  if (!slot.ok()) {
    BreakUnlessMismatch(t, slot.status());
    return slot.status();
  }
  t.in_flight.push_back({*slot, !described.ok()});
  if (!described.ok()) return described;
  ++t.stats.device_path;
  return OkStatus();
}

}  // namespace

bool OnDevice(const Impl& t, std::initializer_list<const void*> buffers) {
  if (!t.device) return false;
  for (const void* p : buffers)
    if (p && t.device->Locate(p) != Where::kHost) return true;
  return false;
}

Status DeviceCollective(Impl& t, const DeviceCall& call, Deadline deadline) {
  ++t.stats.collectives;
  if (!t.broken.ok()) return t.broken;
  auto launch = Describe(t, call);
  cuda::DeviceLaunch l;
  if (launch.ok()) {
    l = *launch;
  } else {
    l.work = DeviceWork::kNone;
    l.desc = kRefused;
  }
  if (t.device_async) return LaunchAsync(t, l, launch.status(), deadline);
  Status s = t.device->Run(l, t.members, t.me, t.device_sync, t.stream, deadline, PeersAlive(t));
  BreakUnlessMismatch(t, s);
  if (!launch.ok()) return s.ok() || s.code() == Code::kMismatch ? launch.status() : s;
  if (s.ok()) ++t.stats.device_path;
  return s;
}

Status DeviceSynchronize(Impl& t, Deadline deadline) {
  while (!t.in_flight.empty()) WaitOldest(t, deadline);
  Status first = t.async_failure;
  t.async_failure = OkStatus();
  return first;
}

}  // namespace weft::symm
