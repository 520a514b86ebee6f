#include "meta/directory_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/random.h>

#include <charconv>
#include <cstring>

#include <fmt/format.h>

namespace weft::meta {

namespace {

constexpr std::string_view kLabel = "weft-dir-v1";
constexpr size_t kNonceBytes = 16;
constexpr size_t kMacBytes = 32;

Status RandomBytes(uint8_t* out, size_t n) {
  if (RAND_bytes(out, static_cast<int>(n)) == 1) return OkStatus();
  // OpenSSL's generator failed; the kernel's is as good.
  if (getrandom(out, n, 0) == static_cast<ssize_t>(n)) return OkStatus();
  return Error(Code::kInternal, "no random bytes from the OS");
}

std::string Hex(const uint8_t* p, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[p[i] >> 4];
    out[2 * i + 1] = kDigits[p[i] & 15];
  }
  return out;
}

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string BodyDigest(std::string_view body) {
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(body.data(), body.size(), digest, &len, EVP_sha256(), nullptr) != 1) return "-";
  return Hex(digest, len);
}

// "<length>:<bytes>" for each field, so no two different field lists give the same message.
void Field(std::string& msg, std::string_view f) {
  msg += std::to_string(f.size());
  msg += ':';
  msg.append(f);
}

std::string Mac(std::string_view secret, const SignedRequest& r, std::string_view unix_ms, std::string_view nonce) {
  std::string msg(kLabel);
  Field(msg, r.method);
  Field(msg, r.path);
  Field(msg, r.key);
  Field(msg, BodyDigest(r.body));
  Field(msg, unix_ms);
  Field(msg, nonce);
  uint8_t out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  // An empty key is valid for HMAC; a null key pointer is not.
  static const uint8_t kEmpty = 0;
  const void* key = secret.empty() ? static_cast<const void*>(&kEmpty) : secret.data();
  bool ok = HMAC(EVP_sha256(), key, static_cast<int>(secret.size()), reinterpret_cast<const uint8_t*>(msg.data()),
                 msg.size(), out, &len) != nullptr &&
            len == kMacBytes;
  std::string hex = ok ? Hex(out, len) : std::string();  // empty: matches no proof
  OPENSSL_cleanse(out, sizeof out);
  return hex;
}

int64_t UnixMillis(WallClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

struct Proof {
  std::string_view unix_ms_text;
  int64_t unix_ms = 0;
  std::string_view nonce;
  std::string_view mac;
};

Result<Proof> ParseProof(std::string_view header) {
  auto bad = [](const char* why) {
    return Error(Code::kUnauthenticated, "malformed {} header ({})", kDirectoryAuthHeader, why);
  };
  std::string_view parts[4];
  size_t n = 0;
  while (!header.empty() && n < 4) {
    size_t sp = header.find(' ');
    parts[n++] = header.substr(0, sp);
    header = sp == std::string_view::npos ? std::string_view() : header.substr(sp + 1);
  }
  if (n != 4 || !header.empty()) return bad("want 'v1 <unix_ms> <nonce> <mac>'");
  if (parts[0] != "v1") return bad("unknown version");
  Proof p;
  p.unix_ms_text = parts[1];
  auto [end, ec] = std::from_chars(parts[1].data(), parts[1].data() + parts[1].size(), p.unix_ms);
  if (parts[1].empty() || ec != std::errc() || end != parts[1].data() + parts[1].size() || p.unix_ms < 0)
    return bad("bad timestamp");
  p.nonce = parts[2];
  p.mac = parts[3];
  if (p.nonce.size() != 2 * kNonceBytes || !IsLowerHex(p.nonce)) return bad("bad nonce");
  if (p.mac.size() != 2 * kMacBytes || !IsLowerHex(p.mac)) return bad("bad mac");
  return p;
}

}  // namespace

Result<std::string> SignDirectoryRequest(std::string_view secret, const SignedRequest& request,
                                         WallClock::time_point now) {
  uint8_t nonce_bytes[kNonceBytes];
  WEFT_RETURN_IF_ERROR(RandomBytes(nonce_bytes, sizeof nonce_bytes));
  std::string nonce = Hex(nonce_bytes, sizeof nonce_bytes);
  std::string unix_ms = std::to_string(UnixMillis(now));
  std::string mac = Mac(secret, request, unix_ms, nonce);
  return fmt::format("v1 {} {} {}", unix_ms, nonce, mac);
}

DirectoryAuthenticator::DirectoryAuthenticator(std::string secret, std::chrono::milliseconds max_skew,
                                               size_t max_nonces)
    : secret_(std::move(secret)), max_skew_ms_(max_skew.count()), max_nonces_(max_nonces) {}

DirectoryAuthenticator::~DirectoryAuthenticator() { OPENSSL_cleanse(secret_.data(), secret_.size()); }

void DirectoryAuthenticator::Forget(int64_t now_ms) {
  // Oldest first by arrival; a proof is dropped only once its own timestamp is too old to be
  // accepted again, so out-of-order timestamps are kept longer, never shorter.
  while (!by_age_.empty() && by_age_.front().first + max_skew_ms_ < now_ms) {
    seen_.erase(by_age_.front().second);
    by_age_.pop_front();
  }
}

Status DirectoryAuthenticator::Check(std::string_view header, const SignedRequest& request,
                                     WallClock::time_point now) {
  if (header.empty()) {
    return Error(Code::kUnauthenticated,
                 "{} {} changes the directory, which needs the cluster secret: this client sent no proof (set "
                 "WEFT_CLUSTER_SECRET, config key cluster_secret, to the directory's)",
                 request.method, request.path);
  }
  WEFT_ASSIGN_OR_RETURN(Proof p, ParseProof(header));
  std::string expect = Mac(secret_, request, p.unix_ms_text, p.nonce);
  bool match = expect.size() == p.mac.size() && CRYPTO_memcmp(expect.data(), p.mac.data(), expect.size()) == 0;
  OPENSSL_cleanse(expect.data(), expect.size());
  if (!match) {
    return Error(Code::kUnauthenticated,
                 "{} {}: the proof of the cluster secret does not match (a different WEFT_CLUSTER_SECRET, or the "
                 "request was altered)",
                 request.method, request.path);
  }
  const int64_t now_ms = UnixMillis(now);
  if (p.unix_ms < now_ms - max_skew_ms_ || p.unix_ms > now_ms + max_skew_ms_) {
    return Error(Code::kUnauthenticated,
                 "{} {}: the proof is {} ms away from the directory's clock (at most {} ms accepted): an old "
                 "request replayed, or clocks out of sync (NTP)",
                 request.method, request.path, p.unix_ms - now_ms, max_skew_ms_);
  }
  Forget(now_ms);
  std::string nonce(p.nonce);
  if (seen_.count(nonce) != 0) {
    return Error(Code::kUnauthenticated, "{} {}: this proof was used before (a replayed request)", request.method,
                 request.path);
  }
  if (seen_.size() >= max_nonces_) {
    return Error(Code::kBusy, "{} {}: more than {} signed writes within {} ms; try again later", request.method,
                 request.path, max_nonces_, max_skew_ms_);
  }
  seen_.insert(nonce);
  by_age_.emplace_back(p.unix_ms, std::move(nonce));
  return OkStatus();
}

Result<int64_t> UnguessableId() {
  for (;;) {
    uint64_t v = 0;
    WEFT_RETURN_IF_ERROR(RandomBytes(reinterpret_cast<uint8_t*>(&v), sizeof v));
    v &= 0x7fffffffffffffffull;
    if (v != 0) return static_cast<int64_t>(v);
  }
}

}  // namespace weft::meta
