// Which node this process runs on, as same-node transports compare it: the kernel's boot id
// and the network namespace. Two processes in different network namespaces count as two nodes
// (as in the multi-host tests), even on one machine; WEFT_NODE_ID overrides it.
#pragma once

#include <string>

namespace weft {

std::string NodeIdentity();

}  // namespace weft
