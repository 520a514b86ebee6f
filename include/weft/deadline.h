// Deadline: when a blocking call gives up. Every blocking call in weft takes one (public).
#pragma once

#include <chrono>

namespace weft {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

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
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(left()).count();
    return ms > 1'000'000 ? 1'000'000 : static_cast<int>(ms);
  }

 private:
  Clock::time_point at_;
};

}  // namespace weft
