#include "wire/data.h"

#include <cstring>

#include "wire/codec.h"

namespace weft::wire {

namespace {

template <typename T>
void Put(uint8_t*& p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) *p++ = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}

Status CheckOp(uint8_t op) {
  if (op < static_cast<uint8_t>(DataOp::kRead) || op > static_cast<uint8_t>(DataOp::kFence))
    return Error(Code::kProtocol, "unknown data op {}", op);
  return OkStatus();
}

Status CheckVersion(uint16_t version) {
  if (version != kDataVersion)
    return Error(Code::kProtocol, "data protocol version {} is not supported (this build speaks {})", version,
                 kDataVersion);
  return OkStatus();
}

}  // namespace

std::string_view DataOpName(DataOp op) {
  switch (op) {
    case DataOp::kRead: return "READ";
    case DataOp::kWrite: return "WRITE";
    case DataOp::kNotify: return "NOTIFY";
    case DataOp::kFence: return "FENCE";
  }
  return "?";
}

DataRequestBytes EncodeDataRequest(const DataRequest& r) {
  DataRequestBytes out{};
  uint8_t* p = out.data();
  Put<uint32_t>(p, kDataRequestMagic);
  Put<uint16_t>(p, kDataVersion);
  Put<uint8_t>(p, static_cast<uint8_t>(r.op));
  Put<uint8_t>(p, r.flags);
  Put<uint64_t>(p, r.request_id);
  Put<uint32_t>(p, r.segment_id);
  Put<uint32_t>(p, 0);
  Put<uint64_t>(p, r.access_key);
  Put<uint64_t>(p, r.offset);
  Put<uint64_t>(p, r.length);
  return out;
}

DataResponseBytes EncodeDataResponse(const DataResponse& r) {
  DataResponseBytes out{};
  uint8_t* p = out.data();
  Put<uint32_t>(p, kDataResponseMagic);
  Put<uint16_t>(p, kDataVersion);
  Put<uint8_t>(p, static_cast<uint8_t>(r.op));
  Put<uint8_t>(p, r.flags);
  Put<uint64_t>(p, r.request_id);
  Put<uint32_t>(p, static_cast<uint32_t>(static_cast<int32_t>(r.status)));
  Put<uint32_t>(p, r.message_length);
  Put<uint64_t>(p, r.length);
  return out;
}

Result<DataRequest> DecodeDataRequest(std::span<const uint8_t> bytes) {
  if (bytes.size() != kDataRequestSize)
    return Error(Code::kProtocol, "data request header is {} bytes, expected {}", bytes.size(), kDataRequestSize);
  Reader in(bytes);
  uint32_t magic = 0, reserved = 0;
  uint16_t version = 0;
  uint8_t op = 0;
  DataRequest r;
  WEFT_RETURN_IF_ERROR(in.U32(magic));
  if (magic != kDataRequestMagic)
    return Error(Code::kProtocol, "bad data request magic {:#010x} (expected {:#010x}): not a weft data stream", magic,
                 kDataRequestMagic);
  WEFT_RETURN_IF_ERROR(in.U16(version));
  WEFT_RETURN_IF_ERROR(CheckVersion(version));
  WEFT_RETURN_IF_ERROR(in.U8(op));
  WEFT_RETURN_IF_ERROR(CheckOp(op));
  r.op = static_cast<DataOp>(op);
  WEFT_RETURN_IF_ERROR(in.U8(r.flags));
  if (r.flags != 0) return Error(Code::kProtocol, "unknown data request flags {:#x}", r.flags);
  WEFT_RETURN_IF_ERROR(in.U64(r.request_id));
  WEFT_RETURN_IF_ERROR(in.U32(r.segment_id));
  WEFT_RETURN_IF_ERROR(in.U32(reserved));
  if (reserved != 0) return Error(Code::kProtocol, "reserved field of a data request is {:#x}, must be 0", reserved);
  WEFT_RETURN_IF_ERROR(in.U64(r.access_key));
  WEFT_RETURN_IF_ERROR(in.U64(r.offset));
  WEFT_RETURN_IF_ERROR(in.U64(r.length));
  if (r.length > kMaxDataLength)
    return Error(Code::kProtocol, "data request of {} bytes exceeds the limit of {} per request", r.length,
                 kMaxDataLength);
  if (r.op == DataOp::kNotify) {
    if (r.segment_id != 0 || r.access_key != 0 || r.offset != 0)
      return Error(Code::kProtocol, "a NOTIFY names segment {}, offset {} or a key: they must be 0", r.segment_id,
                   r.offset);
    if (r.length > kMaxNotifyPayload)
      return Error(Code::kProtocol, "a NOTIFY of {} bytes exceeds the limit of {}", r.length, kMaxNotifyPayload);
  }
  if (r.op == DataOp::kFence && (r.segment_id != 0 || r.length != 0 || r.access_key == 0 || r.offset == 0))
    return Error(Code::kProtocol, "a FENCE names segment {} or {} payload bytes (must be 0), or a zero client id or "
                 "generation", r.segment_id, r.length);
  WEFT_RETURN_IF_ERROR(in.ExpectEnd());
  return r;
}

Result<DataResponse> DecodeDataResponse(std::span<const uint8_t> bytes) {
  if (bytes.size() != kDataResponseSize)
    return Error(Code::kProtocol, "data response header is {} bytes, expected {}", bytes.size(), kDataResponseSize);
  Reader in(bytes);
  uint32_t magic = 0;
  uint16_t version = 0;
  uint8_t op = 0;
  int32_t code = 0;
  DataResponse r;
  WEFT_RETURN_IF_ERROR(in.U32(magic));
  if (magic != kDataResponseMagic)
    return Error(Code::kProtocol, "bad data response magic {:#010x} (expected {:#010x})", magic, kDataResponseMagic);
  WEFT_RETURN_IF_ERROR(in.U16(version));
  WEFT_RETURN_IF_ERROR(CheckVersion(version));
  WEFT_RETURN_IF_ERROR(in.U8(op));
  WEFT_RETURN_IF_ERROR(CheckOp(op));
  r.op = static_cast<DataOp>(op);
  WEFT_RETURN_IF_ERROR(in.U8(r.flags));
  if (r.flags != 0) return Error(Code::kProtocol, "unknown data response flags {:#x}", r.flags);
  WEFT_RETURN_IF_ERROR(in.U64(r.request_id));
  WEFT_RETURN_IF_ERROR(in.I32(code));
  if (code < 0 || code > static_cast<int32_t>(kLastCode))
    return Error(Code::kProtocol, "unknown status code {} in a data response", code);
  r.status = static_cast<Code>(code);
  WEFT_RETURN_IF_ERROR(in.U32(r.message_length));
  WEFT_RETURN_IF_ERROR(in.U64(r.length));
  if (r.message_length > kMaxDataMessage)
    return Error(Code::kProtocol, "data response message of {} bytes exceeds the limit of {}", r.message_length,
                 kMaxDataMessage);
  if (r.length > kMaxDataLength)
    return Error(Code::kProtocol, "data response of {} bytes exceeds the limit of {}", r.length, kMaxDataLength);
  if (r.status == Code::kOk && r.message_length != 0)
    return Error(Code::kProtocol, "an OK data response carries {} bytes of error text", r.message_length);
  if (r.status != Code::kOk && r.length != 0)
    return Error(Code::kProtocol, "a failed data response carries {} payload bytes", r.length);
  if (r.op != DataOp::kRead && r.length != 0)
    return Error(Code::kProtocol, "a {} response carries {} payload bytes", DataOpName(r.op), r.length);
  WEFT_RETURN_IF_ERROR(in.ExpectEnd());
  return r;
}

Result<std::vector<uint8_t>> EncodeNotification(std::string_view name, std::string_view message) {
  uint64_t total = 4 + uint64_t{name.size()} + message.size();
  if (total > kMaxNotifyPayload)
    return Error(Code::kInvalidArgument, "a notification of {} bytes (name and message) exceeds the limit of {}",
                 total - 4, kMaxNotifyPayload - 4);
  std::vector<uint8_t> out(total);
  uint8_t* p = out.data();
  Put<uint32_t>(p, static_cast<uint32_t>(name.size()));
  std::memcpy(p, name.data(), name.size());
  std::memcpy(p + name.size(), message.data(), message.size());
  return out;
}

Result<NotificationPayload> DecodeNotification(std::span<const uint8_t> bytes) {
  if (bytes.size() > kMaxNotifyPayload)
    return Error(Code::kProtocol, "a notification of {} bytes exceeds the limit of {}", bytes.size(),
                 kMaxNotifyPayload);
  Reader in(bytes);
  uint32_t name_len = 0;
  WEFT_RETURN_IF_ERROR(in.U32(name_len));
  if (name_len > bytes.size() - 4)
    return Error(Code::kProtocol, "a notification names {} name bytes but has only {}", name_len, bytes.size() - 4);
  NotificationPayload n;
  n.name.assign(reinterpret_cast<const char*>(bytes.data() + 4), name_len);
  n.message.assign(reinterpret_cast<const char*>(bytes.data() + 4 + name_len), bytes.size() - 4 - name_len);
  return n;
}

}  // namespace weft::wire
