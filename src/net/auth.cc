#include "net/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/random.h>

#include <cstring>

#include "net/tcp_socket.h"

namespace weft::net {

namespace {

constexpr std::string_view kLabel = "weft-auth-v1";

void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t GetU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t GetU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

Status FreshNonce(std::array<uint8_t, kAuthNonceSize>& out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) == 1) return OkStatus();
  // OpenSSL's generator failed; the kernel's is as good.
  if (getrandom(out.data(), out.size(), 0) == static_cast<ssize_t>(out.size())) return OkStatus();
  return Error(Code::kInternal, "no random bytes for an authentication nonce");
}

// magic, version, flags; PROTOCOL if they are not ours.
Status CheckPreamble(const uint8_t* p, std::string_view what, uint16_t& flags) {
  uint32_t magic = GetU32(p);
  uint16_t version = GetU16(p + 4);
  flags = GetU16(p + 6);
  if (magic != kAuthMagic)
    return Error(Code::kProtocol, "{}: bad magic {:#010x}: not a weft data-plane peer", what, magic);
  if (version != kAuthVersion)
    return Error(Code::kProtocol, "{}: authentication version {} is not supported (this build speaks {})", what,
                 version, kAuthVersion);
  if (flags & ~kAuthFlagNoSecret) return Error(Code::kProtocol, "{}: unknown flags {:#x}", what, flags);
  return OkStatus();
}

uint16_t OwnFlags(const AuthOptions& o) { return o.cluster_secret.empty() ? kAuthFlagNoSecret : 0; }

std::string MismatchHint(bool we_have_none, bool they_have_none) {
  if (we_have_none && they_have_none) return "neither side has a cluster secret";  // cannot mismatch; defensive
  if (we_have_none) return "this side has no cluster secret but the peer has one: set WEFT_CLUSTER_SECRET";
  if (they_have_none) return "the peer has no cluster secret: set WEFT_CLUSTER_SECRET on it";
  return "the two sides have different cluster secrets (WEFT_CLUSTER_SECRET)";
}

}  // namespace

std::array<uint8_t, kAuthMacSize> AuthMac(std::string_view secret, char role, std::span<const uint8_t> nonce_c,
                                          std::span<const uint8_t> nonce_s) {
  uint8_t msg[kLabel.size() + 1 + 2 * kAuthNonceSize];
  std::memcpy(msg, kLabel.data(), kLabel.size());
  msg[kLabel.size()] = static_cast<uint8_t>(role);
  std::memset(msg + kLabel.size() + 1, 0, 2 * kAuthNonceSize);
  std::memcpy(msg + kLabel.size() + 1, nonce_c.data(), std::min(nonce_c.size(), kAuthNonceSize));
  std::memcpy(msg + kLabel.size() + 1 + kAuthNonceSize, nonce_s.data(), std::min(nonce_s.size(), kAuthNonceSize));
  std::array<uint8_t, kAuthMacSize> out{};
  unsigned int out_len = 0;
  // An empty key is valid for HMAC; a null key pointer is not, so pass a dummy address.
  static const uint8_t kEmpty = 0;
  const void* key = secret.empty() ? static_cast<const void*>(&kEmpty) : secret.data();
  if (!HMAC(EVP_sha256(), key, static_cast<int>(secret.size()), msg, sizeof msg, out.data(), &out_len) ||
      out_len != out.size()) {
    // Never happens with SHA-256; make the MAC unmatchable rather than predictable.
    (void)RAND_bytes(out.data(), static_cast<int>(out.size()));
  }
  OPENSSL_cleanse(msg, sizeof msg);
  return out;
}

Status CheckAuthPolicy(const AuthOptions& options) {
  if (options.cluster_secret.empty() && !options.allow_unauthenticated) {
    return Error(Code::kUnauthenticated,
                 "no cluster secret is configured: set WEFT_CLUSTER_SECRET (config key cluster_secret) to the same "
                 "value on every peer, or explicitly allow unauthenticated peers");
  }
  return OkStatus();
}

ServerHandshake::~ServerHandshake() {
  OPENSSL_cleanse(nonce_c_.data(), nonce_c_.size());
  OPENSSL_cleanse(nonce_s_.data(), nonce_s_.size());
}

Result<std::array<uint8_t, kAuthServerHelloSize>> ServerHandshake::OnHello(std::span<const uint8_t> hello) {
  if (hello.size() != kAuthHelloSize)
    return Error(Code::kProtocol, "client hello is {} bytes, expected {}", hello.size(), kAuthHelloSize);
  uint16_t flags = 0;
  WEFT_RETURN_IF_ERROR(CheckPreamble(hello.data(), "client hello", flags));
  client_no_secret_ = (flags & kAuthFlagNoSecret) != 0;
  std::memcpy(nonce_c_.data(), hello.data() + 8, kAuthNonceSize);
  WEFT_RETURN_IF_ERROR(FreshNonce(nonce_s_));
  std::array<uint8_t, kAuthServerHelloSize> out{};
  PutU32(out.data(), kAuthMagic);
  PutU16(out.data() + 4, kAuthVersion);
  PutU16(out.data() + 6, OwnFlags(*options_));
  std::memcpy(out.data() + 8, nonce_s_.data(), kAuthNonceSize);
  auto mac = AuthMac(options_->cluster_secret, 'S', nonce_c_, nonce_s_);
  std::memcpy(out.data() + 8 + kAuthNonceSize, mac.data(), kAuthMacSize);
  have_hello_ = true;
  return out;
}

Status ServerHandshake::OnProof(std::span<const uint8_t> proof) {
  if (!have_hello_) return Error(Code::kProtocol, "authentication proof before the hello");
  if (proof.size() != kAuthProofSize)
    return Error(Code::kProtocol, "authentication proof is {} bytes, expected {}", proof.size(), kAuthProofSize);
  Status policy = CheckAuthPolicy(*options_);
  auto expect = AuthMac(options_->cluster_secret, 'C', nonce_c_, nonce_s_);
  bool match = CRYPTO_memcmp(expect.data(), proof.data(), kAuthMacSize) == 0;
  OPENSSL_cleanse(expect.data(), expect.size());
  if (!policy.ok()) return policy;
  if (!match) {
    return Error(Code::kUnauthenticated, "the client did not prove knowledge of the cluster secret: {}",
                 MismatchHint(options_->cluster_secret.empty(), client_no_secret_));
  }
  return OkStatus();
}

std::array<uint8_t, kAuthResultSize> ServerHandshake::ResultBytes(Code code) {
  std::array<uint8_t, kAuthResultSize> out{};
  PutU32(out.data(), static_cast<uint32_t>(code));
  return out;
}

Status AuthenticateClient(int fd, const AuthOptions& options, Deadline deadline, std::string_view peer) {
  WEFT_RETURN_IF_ERROR(CheckAuthPolicy(options));
  std::array<uint8_t, kAuthNonceSize> nonce_c{};
  WEFT_RETURN_IF_ERROR(FreshNonce(nonce_c));
  uint8_t hello[kAuthHelloSize];
  PutU32(hello, kAuthMagic);
  PutU16(hello + 4, kAuthVersion);
  PutU16(hello + 6, OwnFlags(options));
  std::memcpy(hello + 8, nonce_c.data(), kAuthNonceSize);
  auto annotate = [&](const Status& s) { return s.Annotate(fmt::format("authenticating to {}", peer)); };
  Status s = SendAllTcp(fd, hello, sizeof hello, deadline, peer);
  if (!s.ok()) return annotate(s);
  uint8_t sh[kAuthServerHelloSize];
  s = RecvAllTcp(fd, sh, sizeof sh, deadline, peer);
  if (!s.ok()) return annotate(s);
  uint16_t flags = 0;
  s = CheckPreamble(sh, "server hello", flags);
  if (!s.ok()) return annotate(s);
  std::span<const uint8_t> nonce_s(sh + 8, kAuthNonceSize);
  auto expect = AuthMac(options.cluster_secret, 'S', nonce_c, nonce_s);
  bool match = CRYPTO_memcmp(expect.data(), sh + 8 + kAuthNonceSize, kAuthMacSize) == 0;
  OPENSSL_cleanse(expect.data(), expect.size());
  if (!match) {
    return Error(Code::kUnauthenticated, "the server at {} did not prove knowledge of the cluster secret: {}", peer,
                 MismatchHint(options.cluster_secret.empty(), (flags & kAuthFlagNoSecret) != 0));
  }
  auto proof = AuthMac(options.cluster_secret, 'C', nonce_c, nonce_s);
  s = SendAllTcp(fd, proof.data(), proof.size(), deadline, peer);
  OPENSSL_cleanse(proof.data(), proof.size());
  if (!s.ok()) return annotate(s);
  uint8_t result[kAuthResultSize];
  s = RecvAllTcp(fd, result, sizeof result, deadline, peer);
  if (!s.ok()) return annotate(s);
  uint32_t code = GetU32(result);
  if (code == 0) return OkStatus();
  if (code == static_cast<uint32_t>(Code::kUnauthenticated))
    return Error(Code::kUnauthenticated, "the server at {} refused our proof of the cluster secret: {}", peer,
                 MismatchHint(options.cluster_secret.empty(), (flags & kAuthFlagNoSecret) != 0));
  return Error(Code::kProtocol, "the server at {} answered the handshake with unknown result {}", peer, code);
}

Status AuthenticateServer(int fd, const AuthOptions& options, Deadline deadline, std::string_view peer) {
  ServerHandshake hs(&options);
  uint8_t hello[kAuthHelloSize];
  WEFT_RETURN_IF_ERROR(RecvAllTcp(fd, hello, sizeof hello, deadline, peer));
  WEFT_ASSIGN_OR_RETURN(auto sh, hs.OnHello(hello));
  WEFT_RETURN_IF_ERROR(SendAllTcp(fd, sh.data(), sh.size(), deadline, peer));
  uint8_t proof[kAuthProofSize];
  WEFT_RETURN_IF_ERROR(RecvAllTcp(fd, proof, sizeof proof, deadline, peer));
  Status verdict = hs.OnProof(proof);
  auto result = ServerHandshake::ResultBytes(verdict.ok() ? Code::kOk : Code::kUnauthenticated);
  Status s = SendAllTcp(fd, result.data(), result.size(), deadline, peer);
  if (!verdict.ok()) return verdict;
  return s;
}

}  // namespace weft::net
