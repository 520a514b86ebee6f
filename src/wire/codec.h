// Bounds-checked little-endian binary encoding. The Writer appends to a growing buffer; the
// Reader walks a borrowed span and never trusts a length it reads: every read checks the
// bytes left and every length prefix is checked against a caller-given maximum, so a
// malformed or hostile message yields PROTOCOL and never an out-of-bounds access or a huge
// allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace weft::wire {

class Writer {
 public:
  Writer() = default;

  void U8(uint8_t v);
  void U16(uint16_t v);
  void U32(uint32_t v);
  void U64(uint64_t v);
  void I32(int32_t v) { U32(static_cast<uint32_t>(v)); }
  void Bool(bool v) { U8(v ? 1 : 0); }
  // u32 length, then the bytes.
  void Bytes(std::span<const uint8_t> bytes);
  void String(std::string_view s);
  // The bytes with no length in front (the reader must know the length).
  void Raw(std::span<const uint8_t> bytes);

  // Overwrites 4 bytes written earlier (for a length known only at the end).
  void PatchU32(size_t offset, uint32_t v);

  size_t size() const { return buf_.size(); }
  const std::vector<uint8_t>& buffer() const { return buf_; }
  std::vector<uint8_t> Take() { return std::move(buf_); }

 private:
  std::vector<uint8_t> buf_;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> data) : data_(data) {}

  Status U8(uint8_t& out);
  Status U16(uint16_t& out);
  Status U32(uint32_t& out);
  Status U64(uint64_t& out);
  Status I32(int32_t& out);
  // Only 0 or 1 is accepted, so that every value has one encoding.
  Status Bool(bool& out);
  // A u32 length (at most max_len and at most the bytes left), then the bytes.
  Status Bytes(std::vector<uint8_t>& out, size_t max_len);
  Status String(std::string& out, size_t max_len);
  // Exactly n bytes, borrowed from the input.
  Status Raw(size_t n, std::span<const uint8_t>& out);
  // A count of items that each take at least min_item_bytes, checked against the bytes left
  // so a caller may reserve() it safely.
  Status Count(uint32_t& out, size_t min_item_bytes, uint32_t max_count);

  // PROTOCOL if bytes are left over: every message has exactly one valid length.
  Status ExpectEnd() const;

  size_t remaining() const { return data_.size() - pos_; }
  size_t position() const { return pos_; }

 private:
  Status Need(size_t n, std::string_view what) const;

  std::span<const uint8_t> data_;
  size_t pos_ = 0;
};

}  // namespace weft::wire
