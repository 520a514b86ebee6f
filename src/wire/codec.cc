#include "wire/codec.h"

#include <cstring>

namespace weft::wire {

namespace {

template <typename T>
void PutLe(std::vector<uint8_t>& buf, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) buf.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

template <typename T>
T GetLe(const uint8_t* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<T>(p[i]) << (8 * i));
  return v;
}

}  // namespace

void Writer::U8(uint8_t v) { buf_.push_back(v); }
void Writer::U16(uint16_t v) { PutLe(buf_, v); }
void Writer::U32(uint32_t v) { PutLe(buf_, v); }
void Writer::U64(uint64_t v) { PutLe(buf_, v); }

void Writer::Bytes(std::span<const uint8_t> bytes) {
  U32(static_cast<uint32_t>(bytes.size()));
  Raw(bytes);
}

void Writer::String(std::string_view s) {
  Bytes(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

void Writer::Raw(std::span<const uint8_t> bytes) { buf_.insert(buf_.end(), bytes.begin(), bytes.end()); }

void Writer::PatchU32(size_t offset, uint32_t v) {
  if (offset + 4 > buf_.size()) return;  // a caller bug; never write out of bounds
  for (size_t i = 0; i < 4; ++i) buf_[offset + i] = static_cast<uint8_t>(v >> (8 * i));
}

Status Reader::Need(size_t n, std::string_view what) const {
  if (n > remaining()) {
    return Error(Code::kProtocol, "truncated message: {} needs {} bytes at offset {}, {} left", what, n, pos_,
                 remaining());
  }
  return OkStatus();
}

Status Reader::U8(uint8_t& out) {
  WEFT_RETURN_IF_ERROR(Need(1, "u8"));
  out = data_[pos_];
  pos_ += 1;
  return OkStatus();
}

Status Reader::U16(uint16_t& out) {
  WEFT_RETURN_IF_ERROR(Need(2, "u16"));
  out = GetLe<uint16_t>(data_.data() + pos_);
  pos_ += 2;
  return OkStatus();
}

Status Reader::U32(uint32_t& out) {
  WEFT_RETURN_IF_ERROR(Need(4, "u32"));
  out = GetLe<uint32_t>(data_.data() + pos_);
  pos_ += 4;
  return OkStatus();
}

Status Reader::U64(uint64_t& out) {
  WEFT_RETURN_IF_ERROR(Need(8, "u64"));
  out = GetLe<uint64_t>(data_.data() + pos_);
  pos_ += 8;
  return OkStatus();
}

Status Reader::I32(int32_t& out) {
  uint32_t v = 0;
  WEFT_RETURN_IF_ERROR(U32(v));
  out = static_cast<int32_t>(v);
  return OkStatus();
}

Status Reader::Bool(bool& out) {
  uint8_t v = 0;
  WEFT_RETURN_IF_ERROR(U8(v));
  if (v > 1) return Error(Code::kProtocol, "bad boolean {} at offset {}", v, pos_ - 1);
  out = v == 1;
  return OkStatus();
}

Status Reader::Raw(size_t n, std::span<const uint8_t>& out) {
  WEFT_RETURN_IF_ERROR(Need(n, "bytes"));
  out = data_.subspan(pos_, n);
  pos_ += n;
  return OkStatus();
}

Status Reader::Bytes(std::vector<uint8_t>& out, size_t max_len) {
  uint32_t len = 0;
  WEFT_RETURN_IF_ERROR(U32(len));
  if (len > max_len) {
    return Error(Code::kProtocol, "length {} at offset {} exceeds the limit of {}", len, pos_ - 4, max_len);
  }
  std::span<const uint8_t> bytes;
  WEFT_RETURN_IF_ERROR(Raw(len, bytes));
  out.assign(bytes.begin(), bytes.end());
  return OkStatus();
}

Status Reader::String(std::string& out, size_t max_len) {
  uint32_t len = 0;
  WEFT_RETURN_IF_ERROR(U32(len));
  if (len > max_len) {
    return Error(Code::kProtocol, "string length {} at offset {} exceeds the limit of {}", len, pos_ - 4, max_len);
  }
  std::span<const uint8_t> bytes;
  WEFT_RETURN_IF_ERROR(Raw(len, bytes));
  out.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  return OkStatus();
}

Status Reader::Count(uint32_t& out, size_t min_item_bytes, uint32_t max_count) {
  uint32_t n = 0;
  WEFT_RETURN_IF_ERROR(U32(n));
  if (n > max_count) return Error(Code::kProtocol, "count {} exceeds the limit of {}", n, max_count);
  if (min_item_bytes > 0 && n > remaining() / min_item_bytes) {
    return Error(Code::kProtocol, "count {} cannot fit in the {} bytes left", n, remaining());
  }
  out = n;
  return OkStatus();
}

Status Reader::ExpectEnd() const {
  if (remaining() != 0) {
    return Error(Code::kProtocol, "{} trailing bytes after the message at offset {}", remaining(), pos_);
  }
  return OkStatus();
}

}  // namespace weft::wire
