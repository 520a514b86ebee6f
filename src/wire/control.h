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
// of transport fields; 4: the coordinator answers every Heartbeat with a HeartbeatAck.
inline constexpr uint16_t kControlVersion = 4;
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

// Header + payload, ready to send. INVALID_ARGUMENT if the payload exceeds kMaxFramePayload.
Result<std::vector<uint8_t>> MakeFrame(MessageType type, std::span<const uint8_t> payload);
template <typename T>
Result<std::vector<uint8_t>> EncodeFrame(const T& message) {
  return MakeFrame(T::kType, Encode(message));
}

}  // namespace weft::wire
