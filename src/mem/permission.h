// What a holder of a segment may do with it: the host segment's own protection and the access
// table's per-segment grant use the same bits.
#pragma once

#include <cstdint>

namespace weft::mem {

enum Permission : uint32_t { kRead = 1u << 0, kWrite = 1u << 1, kReadWrite = kRead | kWrite };

}  // namespace weft::mem
