#include "transport/transport.h"

namespace weft::transport {

const char* EndKindName(EndKind k) {
  switch (k) {
    case EndKind::kLH: return "LH";
    case EndKind::kLD: return "LD";
    case EndKind::kGH: return "GH";
    case EndKind::kGD: return "GD";
  }
  return "?";
}

const char* LocalityName(Locality l) {
  switch (l) {
    case Locality::kSameProcess: return "same process";
    case Locality::kSameNode: return "same node";
    case Locality::kRemoteNode: return "remote node";
  }
  return "?";
}

}  // namespace weft::transport
