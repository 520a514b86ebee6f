// Peer authentication for data-plane connections: a mutual HMAC-SHA256 challenge-response over
// a cluster secret that every peer of a fabric knows (config key cluster_secret, env
// WEFT_CLUSTER_SECRET). The secret never travels and never appears in a log line or a Status.
//
// Handshake (all little-endian; the client speaks first):
//   1. client -> server  ClientHello  magic u32 "WFTA", version u16 = 1, flags u16, nonce_c[32]
//   2. server -> client  ServerHello  magic u32, version u16, flags u16, nonce_s[32],
//                                     mac_s[32] = HMAC(secret, "weft-auth-v1" || 'S' || nonce_c || nonce_s)
//   3. client: checks mac_s in constant time (CRYPTO_memcmp); on mismatch it closes: the server
//      does not know our secret (UNAUTHENTICATED).
//      client -> server  Proof        mac_c[32] = HMAC(secret, "weft-auth-v1" || 'C' || nonce_c || nonce_s)
//   4. server: checks mac_c in constant time.
//      server -> client  Result       code i32 (0 = accepted, 14 = UNAUTHENTICATED); on refusal
//      the server closes the connection.
// flags bit 0 means "the sender has no secret" (used only to word the error message).
//
// Both nonces are fresh (RAND_bytes) on every connection and both MACs cover both nonces and
// the role, so a recorded handshake cannot be replayed and one side's proof cannot be reflected
// back as the other's. The handshake authenticates the connection at its start only: the bytes
// that follow are not encrypted or integrity-protected (see docs/tcp.md, security model).
//
// An empty secret is refused with UNAUTHENTICATED unless AuthOptions::allow_unauthenticated is
// set; then the HMAC key is empty, which only a peer that also has an empty secret matches.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <weft/auth.h>

#include "base/clock.h"
#include "base/status.h"

namespace weft::net {

using weft::AuthOptions;  // public (include/weft/auth.h): the transfer engine takes it

inline constexpr uint32_t kAuthMagic = 0x41544657;  // the bytes "WFTA"
inline constexpr uint16_t kAuthVersion = 1;
inline constexpr size_t kAuthNonceSize = 32;
inline constexpr size_t kAuthMacSize = 32;
inline constexpr size_t kAuthHelloSize = 8 + kAuthNonceSize;                  // 40
inline constexpr size_t kAuthServerHelloSize = 8 + kAuthNonceSize + kAuthMacSize;  // 72
inline constexpr size_t kAuthProofSize = kAuthMacSize;                       // 32
inline constexpr size_t kAuthResultSize = 4;
inline constexpr uint16_t kAuthFlagNoSecret = 1;

// UNAUTHENTICATED (saying to set WEFT_CLUSTER_SECRET) when the secret is empty and that is not
// explicitly allowed.
Status CheckAuthPolicy(const AuthOptions& options);

// The server's half as a state machine for an event loop. `options` must outlive the object.
class ServerHandshake {
 public:
  explicit ServerHandshake(const AuthOptions* options) : options_(options) {}
  ~ServerHandshake();

  // Step 2: the client's hello (exactly kAuthHelloSize bytes) -> the ServerHello to send.
  // PROTOCOL for a malformed hello.
  Result<std::array<uint8_t, kAuthServerHelloSize>> OnHello(std::span<const uint8_t> hello);
  // Step 4: OK or UNAUTHENTICATED (the message never contains the secret).
  Status OnProof(std::span<const uint8_t> proof);
  // The Result message for an outcome.
  static std::array<uint8_t, kAuthResultSize> ResultBytes(Code code);
  bool client_has_no_secret() const { return client_no_secret_; }

 private:
  const AuthOptions* options_;
  std::array<uint8_t, kAuthNonceSize> nonce_c_{};
  std::array<uint8_t, kAuthNonceSize> nonce_s_{};
  bool have_hello_ = false;
  bool client_no_secret_ = false;
};

// The client's half, blocking on fd (a connected socket) until the deadline. OK when both sides
// proved the secret; UNAUTHENTICATED when either side's proof fails (the caller closes fd);
// PEER_DOWN/TIMEOUT/IO for transport failures; PROTOCOL if the server is not a weft data server.
Status AuthenticateClient(int fd, const AuthOptions& options, Deadline deadline, std::string_view peer);

// The server's half, blocking (for simple servers and tests; TcpServer uses ServerHandshake).
Status AuthenticateServer(int fd, const AuthOptions& options, Deadline deadline, std::string_view peer);

// HMAC-SHA256(secret, "weft-auth-v1" || role || nonce_c || nonce_s); exposed for tests.
std::array<uint8_t, kAuthMacSize> AuthMac(std::string_view secret, char role, std::span<const uint8_t> nonce_c,
                                          std::span<const uint8_t> nonce_s);

}  // namespace weft::net
