// HTTP/1.1 messages for weft's one HTTP server (net/http_server.h): a strict, bounded parser of
// request heads and the formatter of responses. Pure functions over bytes, so they can be
// fuzzed (fuzz/http_head_fuzz.cc) and tested without sockets.
//
// What is accepted, on purpose narrowly (RFC 9112 with no leniency):
//  - a request line "METHOD SP origin-form SP HTTP/1.0|HTTP/1.1" ending in CRLF; the method an
//    upper-case token, the target starting with '/' and visible ASCII only;
//  - header lines "name:OWS value OWS" ending in CRLF, a token for name, no control characters
//    in the value, no obsolete line folding; at most kMaxHeaderLines of them;
//  - a body only by Content-Length (digits, one value). Transfer-Encoding (chunked bodies) is
//    refused with 501: weft's clients always know their body's length.
// Nothing here allocates more than the head it is given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace weft::net {

inline constexpr size_t kMaxHeaderLines = 100;

struct HttpRequest {
  std::string method;  // "GET"
  std::string target;  // as sent: "/metadata?key=a%20b"
  std::string path;    // the target up to '?', not decoded: "/metadata"
  std::string query;   // after '?', not decoded: "key=a%20b"
  int minor_version = 1;  // HTTP/1.<minor>
  // Names in lower case, in the order sent.
  std::vector<std::pair<std::string, std::string>> headers;
  uint64_t content_length = 0;
  bool keep_alive = true;          // HTTP/1.1 unless "Connection: close"; 1.0 only with keep-alive
  bool expect_continue = false;    // "Expect: 100-continue"
  std::string body;
  std::string client;              // the peer's address ("127.0.0.1:5123"), set by the server

  // The first value of a header (name in any case), or "" when absent.
  std::string_view Header(std::string_view name) const;
  // A query parameter, percent-decoded ('+' as space); nullopt when absent or not decodable.
  std::optional<std::string> QueryParam(std::string_view name) const;
};

// The outcome of parsing what has arrived of a request head.
struct HttpHeadParse {
  enum class State { kIncomplete, kComplete, kRefused };
  State state = State::kIncomplete;
  HttpRequest request;  // kComplete: everything but body and client
  size_t head_bytes = 0;  // kComplete: bytes of the head, blank line included
  int status = 0;         // kRefused: the HTTP status to answer (400, 413, 417, 431, 501, 505)
  std::string reason;     // kRefused: why, for the answer's body
};

// Parses the head at the start of `input` (which may hold more: the body, a pipelined request).
// kIncomplete while no blank line has arrived and `input` is within max_head_bytes; 431 past it.
// A complete head with a Content-Length over max_body is refused 413 right away, so the body is
// never read.
HttpHeadParse ParseHttpHead(std::string_view input, size_t max_head_bytes, uint64_t max_body);

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain";
  std::string body;
};

// The standard reason phrase of a status ("Not Found"), "Unknown" for others.
std::string_view HttpReasonPhrase(int status);
// The bytes of a response: status line, Content-Type, Content-Length, "Connection: close" when
// `close`, then the body unless `head_only` (a HEAD request: the length is still the body's).
std::string FormatHttpResponse(const HttpResponse& response, bool close, bool head_only);

// Percent-decoding of a query component ('+' is a space). nullopt for a malformed escape.
std::optional<std::string> PercentDecode(std::string_view text);

}  // namespace weft::net
