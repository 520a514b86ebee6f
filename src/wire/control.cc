#include "wire/control.h"

#include <algorithm>

#include "wire/codec.h"

namespace weft::wire {

namespace {

bool KnownType(uint16_t t) {
  return t >= static_cast<uint16_t>(MessageType::kJoin) && t <= static_cast<uint16_t>(MessageType::kStatusReply);
}

void PutStatus(Writer& w, const WireStatus& s) {
  w.I32(static_cast<int32_t>(s.code));
  w.String(s.message);
}

Status GetStatus(Reader& r, WireStatus& s) {
  int32_t code = 0;
  WEFT_RETURN_IF_ERROR(r.I32(code));
  // Codes are stable and only ever appended; one this build does not know is a newer peer
  // speaking the same version, which cannot happen, so it is malformed.
  if (code < 0 || code > static_cast<int32_t>(kLastCode)) {
    return Error(Code::kProtocol, "unknown status code {}", code);
  }
  s.code = static_cast<Code>(code);
  return r.String(s.message, kMaxStatusMessage);
}

// Runs the field readers and then insists that nothing is left over.
template <typename T, typename Fn>
Result<T> DecodeWith(std::span<const uint8_t> payload, Fn&& read) {
  Reader r(payload);
  T m;
  Status s = read(r, m);
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return s.Annotate(MessageTypeName(T::kType));
  return m;
}

}  // namespace

std::string_view MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kJoin: return "Join";
    case MessageType::kJoinAck: return "JoinAck";
    case MessageType::kPeerJoined: return "PeerJoined";
    case MessageType::kPeerGone: return "PeerGone";
    case MessageType::kHeartbeat: return "Heartbeat";
    case MessageType::kLeave: return "Leave";
    case MessageType::kBarrierEnter: return "BarrierEnter";
    case MessageType::kBarrierDone: return "BarrierDone";
    case MessageType::kAllgatherEnter: return "AllgatherEnter";
    case MessageType::kAllgatherDone: return "AllgatherDone";
    case MessageType::kCallRequest: return "CallRequest";
    case MessageType::kCallReply: return "CallReply";
    case MessageType::kHeartbeatAck: return "HeartbeatAck";
    case MessageType::kStatusRequest: return "StatusRequest";
    case MessageType::kStatusReply: return "StatusReply";
  }
  return "Unknown";
}

std::vector<uint8_t> EncodeFrameHeader(const FrameHeader& header) {
  Writer w;
  w.U32(kFrameMagic);
  w.U16(header.version);
  w.U16(static_cast<uint16_t>(header.type));
  w.U32(header.payload_size);
  return w.Take();
}

Result<FrameHeader> DecodeFrameHeader(std::span<const uint8_t> bytes) {
  if (bytes.size() != kFrameHeaderSize) {
    return Error(Code::kProtocol, "frame header is {} bytes, expected {}", bytes.size(), kFrameHeaderSize);
  }
  Reader r(bytes);
  uint32_t magic = 0;
  uint16_t version = 0, type = 0;
  FrameHeader h;
  WEFT_RETURN_IF_ERROR(r.U32(magic));
  WEFT_RETURN_IF_ERROR(r.U16(version));
  WEFT_RETURN_IF_ERROR(r.U16(type));
  WEFT_RETURN_IF_ERROR(r.U32(h.payload_size));
  if (magic != kFrameMagic) {
    return Error(Code::kProtocol, "bad frame magic {:#010x} (expected {:#010x}): not a weft control stream", magic,
                 kFrameMagic);
  }
  if (version != kControlVersion) {
    return Error(Code::kProtocol, "control protocol version {} is not supported (this build speaks {})", version,
                 kControlVersion);
  }
  if (!KnownType(type)) return Error(Code::kProtocol, "unknown control message type {}", type);
  if (h.payload_size > kMaxFramePayload) {
    return Error(Code::kProtocol, "frame payload of {} bytes exceeds the limit of {}", h.payload_size,
                 kMaxFramePayload);
  }
  h.version = version;
  h.type = static_cast<MessageType>(type);
  return h;
}

Result<std::vector<uint8_t>> MakeFrame(MessageType type, std::span<const uint8_t> payload) {
  if (payload.size() > kMaxFramePayload) {
    return Error(Code::kInvalidArgument, "{} payload of {} bytes exceeds the frame limit of {}", MessageTypeName(type),
                 payload.size(), kMaxFramePayload);
  }
  std::vector<uint8_t> frame =
      EncodeFrameHeader({kControlVersion, type, static_cast<uint32_t>(payload.size())});
  frame.insert(frame.end(), payload.begin(), payload.end());
  return frame;
}

// ---- Transport blobs and descriptor counts (inside Join and PeerJoined) ----
bool ValidTransportName(std::string_view name) {
  if (name.empty() || name.size() > kMaxTransportNameLength) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

Status CheckTransportBlobs(const TransportBlobs& blobs) {
  if (blobs.size() > kMaxTransportBlobs)
    return Error(Code::kProtocol, "{} transport blobs, the limit is {}", blobs.size(), kMaxTransportBlobs);
  for (const auto& [name, blob] : blobs) {
    if (!ValidTransportName(name))
      return Error(Code::kProtocol, "transport name '{}' is not 1..{} of [a-z0-9_-]", name.substr(0, 64),
                   kMaxTransportNameLength);
    if (blob.empty() || blob.size() > kMaxTransportBlobBytes)
      return Error(Code::kProtocol, "the blob of transport {} has {} bytes (1..{} expected)", name, blob.size(),
                   kMaxTransportBlobBytes);
  }
  return OkStatus();
}

namespace {
void PutTransports(Writer& w, uint32_t fd_count, const TransportBlobs& blobs) {
  w.U32(fd_count);
  w.U32(static_cast<uint32_t>(blobs.size()));
  for (const auto& [name, blob] : blobs) {
    w.String(name);
    w.String(blob);
  }
}

// Names come strictly ascending (as a std::map writes them), so every map has one encoding and
// no name is given twice.
Status GetTransports(Reader& r, uint32_t& fd_count, TransportBlobs& blobs) {
  WEFT_RETURN_IF_ERROR(r.U32(fd_count));
  if (fd_count > kMaxFdsPerFrame)
    return Error(Code::kProtocol, "{} descriptors announced, the limit is {}", fd_count, kMaxFdsPerFrame);
  uint32_t n = 0;
  WEFT_RETURN_IF_ERROR(r.Count(n, /*two lengths*/ 8, kMaxTransportBlobs).Annotate("transport blobs"));
  std::string name, blob;
  for (uint32_t i = 0; i < n; ++i) {
    WEFT_RETURN_IF_ERROR(r.String(name, kMaxTransportNameLength));
    WEFT_RETURN_IF_ERROR(r.String(blob, kMaxTransportBlobBytes));
    if (!blobs.empty() && name <= blobs.rbegin()->first)
      return Error(Code::kProtocol, "transport '{}' after '{}': names must be strictly ascending", name,
                   blobs.rbegin()->first);
    blobs.emplace_hint(blobs.end(), std::move(name), std::move(blob));
  }
  return CheckTransportBlobs(blobs);
}
}  // namespace

// ---- Join ----
std::vector<uint8_t> Encode(const Join& m) {
  Writer w;
  w.String(m.pool_name);
  w.U64(m.rank_size);
  w.String(m.peer_name);
  w.I32(m.pid);
  w.U64(m.segment_size);
  w.U32(m.permissions);
  w.U64(m.device_size);
  PutTransports(w, m.fd_count, m.transports);
  return w.Take();
}
template <>
Result<Join> Decode<Join>(std::span<const uint8_t> payload) {
  return DecodeWith<Join>(payload, [](Reader& r, Join& m) {
    WEFT_RETURN_IF_ERROR(r.String(m.pool_name, kMaxNameLength));
    WEFT_RETURN_IF_ERROR(r.U64(m.rank_size));
    WEFT_RETURN_IF_ERROR(r.String(m.peer_name, kMaxNameLength));
    WEFT_RETURN_IF_ERROR(r.I32(m.pid));
    WEFT_RETURN_IF_ERROR(r.U64(m.segment_size));
    WEFT_RETURN_IF_ERROR(r.U32(m.permissions));
    WEFT_RETURN_IF_ERROR(r.U64(m.device_size));
    return GetTransports(r, m.fd_count, m.transports);
  });
}

// ---- JoinAck ----
std::vector<uint8_t> Encode(const JoinAck& m) {
  Writer w;
  PutStatus(w, m.status);
  w.U32(m.rank);
  w.U32(m.max_ranks);
  w.U64(m.rank_size);
  w.String(m.pool_name);
  w.U32(m.peer_timeout_ms);
  w.U64(m.barrier_epoch);
  w.U64(m.allgather_epoch);
  return w.Take();
}
template <>
Result<JoinAck> Decode<JoinAck>(std::span<const uint8_t> payload) {
  return DecodeWith<JoinAck>(payload, [](Reader& r, JoinAck& m) {
    WEFT_RETURN_IF_ERROR(GetStatus(r, m.status));
    WEFT_RETURN_IF_ERROR(r.U32(m.rank));
    WEFT_RETURN_IF_ERROR(r.U32(m.max_ranks));
    WEFT_RETURN_IF_ERROR(r.U64(m.rank_size));
    WEFT_RETURN_IF_ERROR(r.String(m.pool_name, kMaxNameLength));
    WEFT_RETURN_IF_ERROR(r.U32(m.peer_timeout_ms));
    WEFT_RETURN_IF_ERROR(r.U64(m.barrier_epoch));
    return r.U64(m.allgather_epoch);
  });
}

// ---- PeerJoined ----
std::vector<uint8_t> Encode(const PeerJoined& m) {
  Writer w;
  w.U32(m.rank);
  w.String(m.peer_name);
  w.I32(m.pid);
  w.U64(m.size);
  w.U32(m.permissions);
  w.U64(m.device_size);
  PutTransports(w, m.fd_count, m.transports);
  return w.Take();
}
template <>
Result<PeerJoined> Decode<PeerJoined>(std::span<const uint8_t> payload) {
  return DecodeWith<PeerJoined>(payload, [](Reader& r, PeerJoined& m) {
    WEFT_RETURN_IF_ERROR(r.U32(m.rank));
    WEFT_RETURN_IF_ERROR(r.String(m.peer_name, kMaxNameLength));
    WEFT_RETURN_IF_ERROR(r.I32(m.pid));
    WEFT_RETURN_IF_ERROR(r.U64(m.size));
    WEFT_RETURN_IF_ERROR(r.U32(m.permissions));
    WEFT_RETURN_IF_ERROR(r.U64(m.device_size));
    return GetTransports(r, m.fd_count, m.transports);
  });
}

// ---- PeerGone ----
std::vector<uint8_t> Encode(const PeerGone& m) {
  Writer w;
  w.U32(m.rank);
  w.Bool(m.clean);
  return w.Take();
}
template <>
Result<PeerGone> Decode<PeerGone>(std::span<const uint8_t> payload) {
  return DecodeWith<PeerGone>(payload, [](Reader& r, PeerGone& m) {
    WEFT_RETURN_IF_ERROR(r.U32(m.rank));
    return r.Bool(m.clean);
  });
}

// ---- Heartbeat, HeartbeatAck, Leave: no fields ----
std::vector<uint8_t> Encode(const Heartbeat&) { return {}; }
template <>
Result<Heartbeat> Decode<Heartbeat>(std::span<const uint8_t> payload) {
  return DecodeWith<Heartbeat>(payload, [](Reader&, Heartbeat&) { return OkStatus(); });
}
std::vector<uint8_t> Encode(const HeartbeatAck&) { return {}; }
template <>
Result<HeartbeatAck> Decode<HeartbeatAck>(std::span<const uint8_t> payload) {
  return DecodeWith<HeartbeatAck>(payload, [](Reader&, HeartbeatAck&) { return OkStatus(); });
}
std::vector<uint8_t> Encode(const Leave&) { return {}; }
template <>
Result<Leave> Decode<Leave>(std::span<const uint8_t> payload) {
  return DecodeWith<Leave>(payload, [](Reader&, Leave&) { return OkStatus(); });
}

// ---- Barrier ----
std::vector<uint8_t> Encode(const BarrierEnter& m) {
  Writer w;
  w.U64(m.epoch);
  return w.Take();
}
template <>
Result<BarrierEnter> Decode<BarrierEnter>(std::span<const uint8_t> payload) {
  return DecodeWith<BarrierEnter>(payload, [](Reader& r, BarrierEnter& m) { return r.U64(m.epoch); });
}
std::vector<uint8_t> Encode(const BarrierDone& m) {
  Writer w;
  w.U64(m.epoch);
  PutStatus(w, m.status);
  return w.Take();
}
template <>
Result<BarrierDone> Decode<BarrierDone>(std::span<const uint8_t> payload) {
  return DecodeWith<BarrierDone>(payload, [](Reader& r, BarrierDone& m) {
    WEFT_RETURN_IF_ERROR(r.U64(m.epoch));
    return GetStatus(r, m.status);
  });
}

// ---- Allgather ----
std::vector<uint8_t> Encode(const AllgatherEnter& m) {
  Writer w;
  w.U64(m.epoch);
  w.Bytes(m.data);
  return w.Take();
}
template <>
Result<AllgatherEnter> Decode<AllgatherEnter>(std::span<const uint8_t> payload) {
  return DecodeWith<AllgatherEnter>(payload, [](Reader& r, AllgatherEnter& m) {
    WEFT_RETURN_IF_ERROR(r.U64(m.epoch));
    return r.Bytes(m.data, kMaxFramePayload);
  });
}
std::vector<uint8_t> Encode(const AllgatherDone& m) {
  Writer w;
  w.U64(m.epoch);
  PutStatus(w, m.status);
  w.U32(static_cast<uint32_t>(m.entries.size()));
  for (const AllgatherEntry& e : m.entries) {
    w.U32(e.rank);
    w.Bytes(e.data);
  }
  return w.Take();
}
template <>
Result<AllgatherDone> Decode<AllgatherDone>(std::span<const uint8_t> payload) {
  return DecodeWith<AllgatherDone>(payload, [](Reader& r, AllgatherDone& m) {
    WEFT_RETURN_IF_ERROR(r.U64(m.epoch));
    WEFT_RETURN_IF_ERROR(GetStatus(r, m.status));
    uint32_t n = 0;
    WEFT_RETURN_IF_ERROR(r.Count(n, /*rank + length*/ 8, kMaxAllgatherEntries));
    m.entries.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
      AllgatherEntry e;
      WEFT_RETURN_IF_ERROR(r.U32(e.rank));
      if (!m.entries.empty() && e.rank <= m.entries.back().rank) {
        return Error(Code::kProtocol, "allgather entries not strictly ascending by rank ({} after {})", e.rank,
                     m.entries.back().rank);
      }
      WEFT_RETURN_IF_ERROR(r.Bytes(e.data, kMaxFramePayload));
      m.entries.push_back(std::move(e));
    }
    return OkStatus();
  });
}

// ---- Call ----
std::vector<uint8_t> Encode(const CallRequest& m) {
  Writer w;
  w.U64(m.request_id);
  w.Bytes(m.payload);
  return w.Take();
}
template <>
Result<CallRequest> Decode<CallRequest>(std::span<const uint8_t> payload) {
  return DecodeWith<CallRequest>(payload, [](Reader& r, CallRequest& m) {
    WEFT_RETURN_IF_ERROR(r.U64(m.request_id));
    return r.Bytes(m.payload, kMaxFramePayload);
  });
}
std::vector<uint8_t> Encode(const CallReply& m) {
  Writer w;
  w.U64(m.request_id);
  PutStatus(w, m.status);
  w.Bytes(m.payload);
  return w.Take();
}
template <>
Result<CallReply> Decode<CallReply>(std::span<const uint8_t> payload) {
  return DecodeWith<CallReply>(payload, [](Reader& r, CallReply& m) {
    WEFT_RETURN_IF_ERROR(r.U64(m.request_id));
    WEFT_RETURN_IF_ERROR(GetStatus(r, m.status));
    return r.Bytes(m.payload, kMaxFramePayload);
  });
}

// ---- Status ----
std::string_view PeerStateName(PeerState state) {
  switch (state) {
    case PeerState::kUp: return "up";
    case PeerState::kDown: return "down";
    case PeerState::kLeft: return "left";
  }
  return "unknown";
}

std::vector<uint8_t> Encode(const StatusRequest& m) {
  Writer w;
  w.U32(m.first_rank);
  w.U32(m.max_peers);
  return w.Take();
}
template <>
Result<StatusRequest> Decode<StatusRequest>(std::span<const uint8_t> payload) {
  return DecodeWith<StatusRequest>(payload, [](Reader& r, StatusRequest& m) {
    WEFT_RETURN_IF_ERROR(r.U32(m.first_rank));
    WEFT_RETURN_IF_ERROR(r.U32(m.max_peers));
    if (m.max_peers == 0 || m.max_peers > kMaxStatusPeersPerReply)
      return Error(Code::kProtocol, "max_peers {} is not 1..{}", m.max_peers, kMaxStatusPeersPerReply);
    return OkStatus();
  });
}

namespace {

void PutUsage(Writer& w, const StatusUsage& u) {
  w.U64(u.capacity);
  w.U64(u.used);
  w.U64(u.allocations);
}

Status GetUsage(Reader& r, StatusUsage& u) {
  WEFT_RETURN_IF_ERROR(r.U64(u.capacity));
  WEFT_RETURN_IF_ERROR(r.U64(u.used));
  return r.U64(u.allocations);
}

// A code that travels in a status row: any code weft knows (as GetStatus checks it).
Status GetCode(Reader& r, Code& out) {
  int32_t code = 0;
  WEFT_RETURN_IF_ERROR(r.I32(code));
  if (code < 0 || code > static_cast<int32_t>(kLastCode)) return Error(Code::kProtocol, "unknown status code {}", code);
  out = static_cast<Code>(code);
  return OkStatus();
}

void PutPeer(Writer& w, const StatusPeer& p) {
  w.U32(p.rank);
  w.String(p.peer_name);
  w.U8(static_cast<uint8_t>(p.state));
  w.I32(p.pid);
  w.String(p.host);
  w.U64(p.last_heard_ms);
  w.U64(p.in_pool_ms);
  w.U64(p.segment_size);
  w.U64(p.device_size);
  PutUsage(w, p.host_usage);
  PutUsage(w, p.device_usage);
  w.U32(static_cast<uint32_t>(p.transports.size()));
  for (const std::string& t : p.transports) w.String(t);
  w.String(p.reason);
}

// Transport names as the blob maps allow them, strictly ascending (one encoding per row).
Status GetTransportNames(Reader& r, std::vector<std::string>& names) {
  uint32_t n = 0;
  WEFT_RETURN_IF_ERROR(r.Count(n, /*length*/ 4, kMaxTransportBlobs).Annotate("transport names"));
  names.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    std::string name;
    WEFT_RETURN_IF_ERROR(r.String(name, kMaxTransportNameLength));
    if (!ValidTransportName(name))
      return Error(Code::kProtocol, "transport name '{}' is not 1..{} of [a-z0-9_-]", name, kMaxTransportNameLength);
    if (!names.empty() && name <= names.back())
      return Error(Code::kProtocol, "transport '{}' after '{}': names must be strictly ascending", name, names.back());
    names.push_back(std::move(name));
  }
  return OkStatus();
}

Status GetPeer(Reader& r, StatusPeer& p) {
  WEFT_RETURN_IF_ERROR(r.U32(p.rank));
  WEFT_RETURN_IF_ERROR(r.String(p.peer_name, kMaxNameLength));
  uint8_t state = 0;
  WEFT_RETURN_IF_ERROR(r.U8(state));
  if (state < static_cast<uint8_t>(PeerState::kUp) || state > static_cast<uint8_t>(PeerState::kLeft))
    return Error(Code::kProtocol, "unknown peer state {}", state);
  p.state = static_cast<PeerState>(state);
  WEFT_RETURN_IF_ERROR(r.I32(p.pid));
  WEFT_RETURN_IF_ERROR(r.String(p.host, kMaxStatusHost));
  WEFT_RETURN_IF_ERROR(r.U64(p.last_heard_ms));
  WEFT_RETURN_IF_ERROR(r.U64(p.in_pool_ms));
  WEFT_RETURN_IF_ERROR(r.U64(p.segment_size));
  WEFT_RETURN_IF_ERROR(r.U64(p.device_size));
  WEFT_RETURN_IF_ERROR(GetUsage(r, p.host_usage));
  WEFT_RETURN_IF_ERROR(GetUsage(r, p.device_usage));
  WEFT_RETURN_IF_ERROR(GetTransportNames(r, p.transports));
  return r.String(p.reason, kMaxStatusText);
}

}  // namespace

std::vector<uint8_t> Encode(const StatusReply& m) {
  Writer w;
  PutStatus(w, m.status);
  w.String(m.pool_name);
  w.U64(m.rank_size);
  w.U32(m.max_ranks);
  w.U32(m.peer_timeout_ms);
  w.String(m.coordinator_host);
  w.U64(m.uptime_ms);
  w.U32(m.peers_up);
  w.U32(m.peers_down);
  w.U32(m.peers_left);
  w.U64(m.joins_total);
  w.U64(m.join_refusals_total);
  w.U64(m.peers_down_total);
  w.U64(m.peers_left_total);
  w.U64(m.heartbeats_total);
  w.U32(m.connections);
  PutUsage(w, m.host_usage);
  PutUsage(w, m.device_usage);
  w.U32(static_cast<uint32_t>(m.peers.size()));
  for (const StatusPeer& p : m.peers) PutPeer(w, p);
  w.Bool(m.more);
  w.U32(m.next_rank);
  w.U32(static_cast<uint32_t>(m.events.size()));
  for (const StatusEvent& e : m.events) {
    w.U64(e.age_ms);
    w.U64(e.unix_ms);
    w.I32(static_cast<int32_t>(e.code));
    w.String(e.text);
  }
  return w.Take();
}

namespace {

// The smallest a row can be on the wire: what Count() checks a claimed count against.
constexpr size_t kMinStatusPeerBytes = 4 + 4 + 1 + 4 + 4 + 8 * 4 + 24 * 2 + 4 + 4;
constexpr size_t kMinStatusEventBytes = 8 + 8 + 4 + 4;

Status GetPeers(Reader& r, std::vector<StatusPeer>& peers) {
  uint32_t n = 0;
  WEFT_RETURN_IF_ERROR(r.Count(n, kMinStatusPeerBytes, kMaxStatusPeersPerReply).Annotate("status rows"));
  peers.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    StatusPeer p;
    WEFT_RETURN_IF_ERROR(GetPeer(r, p));
    if (!peers.empty() && p.rank <= peers.back().rank)
      return Error(Code::kProtocol, "status rows not strictly ascending by rank ({} after {})", p.rank,
                   peers.back().rank);
    peers.push_back(std::move(p));
  }
  return OkStatus();
}

Status GetEvents(Reader& r, std::vector<StatusEvent>& events) {
  uint32_t n = 0;
  WEFT_RETURN_IF_ERROR(r.Count(n, kMinStatusEventBytes, kMaxStatusEvents).Annotate("status events"));
  events.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    StatusEvent e;
    WEFT_RETURN_IF_ERROR(r.U64(e.age_ms));
    WEFT_RETURN_IF_ERROR(r.U64(e.unix_ms));
    WEFT_RETURN_IF_ERROR(GetCode(r, e.code));
    WEFT_RETURN_IF_ERROR(r.String(e.text, kMaxStatusText));
    events.push_back(std::move(e));
  }
  return OkStatus();
}

}  // namespace

template <>
Result<StatusReply> Decode<StatusReply>(std::span<const uint8_t> payload) {
  return DecodeWith<StatusReply>(payload, [](Reader& r, StatusReply& m) {
    WEFT_RETURN_IF_ERROR(GetStatus(r, m.status));
    WEFT_RETURN_IF_ERROR(r.String(m.pool_name, kMaxNameLength));
    WEFT_RETURN_IF_ERROR(r.U64(m.rank_size));
    WEFT_RETURN_IF_ERROR(r.U32(m.max_ranks));
    WEFT_RETURN_IF_ERROR(r.U32(m.peer_timeout_ms));
    WEFT_RETURN_IF_ERROR(r.String(m.coordinator_host, kMaxStatusHost));
    WEFT_RETURN_IF_ERROR(r.U64(m.uptime_ms));
    WEFT_RETURN_IF_ERROR(r.U32(m.peers_up));
    WEFT_RETURN_IF_ERROR(r.U32(m.peers_down));
    WEFT_RETURN_IF_ERROR(r.U32(m.peers_left));
    WEFT_RETURN_IF_ERROR(r.U64(m.joins_total));
    WEFT_RETURN_IF_ERROR(r.U64(m.join_refusals_total));
    WEFT_RETURN_IF_ERROR(r.U64(m.peers_down_total));
    WEFT_RETURN_IF_ERROR(r.U64(m.peers_left_total));
    WEFT_RETURN_IF_ERROR(r.U64(m.heartbeats_total));
    WEFT_RETURN_IF_ERROR(r.U32(m.connections));
    WEFT_RETURN_IF_ERROR(GetUsage(r, m.host_usage));
    WEFT_RETURN_IF_ERROR(GetUsage(r, m.device_usage));
    WEFT_RETURN_IF_ERROR(GetPeers(r, m.peers));
    WEFT_RETURN_IF_ERROR(r.Bool(m.more));
    WEFT_RETURN_IF_ERROR(r.U32(m.next_rank));
    return GetEvents(r, m.events);
  });
}

}  // namespace weft::wire
