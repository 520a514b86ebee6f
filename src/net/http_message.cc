#include "net/http_message.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

namespace weft::net {

namespace {

using State = HttpHeadParse::State;

HttpHeadParse Refuse(int status, std::string reason) {
  HttpHeadParse p;
  p.state = State::kRefused;
  p.status = status;
  p.reason = std::move(reason);
  return p;
}

// RFC 9110 tchar.
bool IsTokenChar(unsigned char c) {
  if (std::isalnum(c)) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return IsTokenChar(static_cast<unsigned char>(c)); });
}

// Field values: visible ASCII, space, tab and obs-text; never a control character.
bool IsFieldValue(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return c == '\t' || (c >= 0x20 && c != 0x7f);
  });
}

bool IsTarget(std::string_view s) {
  if (s.empty() || s.front() != '/') return false;
  return std::all_of(s.begin(), s.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return c > 0x20 && c < 0x7f;
  });
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Whether a comma-separated header value holds `token` (case-insensitive).
bool HasToken(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view item = Trim(value.substr(0, comma));
    if (Lower(item) == token) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

// Content-Length: 1*DIGIT, at most 18 of them (so it cannot overflow).
std::optional<uint64_t> ParseLength(std::string_view s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

// "GET /x HTTP/1.1" into the request; the refusal when it is not one.
std::optional<HttpHeadParse> ParseRequestLine(std::string_view line, HttpRequest& r) {
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return Refuse(400, "malformed request line");
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!IsToken(method) || method.size() > 32 ||
      !std::all_of(method.begin(), method.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
    return Refuse(400, "malformed method");
  }
  if (!IsTarget(target)) return Refuse(400, "the target must be a path starting with '/'");
  if (version.size() != 8 || version.substr(0, 7) != "HTTP/1.") {
    if (version.substr(0, 5) == "HTTP/") return Refuse(505, "only HTTP/1.0 and HTTP/1.1 are served");
    return Refuse(400, "malformed HTTP version");
  }
  if (version[7] != '0' && version[7] != '1') return Refuse(505, "only HTTP/1.0 and HTTP/1.1 are served");
  r.method = method;
  r.target = target;
  size_t q = target.find('?');
  r.path = target.substr(0, q);
  r.query = q == std::string_view::npos ? std::string() : std::string(target.substr(q + 1));
  r.minor_version = version[7] - '0';
  return std::nullopt;
}

// One header line into the request; the refusal when it is malformed.
std::optional<HttpHeadParse> ParseHeaderLine(std::string_view line, HttpRequest& r) {
  if (line.front() == ' ' || line.front() == '\t') return Refuse(400, "obsolete header line folding");
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return Refuse(400, "header line without ':'");
  std::string_view name = line.substr(0, colon);
  std::string_view value = Trim(line.substr(colon + 1));
  if (!IsToken(name)) return Refuse(400, "malformed header name");
  if (!IsFieldValue(value)) return Refuse(400, "control character in a header value");
  if (r.headers.size() >= kMaxHeaderLines) return Refuse(431, "too many header lines");
  r.headers.emplace_back(Lower(name), std::string(value));
  return std::nullopt;
}

// The headers that shape how the message is read: length, connection, expectation.
std::optional<HttpHeadParse> ApplyFramingHeaders(HttpRequest& r, uint64_t max_body) {
  std::optional<uint64_t> length;
  bool close = false, keep = false;
  for (const auto& [name, value] : r.headers) {
    if (name == "content-length") {
      auto v = ParseLength(value);
      if (!v) return Refuse(400, "malformed Content-Length");
      if (length && *length != *v) return Refuse(400, "conflicting Content-Length headers");
      length = v;
    } else if (name == "transfer-encoding") {
      return Refuse(501, "Transfer-Encoding (chunked bodies) is not supported: send Content-Length");
    } else if (name == "connection") {
      close = close || HasToken(value, "close");
      keep = keep || HasToken(value, "keep-alive");
    } else if (name == "expect") {
      if (Lower(value) != "100-continue") return Refuse(417, "only 'Expect: 100-continue' is understood");
      r.expect_continue = true;
    }
  }
  r.content_length = length.value_or(0);
  r.keep_alive = !close && (r.minor_version == 1 || keep);
  if (r.content_length > max_body) {
    return Refuse(413, fmt::format("a body of {} bytes is over the {} byte limit", r.content_length, max_body));
  }
  return std::nullopt;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string_view HttpRequest::Header(std::string_view name) const {
  std::string lower = Lower(name);
  for (const auto& h : headers) {
    if (h.first == lower) return h.second;
  }
  return {};
}

std::optional<std::string> HttpRequest::QueryParam(std::string_view name) const {
  std::string_view rest = query;
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view item = rest.substr(0, amp);
    size_t eq = item.find('=');
    auto key = PercentDecode(item.substr(0, eq));
    if (key && *key == name) {
      return eq == std::string_view::npos ? std::string() : PercentDecode(item.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::optional<std::string> PercentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c != '%') {
      out.push_back(c);
    } else {
      if (i + 2 >= text.size()) return std::nullopt;
      int hi = HexValue(text[i + 1]), lo = HexValue(text[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    }
  }
  return out;
}

HttpHeadParse ParseHttpHead(std::string_view input, size_t max_head_bytes, uint64_t max_body) {
  size_t end = input.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (input.size() > max_head_bytes) return Refuse(431, "request head too large");
    return {};
  }
  const size_t head_bytes = end + 4;
  if (head_bytes > max_head_bytes) return Refuse(431, "request head too large");
  std::string_view head = input.substr(0, end + 2);  // every line ends in CRLF
  HttpHeadParse p;
  bool first = true;
  while (!head.empty()) {
    size_t eol = head.find("\r\n");
    std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    // A bare CR or LF inside a line is how request smuggling starts: refuse it.
    if (line.find_first_of("\r\n") != std::string_view::npos) return Refuse(400, "bare CR or LF in the head");
    if (line.empty()) return Refuse(400, "empty line before the request line");
    auto refused = first ? ParseRequestLine(line, p.request) : ParseHeaderLine(line, p.request);
    if (refused) return std::move(*refused);
    first = false;
  }
  if (auto refused = ApplyFramingHeaders(p.request, max_body)) return std::move(*refused);
  p.state = State::kComplete;
  p.head_bytes = head_bytes;
  return p;
}

std::string_view HttpReasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string FormatHttpResponse(const HttpResponse& response, bool close, bool head_only) {
  return fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n{}", response.status,
                     HttpReasonPhrase(response.status), response.content_type, response.body.size(),
                     close ? "Connection: close\r\n" : "", head_only ? std::string_view() : response.body);
}

}  // namespace weft::net
