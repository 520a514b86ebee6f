// The inside of a TransferEngine for weft's own tests and tools: a transport registry and the
// metrics registry are internal types, so the public header (include/weft/transfer_engine.h)
// names neither.
#pragma once

#include <memory>

#include <weft/transfer_engine.h>

#include "base/metrics.h"
#include "transport/registry.h"

namespace weft::trans {

struct TransferEngineAccess {
  // TransferEngine::Create with the transports taken from `registry` in place of this build's
  // (engine/builtin_transports.h); null: this build's.
  static Result<std::unique_ptr<TransferEngine>> Create(const TransferEngineOptions& options,
                                                        const transport::Registry* registry);
  static MetricsRegistry& Metrics(TransferEngine& engine);
};

}  // namespace weft::trans
