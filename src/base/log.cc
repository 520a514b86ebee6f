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
