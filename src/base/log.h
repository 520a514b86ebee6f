// Logging goes through spdlog's logger named "weft". stderr is one per process, so the log sink
// is the one piece of process-wide state weft keeps; its level comes from WEFT_LOG_LEVEL.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace weft::log {

// The "weft" logger (created on first use, level from WEFT_LOG_LEVEL, default "warn").
spdlog::logger& Get();
void SetLevel(std::string_view level);

// Bounds what one call site can write when something outside our control repeats (a connection
// flood, a stranger sending garbage): at most `lines` lines per `interval`; the rest are only
// counted, and once the interval is over one line says how many were suppressed. Owned by the
// object whose call site it guards (one per call site), never shared process-wide. Thread-safe.
class RateLimitedLog {
 public:
  using Clock = std::chrono::steady_clock;

  // `what` names the call site in the suppression line ("coordinator: refused connections").
  RateLimitedLog(std::string what, spdlog::level::level_enum level, uint32_t lines, Clock::duration interval);

  template <typename... Args>
  void operator()(spdlog::format_string_t<Args...> format, Args&&... args) {
    if (Admit()) Get().log(level_, format, std::forward<Args>(args)...);
  }
  // Writes the suppression line of an interval that is over (Admit does it on the next line;
  // call this from a periodic tick so the count is not held back until then).
  void Flush();

  uint64_t written() const;     // lines written, suppression lines included
  uint64_t suppressed() const;  // lines not written

 private:
  bool Admit();
  void CloseIntervalLocked(Clock::time_point now);

  const std::string what_;
  const spdlog::level::level_enum level_;
  const uint32_t lines_;
  const Clock::duration interval_;
  mutable std::mutex mu_;
  Clock::time_point start_{};
  uint32_t in_interval_ = 0;
  uint64_t held_back_ = 0;  // suppressed in the current interval, not yet reported
  uint64_t written_ = 0;
  uint64_t suppressed_ = 0;
};

}  // namespace weft::log

#define WEFT_LOG_DEBUG(...) ::weft::log::Get().debug(__VA_ARGS__)
#define WEFT_LOG_INFO(...) ::weft::log::Get().info(__VA_ARGS__)
#define WEFT_LOG_WARN(...) ::weft::log::Get().warn(__VA_ARGS__)
#define WEFT_LOG_ERROR(...) ::weft::log::Get().error(__VA_ARGS__)
