#include "base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <mutex>

namespace weft::log {

spdlog::logger& Get() {
  static std::once_flag once;
  static std::shared_ptr<spdlog::logger> logger;
  std::call_once(once, [] {
    logger = spdlog::get("weft");
    if (!logger) logger = spdlog::stderr_color_mt("weft");
    logger->set_pattern("[%H:%M:%S.%e] [weft %P] [%^%l%$] %v");
    const char* level = std::getenv("WEFT_LOG_LEVEL");
    logger->set_level(spdlog::level::from_str(level ? level : "warn"));
  });
  return *logger;
}

void SetLevel(std::string_view level) { Get().set_level(spdlog::level::from_str(std::string(level))); }

}  // namespace weft::log

namespace weft::log {

RateLimitedLog::RateLimitedLog(std::string what, spdlog::level::level_enum level, uint32_t lines,
                               Clock::duration interval)
    : what_(std::move(what)), level_(level), lines_(lines), interval_(interval) {}

bool RateLimitedLog::Admit() {
  if (!Get().should_log(level_)) return false;  // nothing would be written: nothing to count
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  if (now - start_ >= interval_) CloseIntervalLocked(now);
  if (in_interval_ < lines_) {
    ++in_interval_;
    ++written_;
    return true;
  }
  ++held_back_;
  ++suppressed_;
  return false;
}

void RateLimitedLog::Flush() {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  if (now - start_ >= interval_) CloseIntervalLocked(now);
}

void RateLimitedLog::CloseIntervalLocked(Clock::time_point now) {
  if (held_back_ > 0) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(interval_).count();
    Get().log(level_, "{}: {} similar messages suppressed (at most {} per {} ms are written)", what_, held_back_,
              lines_, ms);
    ++written_;
  }
  held_back_ = 0;
  in_interval_ = 0;
  start_ = now;
}

uint64_t RateLimitedLog::written() const {
  std::lock_guard lock(mu_);
  return written_;
}

uint64_t RateLimitedLog::suppressed() const {
  std::lock_guard lock(mu_);
  return suppressed_;
}

}  // namespace weft::log
