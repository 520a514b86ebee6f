// Clocks and deadlines (Deadline itself is public: include/weft/deadline.h).
#pragma once

#include <chrono>
#include <cstdint>

#include <weft/deadline.h>

namespace weft {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

inline uint64_t NowNanos() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

}  // namespace weft
