// Data-plane frames of the TCP transport (separate from the control frames of wire/control.h).
// After the authentication handshake (net/auth.h) a connection carries requests from the client
// and responses from the server, all little-endian, fixed-size headers:
//
// Request header, 48 bytes, followed by `length` payload bytes for WRITE (none for READ):
//   magic u32 "WFTD"  version u16  op u8  flags u8  request_id u64  segment_id u32  reserved u32 (0)
//   access_key u64  offset u64  length u64
//
// Response header, 32 bytes, followed by `message_length` bytes of error text (only when the
// status is not OK) and then `length` payload bytes (READ with status OK: exactly the length
// asked for; otherwise 0):
//   magic u32 "WFTR"  version u16  op u8  flags u8  request_id u64  status i32
//   message_length u32  length u64
//
// NOTIFY (op 3) carries a notification for the owner's application instead of touching memory:
// segment_id, access_key and offset are 0, `length` (at most kMaxNotifyPayload) payload bytes
// follow as for WRITE, encoded by EncodeNotification; its response is like a WRITE's. A NOTIFY
// with no payload is a probe: answered OK, delivered to nobody.
//
// FENCE (op 4) opens a connection's session before its first WRITE: access_key carries the
// client's id (random, never 0) and offset its generation for this server (never 0); segment_id
// and length are 0, no payload; answered like a WRITE. A client raises its generation after a
// failure that may leave a WRITE of its in flight (a deadline, a reset lane); once the server has
// seen a newer generation of a client, the WRITEs and NOTIFYs of that client's older connections
// are refused (CANCELLED) and their payload bytes discarded, so a write reported failed can never
// land over a later one (bytes retransmitted when a link comes back, or read late by a frozen
// server). An older generation than the newest seen is refused (CANCELLED). Connections without a
// session are not fenced.
//
// Decoders are bounds-checked and never trust a length: a length over kMaxDataLength, a message
// over kMaxDataMessage, an unknown op, flag, status code or version, a non-zero reserved field,
// or an inconsistent response (payload on an error, message on OK) is PROTOCOL. A receiver
// treats PROTOCOL as fatal for the connection (the stream cannot be resynchronised).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/status.h"

namespace weft::wire {

inline constexpr uint32_t kDataRequestMagic = 0x44544657;   // the bytes "WFTD"
inline constexpr uint32_t kDataResponseMagic = 0x52544657;  // the bytes "WFTR"
inline constexpr uint16_t kDataVersion = 1;
inline constexpr size_t kDataRequestSize = 48;
inline constexpr size_t kDataResponseSize = 32;
inline constexpr uint64_t kMaxDataLength = 64ull << 20;  // per request (one slice)
inline constexpr uint32_t kMaxDataMessage = 1024;        // error text in a response
inline constexpr uint64_t kMaxNotifyPayload = (64u << 10) + 4;  // a NOTIFY's payload

enum class DataOp : uint8_t { kRead = 1, kWrite = 2, kNotify = 3, kFence = 4 };
std::string_view DataOpName(DataOp op);

struct DataRequest {
  DataOp op = DataOp::kRead;
  uint8_t flags = 0;  // none defined in version 1; must be 0
  uint64_t request_id = 0;
  uint32_t segment_id = 0;
  uint64_t access_key = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const DataRequest&) const = default;
};

struct DataResponse {
  DataOp op = DataOp::kRead;
  uint8_t flags = 0;
  uint64_t request_id = 0;
  Code status = Code::kOk;
  uint32_t message_length = 0;  // error text bytes that follow the header
  uint64_t length = 0;          // payload bytes that follow the text
  bool operator==(const DataResponse&) const = default;
};

using DataRequestBytes = std::array<uint8_t, kDataRequestSize>;
using DataResponseBytes = std::array<uint8_t, kDataResponseSize>;

// Encoding cannot fail; the caller keeps lengths within the limits (the decoder enforces them).
DataRequestBytes EncodeDataRequest(const DataRequest& r);
DataResponseBytes EncodeDataResponse(const DataResponse& r);

// Exactly kDataRequestSize / kDataResponseSize bytes; PROTOCOL for anything malformed.
Result<DataRequest> DecodeDataRequest(std::span<const uint8_t> bytes);
Result<DataResponse> DecodeDataResponse(std::span<const uint8_t> bytes);

// The payload of a NOTIFY: name length u32, name bytes, message bytes (the rest).
struct NotificationPayload {
  std::string name;
  std::string message;
  bool operator==(const NotificationPayload&) const = default;
};
// INVALID_ARGUMENT when name and message do not fit in kMaxNotifyPayload.
Result<std::vector<uint8_t>> EncodeNotification(std::string_view name, std::string_view message);
// PROTOCOL for a payload shorter than 4 bytes, a name length past the end, or too many bytes.
Result<NotificationPayload> DecodeNotification(std::span<const uint8_t> bytes);

}  // namespace weft::wire
