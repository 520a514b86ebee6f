// The internal side of Status (include/weft/status.h): fmt-formatted errors and errno.
#pragma once

#include <string_view>
#include <utility>

#include <fmt/format.h>

#include <weft/status.h>

namespace weft {

template <typename... Args>
Status Error(Code code, fmt::format_string<Args...> format, Args&&... args) {
  return Status(code, fmt::format(format, std::forward<Args>(args)...));
}

// Status from errno, "what: strerror(errno)".
Status ErrnoStatus(std::string_view what, int err);

}  // namespace weft
