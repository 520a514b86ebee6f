// What every C API entry point shares (internal to src/bindings/c): the thread-local last error,
// Status -> negative code, and Guard, which keeps C++ exceptions from crossing into C.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <new>
#include <string>

#include "base/clock.h"
#include "base/status.h"
#include "weft/pool.h"
#include "weft/weft.h"

struct weft_config {
  std::map<std::string, std::string> overrides;
};

// Here rather than in weft_c.cc because symm_c.cc builds teams on a pool handle.
struct weft_pool {
  std::unique_ptr<weft::bm::Pool> pool;
  bool left = false;
};

namespace weft::c_api {

// The message of the last failed call on this thread. A fixed buffer: setting it never
// allocates, so it cannot throw, and it needs no thread-exit destructor.
inline thread_local char t_last_error[2048] = "";

inline void SetLastError(const char* text) noexcept {
  const size_t cap = sizeof t_last_error;
  const size_t n = std::strlen(text);
  if (n < cap) {
    std::memcpy(t_last_error, text, n + 1);
  } else {
    std::memcpy(t_last_error, text, cap - 4);
    std::memcpy(t_last_error + cap - 4, "...", 4);
  }
}

inline int Fail(const weft::Status& s) noexcept {
  try {
    SetLastError(s.ToString().c_str());
  } catch (...) {
    SetLastError(std::string(weft::CodeName(s.code())).c_str());
  }
  return -static_cast<int>(s.code());
}

inline int Fail(weft::Code code, const char* message) noexcept {
  char text[sizeof t_last_error];
  std::snprintf(text, sizeof text, "%.*s: %s", static_cast<int>(weft::CodeName(code).size()),
                weft::CodeName(code).data(), message);
  SetLastError(text);
  return -static_cast<int>(code);
}

inline int Report(const weft::Status& s) noexcept { return s.ok() ? WEFT_OK : Fail(s); }

// Runs f; an exception becomes WEFT_E_INTERNAL with its text.
template <typename F>
inline int Guard(const char* function, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    char text[256];
    std::snprintf(text, sizeof text, "%s: out of memory", function);
    return Fail(weft::Code::kInternal, text);
  } catch (const std::exception& e) {
    char text[1024];
    std::snprintf(text, sizeof text, "%s: unexpected exception: %s", function, e.what());
    return Fail(weft::Code::kInternal, text);
  } catch (...) {
    char text[256];
    std::snprintf(text, sizeof text, "%s: unexpected exception", function);
    return Fail(weft::Code::kInternal, text);
  }
}

inline int NullArgument(const char* function, const char* argument) noexcept {
  char text[256];
  std::snprintf(text, sizeof text, "%s: %s is NULL", function, argument);
  return Fail(weft::Code::kInvalidArgument, text);
}

#define WEFT_C_REQUIRE(arg)                                  \
  do {                                                       \
    if ((arg) == nullptr) return NullArgument(__func__, #arg); \
  } while (0)

inline weft::Deadline DeadlineOf(int64_t timeout_ms) {
  if (timeout_ms < 0) return weft::Deadline::Never();
  return weft::Deadline::After(std::chrono::milliseconds(timeout_ms));
}

}  // namespace weft::c_api
