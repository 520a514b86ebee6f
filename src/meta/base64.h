// Standard base64 (RFC 4648, with '=' padding), for the etcd JSON gateway and weft's own
// directory JSON API, which both carry keys and values as base64 so any bytes survive JSON.
// Written by hand: the standard library has none, and the Debian candidates (libb64, OpenSSL's
// EVP_EncodeBlock) are either unmaintained or pull in a crypto library for twenty lines.
#pragma once

#include <string>
#include <string_view>

#include "base/result.h"

namespace weft::meta {

std::string Base64Encode(std::string_view bytes);
// Strict: the length must be a multiple of 4, padding only at the end, no whitespace, and the
// unused low bits of the last symbol must be zero (so every byte string has one encoding).
// PROTOCOL otherwise.
Result<std::string> Base64Decode(std::string_view text);

}  // namespace weft::meta
