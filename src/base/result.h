// Result<T> is public, beside Status: include/weft/status.h. This header keeps the internal
// spelling working and adds the fmt-based Error() helpers of base/status.h.
#pragma once

#include "base/status.h"
