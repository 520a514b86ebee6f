#include "base/status.h"

#include <cstring>

namespace weft {

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: return "INVALID_ARGUMENT";
    case Code::kOutOfRange: return "OUT_OF_RANGE";
    case Code::kInvalidAddress: return "INVALID_ADDRESS";
    case Code::kDoubleFree: return "DOUBLE_FREE";
    case Code::kPoolFull: return "POOL_FULL";
    case Code::kPeerDown: return "PEER_DOWN";
    case Code::kTimeout: return "TIMEOUT";
    case Code::kMismatch: return "MISMATCH";
    case Code::kProtocol: return "PROTOCOL";
    case Code::kIo: return "IO";
    case Code::kUnavailable: return "UNAVAILABLE";
    case Code::kNotSupported: return "NOT_SUPPORTED";
    case Code::kPermissionDenied: return "PERMISSION_DENIED";
    case Code::kUnauthenticated: return "UNAUTHENTICATED";
    case Code::kNotFound: return "NOT_FOUND";
    case Code::kAlreadyExists: return "ALREADY_EXISTS";
    case Code::kCancelled: return "CANCELLED";
    case Code::kNotRegistered: return "NOT_REGISTERED";
    case Code::kCuda: return "CUDA";
    case Code::kInternal: return "INTERNAL";
    case Code::kBusy: return "BUSY";
  }
  return "UNKNOWN";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return fmt::format("{}: {}", CodeName(code_), message_);
}

Status Status::Annotate(std::string_view context) const {
  if (ok()) return *this;
  return Status(code_, fmt::format("{}: {}", context, message_));
}

Status ErrnoStatus(std::string_view what, int err) {
  char buf[256];
  const char* text = strerror_r(err, buf, sizeof buf);
  return Status(Code::kIo, fmt::format("{}: {} (errno {})", what, text, err));
}

}  // namespace weft
