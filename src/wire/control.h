// Control-plane messages between a peer and the coordinator of its pool.
//
// A frame is a 12-byte header followed by the payload, all little-endian:
//   magic u32 ("WEFT")  version u16  type u16  payload_size u32
// A receiver rejects another magic, an unknown version or type, or a payload over
// kMaxFramePayload before it buffers the payload. File descriptors do not travel in the bytes:
// they ride as SCM_RIGHTS on the frame's first bytes (see net/unix_socket.h) and a message says
// with fd_count how many must be there.
//
// Each message is a struct with Encode() and Decode<T>(); every decoder is bounds-checked,
// rejects trailing bytes and has a fuzz target under fuzz/.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/status.h"

namespace weft::wire {

inline constexpr uint32_t kFrameMagic = 0x54464557;  // the bytes "WEFT"
// 2: Join and PeerJoined carry a device slice; 3: they carry opaque per-transport blobs instead
// of transport fields; 4: the coordinator answers every Heartbeat with a HeartbeatAck; 5: a
// connection may ask for the pool's status (StatusRequest/StatusReply) instead of joining.
inline constexpr uint16_t kControlVersion = 5;
inline constexpr size_t kFrameHeaderSize = 12;
inline constexpr uint32_t kMaxFramePayload = 16u << 20;
inline constexpr size_t kMaxNameLength = 1024;          // pool and peer names
inline constexpr size_t kMaxStatusMessage = 64u << 10;  // error text in replies
inline constexpr uint32_t kMaxAllgatherEntries = 1u << 16;
inline constexpr size_t kMaxFdsPerFrame = 8;

enum class MessageType : uint16_t {
  kJoin = 1,
  kJoinAck = 2,
  kPeerJoined = 3,
  kPeerGone = 4,
  kHeartbeat = 5,
  kLeave = 6,
  kBarrierEnter = 7,
  kBarrierDone = 8,
  kAllgatherEnter = 9,
  kAllgatherDone = 10,
  kCallRequest = 11,
  kCallReply = 12,
  kHeartbeatAck = 13,
  kStatusRequest = 14,
  kStatusReply = 15,
};
std::string_view MessageTypeName(MessageType type);

struct FrameHeader {
  uint16_t version = kControlVersion;
  MessageType type = MessageType::kHeartbeat;
  uint32_t payload_size = 0;
  bool operator==(const FrameHeader&) const = default;
};
std::vector<uint8_t> EncodeFrameHeader(const FrameHeader& header);
// Exactly kFrameHeaderSize bytes.
Result<FrameHeader> DecodeFrameHeader(std::span<const uint8_t> bytes);

// A Status as it travels: any code weft knows, and its message.
struct WireStatus {
  Code code = Code::kOk;
  std::string message;
  static WireStatus From(const Status& s) { return {s.code(), s.ok() ? std::string() : s.message()}; }
  Status ToStatus() const { return code == Code::kOk ? OkStatus() : Status(code, message); }
  bool operator==(const WireStatus&) const = default;
};

// What a peer advertises per transport: {transport name -> blob}. The control plane carries
// the blobs without reading them; only the pool's transports do (api/bm/slice_blobs.h). Names
// are 1..kMaxTransportNameLength of [a-z0-9_-], blobs 1..kMaxTransportBlobBytes, at most
// kMaxTransportBlobs entries: the decoders refuse anything else with PROTOCOL.
using TransportBlobs = std::map<std::string, std::string>;
inline constexpr size_t kMaxTransportBlobs = 32;
inline constexpr size_t kMaxTransportNameLength = 32;
inline constexpr size_t kMaxTransportBlobBytes = 4096;
bool ValidTransportName(std::string_view name);
// PROTOCOL naming the first entry that breaks the limits above.
Status CheckTransportBlobs(const TransportBlobs& blobs);

// peer -> coordinator, first frame of a connection; fd_count descriptors ride with it, in the
// order its blobs refer to them.
struct Join {
  static constexpr MessageType kType = MessageType::kJoin;
  std::string pool_name;
  uint64_t rank_size = 0;
  std::string peer_name;
  int32_t pid = 0;
  uint64_t segment_size = 0;
  uint32_t permissions = 0;
  uint64_t device_size = 0;  // bytes of the peer's device slice, 0 for none (checked against a rank's share)
  uint32_t fd_count = 0;     // at most kMaxFdsPerFrame
  TransportBlobs transports;
  bool operator==(const Join&) const = default;
};

// coordinator -> peer: the rank, or why the join was refused (the connection then closes).
struct JoinAck {
  static constexpr MessageType kType = MessageType::kJoinAck;
  WireStatus status;
  uint32_t rank = 0;
  uint32_t max_ranks = 0;
  uint64_t rank_size = 0;
  std::string pool_name;
  uint32_t peer_timeout_ms = 0;
  uint64_t barrier_epoch = 0;    // the open barrier the newcomer takes part in first
  uint64_t allgather_epoch = 0;  // likewise for allgathers
  bool operator==(const JoinAck&) const = default;
};

// coordinator -> peer: another peer's segment, with the blobs it joined with and fd_count
// descriptors (its own, in its order; none when they could not be passed).
struct PeerJoined {
  static constexpr MessageType kType = MessageType::kPeerJoined;
  uint32_t rank = 0;
  std::string peer_name;
  int32_t pid = 0;
  uint64_t size = 0;
  uint32_t permissions = 0;
  uint64_t device_size = 0;
  uint32_t fd_count = 0;
  TransportBlobs transports;
  bool operator==(const PeerJoined&) const = default;
};

// coordinator -> peer: a peer left (clean) or was declared down.
struct PeerGone {
  static constexpr MessageType kType = MessageType::kPeerGone;
  uint32_t rank = 0;
  bool clean = false;
  bool operator==(const PeerGone&) const = default;
};

// peer -> coordinator, every heartbeat interval; any frame counts as a sign of life.
struct Heartbeat {
  static constexpr MessageType kType = MessageType::kHeartbeat;
  bool operator==(const Heartbeat&) const = default;
};

// coordinator -> peer: the answer to each Heartbeat. A peer whose heartbeats stay unanswered
// for the pool's peer timeout treats the coordinator as unreachable (a frozen or overloaded
// coordinator keeps its sockets open, so nothing else would tell).
struct HeartbeatAck {
  static constexpr MessageType kType = MessageType::kHeartbeatAck;
  bool operator==(const HeartbeatAck&) const = default;
};

// peer -> coordinator: leaving cleanly; the coordinator then closes the connection.
struct Leave {
  static constexpr MessageType kType = MessageType::kLeave;
  bool operator==(const Leave&) const = default;
};

struct BarrierEnter {
  static constexpr MessageType kType = MessageType::kBarrierEnter;
  uint64_t epoch = 0;
  bool operator==(const BarrierEnter&) const = default;
};

struct BarrierDone {
  static constexpr MessageType kType = MessageType::kBarrierDone;
  uint64_t epoch = 0;
  WireStatus status;
  bool operator==(const BarrierDone&) const = default;
};

struct AllgatherEnter {
  static constexpr MessageType kType = MessageType::kAllgatherEnter;
  uint64_t epoch = 0;
  std::vector<uint8_t> data;
  bool operator==(const AllgatherEnter&) const = default;
};

struct AllgatherEntry {
  uint32_t rank = 0;
  std::vector<uint8_t> data;
  bool operator==(const AllgatherEntry&) const = default;
};

// Entries are strictly ascending by rank (the decoder enforces it).
struct AllgatherDone {
  static constexpr MessageType kType = MessageType::kAllgatherDone;
  uint64_t epoch = 0;
  WireStatus status;
  std::vector<AllgatherEntry> entries;
  bool operator==(const AllgatherDone&) const = default;
};

struct CallRequest {
  static constexpr MessageType kType = MessageType::kCallRequest;
  uint64_t request_id = 0;
  std::vector<uint8_t> payload;
  bool operator==(const CallRequest&) const = default;
};

// The payload is meaningful only when status is OK.
struct CallReply {
  static constexpr MessageType kType = MessageType::kCallReply;
  uint64_t request_id = 0;
  WireStatus status;
  std::vector<uint8_t> payload;
  bool operator==(const CallReply&) const = default;
};

// ---- Pool status (`weft status`) ----
// A connection that has not joined may send StatusRequest instead of Join (and, for the next
// page, again); it never becomes a member. The coordinator answers each with a StatusReply and
// closes the connection after the last page. Replies are paged so that every page fits a frame
// whatever the names and paths: at most kMaxStatusPeersPerReply rows, each bounded below.
inline constexpr uint32_t kMaxStatusPeersPerReply = 256;
inline constexpr uint32_t kMaxStatusEvents = 32;    // the coordinator's ring of recent errors
inline constexpr size_t kMaxStatusText = 512;       // an event's text, a down peer's reason
inline constexpr size_t kMaxStatusHost = 256;       // where a peer connected from

struct StatusRequest {
  static constexpr MessageType kType = MessageType::kStatusRequest;
  uint32_t first_rank = 0;                          // rows for ranks >= first_rank
  uint32_t max_peers = kMaxStatusPeersPerReply;     // 1..kMaxStatusPeersPerReply (else refused)
  bool operator==(const StatusRequest&) const = default;
};

enum class PeerState : uint8_t { kUp = 1, kDown = 2, kLeft = 3 };
std::string_view PeerStateName(PeerState state);  // "up", "down", "left"

// Allocator figures of one medium (bytes; allocations is a count).
struct StatusUsage {
  uint64_t capacity = 0;
  uint64_t used = 0;
  uint64_t allocations = 0;
  bool operator==(const StatusUsage&) const = default;
};

// One rank as the coordinator knows it: its live peer, or the last one that held it (down/left).
struct StatusPeer {
  uint32_t rank = 0;
  std::string peer_name;  // at most kMaxNameLength
  PeerState state = PeerState::kUp;
  int32_t pid = 0;
  std::string host;        // tcp: the address it connected from; empty: the coordinator's node (unix)
  uint64_t last_heard_ms = 0;  // up: since its last frame; down/left: since it went
  uint64_t in_pool_ms = 0;     // how long it has been a member (down/left: how long it was)
  uint64_t segment_size = 0;   // host slice bytes
  uint64_t device_size = 0;    // device slice bytes, 0: none
  StatusUsage host_usage;      // the pool allocator's figures for its slices (0 once gone)
  StatusUsage device_usage;
  std::vector<std::string> transports;  // the blobs it advertised (its paths): valid names, ascending, at most kMaxTransportBlobs
  std::string reason;          // down: why (at most kMaxStatusText)
  bool operator==(const StatusPeer&) const = default;
};

// A refusal or a peer declared down, as the coordinator remembers it.
struct StatusEvent {
  uint64_t age_ms = 0;   // how long ago (the coordinator's monotonic clock)
  uint64_t unix_ms = 0;  // when (its wall clock)
  Code code = Code::kOk;
  std::string text;      // at most kMaxStatusText
  bool operator==(const StatusEvent&) const = default;
};

struct StatusReply {
  static constexpr MessageType kType = MessageType::kStatusReply;
  WireStatus status;  // not OK: the request was refused, nothing else is meaningful
  std::string pool_name;
  uint64_t rank_size = 0;
  uint32_t max_ranks = 0;
  uint32_t peer_timeout_ms = 0;
  std::string coordinator_host;  // the coordinator's host name (at most kMaxStatusHost)
  uint64_t uptime_ms = 0;
  // Pool-wide, the same on every page.
  uint32_t peers_up = 0, peers_down = 0, peers_left = 0;  // ranks in each state now
  uint64_t joins_total = 0, join_refusals_total = 0, peers_down_total = 0, peers_left_total = 0;
  uint64_t heartbeats_total = 0;
  uint32_t connections = 0;   // open now, members or not (this one included)
  StatusUsage host_usage;     // live peers' slices, summed
  StatusUsage device_usage;
  std::vector<StatusPeer> peers;  // strictly ascending by rank
  bool more = false;              // rows past these exist: ask again from next_rank
  uint32_t next_rank = 0;
  std::vector<StatusEvent> events;  // oldest first, at most kMaxStatusEvents
  bool operator==(const StatusReply&) const = default;
};

std::vector<uint8_t> Encode(const Join& m);
std::vector<uint8_t> Encode(const JoinAck& m);
std::vector<uint8_t> Encode(const PeerJoined& m);
std::vector<uint8_t> Encode(const PeerGone& m);
std::vector<uint8_t> Encode(const Heartbeat& m);
std::vector<uint8_t> Encode(const HeartbeatAck& m);
std::vector<uint8_t> Encode(const Leave& m);
std::vector<uint8_t> Encode(const BarrierEnter& m);
std::vector<uint8_t> Encode(const BarrierDone& m);
std::vector<uint8_t> Encode(const AllgatherEnter& m);
std::vector<uint8_t> Encode(const AllgatherDone& m);
std::vector<uint8_t> Encode(const CallRequest& m);
std::vector<uint8_t> Encode(const CallReply& m);
std::vector<uint8_t> Encode(const StatusRequest& m);
std::vector<uint8_t> Encode(const StatusReply& m);

// Decodes a payload (without the frame header).
template <typename T>
Result<T> Decode(std::span<const uint8_t> payload);
template <> Result<Join> Decode<Join>(std::span<const uint8_t> payload);
template <> Result<JoinAck> Decode<JoinAck>(std::span<const uint8_t> payload);
template <> Result<PeerJoined> Decode<PeerJoined>(std::span<const uint8_t> payload);
template <> Result<PeerGone> Decode<PeerGone>(std::span<const uint8_t> payload);
template <> Result<Heartbeat> Decode<Heartbeat>(std::span<const uint8_t> payload);
template <> Result<HeartbeatAck> Decode<HeartbeatAck>(std::span<const uint8_t> payload);
template <> Result<Leave> Decode<Leave>(std::span<const uint8_t> payload);
template <> Result<BarrierEnter> Decode<BarrierEnter>(std::span<const uint8_t> payload);
template <> Result<BarrierDone> Decode<BarrierDone>(std::span<const uint8_t> payload);
template <> Result<AllgatherEnter> Decode<AllgatherEnter>(std::span<const uint8_t> payload);
template <> Result<AllgatherDone> Decode<AllgatherDone>(std::span<const uint8_t> payload);
template <> Result<CallRequest> Decode<CallRequest>(std::span<const uint8_t> payload);
template <> Result<CallReply> Decode<CallReply>(std::span<const uint8_t> payload);
template <> Result<StatusRequest> Decode<StatusRequest>(std::span<const uint8_t> payload);
template <> Result<StatusReply> Decode<StatusReply>(std::span<const uint8_t> payload);

// Header + payload, ready to send. INVALID_ARGUMENT if the payload exceeds kMaxFramePayload.
Result<std::vector<uint8_t>> MakeFrame(MessageType type, std::span<const uint8_t> payload);
template <typename T>
Result<std::vector<uint8_t>> EncodeFrame(const T& message) {
  return MakeFrame(T::kType, Encode(message));
}

}  // namespace weft::wire
