// Clocks and deadlines. Every blocking call in weft takes a Deadline.
#pragma once

#include <chrono>
#include <cstdint>

namespace weft {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

class Deadline {
 public:
  static Deadline After(Clock::duration d) { return Deadline(Clock::now() + d); }
  static Deadline Never() { return Deadline(Clock::time_point::max()); }
  explicit Deadline(Clock::time_point at) : at_(at) {}

  Clock::time_point at() const { return at_; }
  bool expired() const { return Clock::now() >= at_; }
  bool never() const { return at_ == Clock::time_point::max(); }
  // Time left, never negative.
  Clock::duration left() const {
    if (never()) return Clock::duration::max();
    auto now = Clock::now();
    return now >= at_ ? Clock::duration::zero() : at_ - now;
  }
  int left_ms_for_poll() const {  // for poll(2): -1 means forever
    if (never()) return -1;
    auto ms = std::chrono::duration_cast<Millis>(left()).count();
    return ms > 1'000'000 ? 1'000'000 : static_cast<int>(ms);
  }

 private:
  Clock::time_point at_;
};

inline uint64_t NowNanos() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

}  // namespace weft
