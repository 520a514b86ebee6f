// Logging goes through spdlog's logger named "weft". stderr is one per process, so the log sink
// is the one piece of process-wide state weft keeps; its level comes from WEFT_LOG_LEVEL.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace weft::log {

// The "weft" logger (created on first use, level from WEFT_LOG_LEVEL, default "warn").
spdlog::logger& Get();
void SetLevel(std::string_view level);

}  // namespace weft::log

#define WEFT_LOG_DEBUG(...) ::weft::log::Get().debug(__VA_ARGS__)
#define WEFT_LOG_INFO(...) ::weft::log::Get().info(__VA_ARGS__)
#define WEFT_LOG_WARN(...) ::weft::log::Get().warn(__VA_ARGS__)
#define WEFT_LOG_ERROR(...) ::weft::log::Get().error(__VA_ARGS__)
