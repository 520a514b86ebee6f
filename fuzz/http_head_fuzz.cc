// Fuzzes the HTTP request head parser of net::HttpServer (ParseHttpHead) and the query decoding
// under it. The first input byte picks the limits (small ones reach the 431 and 413 paths), the
// rest is what a client sent. Properties: parsing never crashes; a refusal carries a 4xx/5xx
// status and a reason; a complete head fits in the input and the head limit, holds a method and
// a path starting with '/', and parsing just its bytes again gives the same result; a head one
// byte short of complete is never complete.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "net/http_message.h"

using weft::net::HttpHeadParse;
using weft::net::ParseHttpHead;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t max_head = (data[0] & 0x0f) == 0 ? 16 : 64u << (data[0] & 0x07);
  const uint64_t max_body = (data[0] & 0x80) != 0 ? 0 : 1u << 20;
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  HttpHeadParse p = ParseHttpHead(input, max_head, max_body);
  switch (p.state) {
    case HttpHeadParse::State::kIncomplete:
      if (input.size() > max_head) __builtin_trap();
      break;
    case HttpHeadParse::State::kRefused:
      if (p.status < 400 || p.status > 599 || p.reason.empty()) __builtin_trap();
      break;
    case HttpHeadParse::State::kComplete: {
      if (p.head_bytes > input.size() || p.head_bytes > max_head) __builtin_trap();
      if (p.request.method.empty() || p.request.path.empty() || p.request.path[0] != '/') __builtin_trap();
      if (p.request.content_length > max_body) __builtin_trap();
      auto again = ParseHttpHead(input.substr(0, p.head_bytes), max_head, max_body);
      if (again.state != HttpHeadParse::State::kComplete || again.request.target != p.request.target ||
          again.request.headers != p.request.headers) {
        __builtin_trap();
      }
      auto shorter = ParseHttpHead(input.substr(0, p.head_bytes - 1), max_head, max_body);
      if (shorter.state == HttpHeadParse::State::kComplete) __builtin_trap();
      for (const char* name : {"key", "a", ""}) (void)p.request.QueryParam(name);
      break;
    }
  }
  (void)weft::net::PercentDecode(input);
  return 0;
}
