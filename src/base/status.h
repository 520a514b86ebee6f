// Status: the error value every weft call returns. Codes are stable (they are part of the C API
// as negative numbers and of the Python API as exception classes); never renumber them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

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

template <typename... Args>
Status Error(Code code, fmt::format_string<Args...> format, Args&&... args) {
  return Status(code, fmt::format(format, std::forward<Args>(args)...));
}

// Status from errno, "what: strerror(errno)".
Status ErrnoStatus(std::string_view what, int err);

}  // namespace weft

#define WEFT_RETURN_IF_ERROR(expr)                 \
  do {                                             \
    ::weft::Status weft_status_ = (expr);          \
    if (!weft_status_.ok()) return weft_status_;   \
  } while (0)
