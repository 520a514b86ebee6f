// The registry entries of the transports this build has (transport/registry.h): memcpy, shm,
// cma, tcp and, in a CUDA build, cuda. A fresh registry each call: callers may add their own.
#pragma once

#include "transport/registry.h"

namespace weft::engine {

transport::Registry BuiltinTransports();

}  // namespace weft::engine
