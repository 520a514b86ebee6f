// Whether the ucx transport can run here over UCX's tcp (UCX's headers at build time and a
// loadable libucp now); when not, *why says so, for the test's skip message.
#pragma once

#include <string>

#if WEFT_HAVE_UCX
#include "transport/ucx/ucx_transport.h"
#endif

namespace weft::testing {

inline bool UcxRunsHere(std::string* why) {
#if WEFT_HAVE_UCX
  transport::ucx::UcxOptions options;
  options.tls = "tcp";
  auto probe = transport::ucx::UcxTransport::Create(options);
  if (!probe.ok()) *why = probe.status().ToString();
  return probe.ok();
#else
  *why = "this build has no UCX headers (libucx-dev)";
  return false;
#endif
}

}  // namespace weft::testing
