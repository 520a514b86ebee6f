// Fuzzes the embedded directory server's request decoder (DecodeDirectoryRequest) and the
// base64 codec under it. The first input byte picks the API path, the rest is the body.
// Properties: decoding never crashes; a failure is PROTOCOL (NOT_FOUND only for the unknown
// path); a decoded request encodes to a body that decodes to the same request; base64 decoding
// is canonical (what decodes re-encodes to the same text).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "meta/base64.h"
#include "meta/directory_server.h"

using weft::Code;
using weft::meta::DirectoryRequest;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using Op = DirectoryRequest::Op;
  static constexpr Op kOps[] = {Op::kGet,  Op::kPut,   Op::kPutIfAbsent, Op::kDelete, Op::kList,
                                Op::kGrant, Op::kKeepAlive, Op::kRevoke, Op::kWatch};
  constexpr size_t kCount = sizeof kOps / sizeof kOps[0];
  size_t pick = data[0] % (kCount + 1);
  std::string path = pick < kCount ? std::string(weft::meta::DirectoryRequestPath(kOps[pick])) : "/v1/kv/unknown";
  std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);

  auto r = weft::meta::DecodeDirectoryRequest("POST", path, body);
  if (!r.ok()) {
    Code want = pick < kCount ? Code::kProtocol : Code::kNotFound;
    if (r.status().code() != want) __builtin_trap();
  } else {
    if (DirectoryRequestPath(r->op) != path) __builtin_trap();
    std::string again = weft::meta::EncodeDirectoryRequest(*r);
    auto twice = weft::meta::DecodeDirectoryRequest("POST", path, again);
    if (!twice.ok() || !(*twice == *r)) __builtin_trap();
  }

  auto b = weft::meta::Base64Decode(body);
  if (b.ok()) {
    if (weft::meta::Base64Encode(*b) != body) __builtin_trap();
  } else if (b.status().code() != Code::kProtocol) {
    __builtin_trap();
  }
  return 0;
}
