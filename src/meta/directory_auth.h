// Who may change the embedded directory (DirectoryServer): a request that writes or deletes proves
// the cluster secret (when the server has one) with an HMAC in a header, and a key held under a
// lease may be changed only by a request that names that lease (MemoryStore::PutAsOwner).
//
// The proof, header X-Weft-Auth, value "v1 <unix_ms> <nonce> <mac>":
//   unix_ms  the sender's wall clock in milliseconds since the epoch (decimal);
//   nonce    32 hex digits, fresh random bytes for every request;
//   mac      64 hex digits, HMAC-SHA256(secret, "weft-dir-v1" then each of method, path, key,
//            hex SHA-256 of the body, unix_ms and nonce as "<length>:<bytes>").
// The key is the one the request names (in the JSON body for /v1, the `key` query parameter for
// /metadata), so a proof is good for one method, one path, one key and one body. The server
// accepts a unix_ms within max_skew of its own clock and each nonce once while it is that fresh,
// so a recorded request cannot be replayed. The secret never travels and never appears in a
// log line or a Status. Nothing here encrypts: values stay readable to whoever can read the
// directory, and reads are not authenticated (docs/directory.md, "Who may write").
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_set>

#include "base/result.h"

namespace weft::meta {

inline constexpr std::string_view kDirectoryAuthHeader = "X-Weft-Auth";

// What a proof covers.
struct SignedRequest {
  std::string_view method;  // "POST", "PUT", "DELETE"
  std::string_view path;    // "/v1/kv/put", "/metadata" (no query)
  std::string_view key;     // the key the request changes ("" for lease calls)
  std::string_view body;
};

using WallClock = std::chrono::system_clock;

// The X-Weft-Auth value for a request, at `now` with a fresh nonce. INTERNAL when no random bytes
// can be had (never in practice).
Result<std::string> SignDirectoryRequest(std::string_view secret, const SignedRequest& request,
                                         WallClock::time_point now = WallClock::now());

// The server's half: checks proofs against one secret and remembers the nonces it accepted.
// Not thread-safe (DirectoryServer calls it from its loop thread only).
class DirectoryAuthenticator {
 public:
  // max_nonces bounds the memory of accepted nonces; past it new proofs are refused BUSY until
  // old ones age out (a flood of signed writes is a holder of the secret misbehaving).
  DirectoryAuthenticator(std::string secret, std::chrono::milliseconds max_skew, size_t max_nonces = 1u << 18);
  ~DirectoryAuthenticator();
  DirectoryAuthenticator(const DirectoryAuthenticator&) = delete;
  DirectoryAuthenticator& operator=(const DirectoryAuthenticator&) = delete;

  // OK for a good, fresh, first-seen proof. UNAUTHENTICATED (the message says why, never the
  // secret) for a missing, malformed, wrong, stale or replayed one; BUSY when the nonce memory is full.
  Status Check(std::string_view header, const SignedRequest& request, WallClock::time_point now = WallClock::now());

 private:
  void Forget(int64_t now_ms);

  std::string secret_;
  int64_t max_skew_ms_;
  size_t max_nonces_;
  std::unordered_set<std::string> seen_;
  std::deque<std::pair<int64_t, std::string>> by_age_;  // (unix_ms of the proof, nonce), oldest first
};

// 63 random bits from the OS's generator (never 0): lease ids no one can guess or derive from the
// ids they were given themselves.
Result<int64_t> UnguessableId();

}  // namespace weft::meta
