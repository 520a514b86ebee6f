// Status and Result<T>: the error value every weft call returns, and a value or a non-OK
// Status. Public: depends on the standard library only. Codes are stable (they are part of the
// C API as negative numbers and of the Python API as exception classes); never renumber them.
// tl::expected is not packaged for Debian 12 and std::expected needs C++23, so Result is the
// small subset weft uses.
#pragma once

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace weft {

enum class Code : int32_t {
  kOk = 0,
  kInvalidArgument = 1,   // a null pointer, zero length where one is needed, a bad option
  kOutOfRange = 2,        // an address or length runs past a segment or the pool window
  kInvalidAddress = 3,    // not a GVA of this pool, or not the start of an allocation
  kDoubleFree = 4,        // freeing memory that is not allocated
  kPoolFull = 5,          // no free block large enough
  kPeerDown = 6,          // the peer that owns the memory has left or died
  kTimeout = 7,           // the deadline passed before the operation completed
  kMismatch = 8,          // joining a pool with another name or size
  kProtocol = 9,          // a malformed, truncated or oversized message
  kIo = 10,               // a system call failed (errno in the message)
  kUnavailable = 11,      // the coordinator or a service cannot be reached
  kNotSupported = 12,     // the operation has no path on this machine
  kPermissionDenied = 13, // wrong access key or permission
  kUnauthenticated = 14,  // missing or wrong cluster secret
  kNotFound = 15,         // a name or handle that is not known
  kAlreadyExists = 16,    // a name or registration that is already taken
  kCancelled = 17,        // the pool was left while the operation was pending
  kNotRegistered = 18,    // local memory that is not registered
  kCuda = 19,             // a CUDA call failed (the CUDA error in the message)
  kInternal = 20,         // a bug in weft: please report it
  kBusy = 21,             // the object is still in use (a batch still running)
};
// The highest code; decoders refuse anything above it. New codes are appended, never renumbered.
inline constexpr Code kLastCode = Code::kBusy;

// Stable, human-readable name of a code ("PEER_DOWN").
std::string_view CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "PEER_DOWN: rank 2 left the pool ..."
  std::string ToString() const;

  // Adds context in front of the message, keeping the code.
  Status Annotate(std::string_view context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status OkStatus() { return {}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = Status(Code::kInternal, "Result built from an OK status without a value");
  }

  bool ok() const { return value_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Status& status() const { return status_; }

  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T value_or(T fallback) const& { return ok() ? *value_ : std::move(fallback); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace weft

#define WEFT_RETURN_IF_ERROR(expr)                 \
  do {                                             \
    ::weft::Status weft_status_ = (expr);          \
    if (!weft_status_.ok()) return weft_status_;   \
  } while (0)

#define WEFT_CONCAT_INNER(a, b) a##b
#define WEFT_CONCAT(a, b) WEFT_CONCAT_INNER(a, b)
#define WEFT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()
// WEFT_ASSIGN_OR_RETURN(auto x, Foo()); returns Foo()'s status when it failed.
#define WEFT_ASSIGN_OR_RETURN(lhs, expr) \
  WEFT_ASSIGN_OR_RETURN_IMPL(WEFT_CONCAT(weft_result_, __LINE__), lhs, expr)
