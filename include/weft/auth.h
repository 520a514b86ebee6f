// Who may connect to a peer's data endpoint (public): the cluster secret every peer of a fabric
// shares. The handshake that checks it is internal (src/net/auth.h).
#pragma once

#include <string>

namespace weft {

struct AuthOptions {
  std::string cluster_secret;          // never logged or put in a message
  bool allow_unauthenticated = false;  // an empty secret is accepted only when this is set
};

}  // namespace weft
