#include "base/node_identity.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

#include <fmt/format.h>

namespace weft {

std::string NodeIdentity() {
  if (const char* id = std::getenv("WEFT_NODE_ID"); id && *id) return id;
  std::string boot;
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::getline(in, boot);
  struct stat st {};
  uint64_t netns = ::stat("/proc/self/ns/net", &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
  return fmt::format("{}/{}", boot.empty() ? "unknown-boot" : boot, netns);
}

}  // namespace weft
