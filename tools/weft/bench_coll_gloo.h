// The baseline of `weft bench-coll` on host memory: gloo (the CPU collectives library under
// torch.distributed's "gloo" backend), over TCP on loopback, the same ranks and buffers.
// Built where CMake finds Gloo (Debian: libgloo-dev, which scripts/install-deps.sh installs).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"

namespace weft::tools::coll {

class GlooBaseline {
 public:
  // Rendezvous through files in `dir` (shared by the ranks of this host). NOT_SUPPORTED in a
  // build without gloo.
  static Result<std::unique_ptr<GlooBaseline>> Connect(int rank, int size, const std::string& dir);
  virtual ~GlooBaseline() = default;
  // Whether gloo has this collective (names as `weft bench-coll` uses them).
  virtual bool Supports(std::string_view collective) const = 0;
  // One call on f32 buffers, shaped as the weft call of the same name (count per rank).
  virtual Status Run(std::string_view collective, const float* send, float* recv, uint64_t count) = 0;
  virtual Status Barrier() = 0;
};

}  // namespace weft::tools::coll
