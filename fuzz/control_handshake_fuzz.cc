// Fuzzes what a tcp:// coordinator reads from an unauthenticated connection: the client hello
// and proof (net::ServerHandshake, driven as the coordinator's loop drives it), and the
// coordinator address parser (config input). Neither may crash, and a hello or proof that is
// not exactly right must never be accepted.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "net/auth.h"
#include "net/control_stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  (void)weft::net::ParseControlAddress(std::string_view(reinterpret_cast<const char*>(data), size));

  weft::net::AuthOptions options{"fuzz-secret", false};
  weft::net::ServerHandshake hs(&options);
  const size_t hello_len = std::min(in.size(), weft::net::kAuthHelloSize);
  auto hello = hs.OnHello(in.subspan(0, hello_len));
  if (!hello.ok()) return 0;
  auto rest = in.subspan(hello_len);
  weft::Status proof = hs.OnProof(rest.subspan(0, std::min(rest.size(), weft::net::kAuthProofSize)));
  // The proof is an HMAC over a nonce fresh from this very call: random bytes cannot match it.
  if (proof.ok()) __builtin_trap();
  return 0;
}
