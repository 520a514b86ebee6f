// K hosts as network namespaces joined by veth pairs to a bridge (in a namespace of its own),
// for `weft demo --nodes K`. Needs root and iproute2; removes everything it made on destruction.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/result.h"

namespace weft::tools {

class NetnsTopology {
 public:
  // Hosts 1..k get addresses 10.79.0.1 .. 10.79.0.k inside their own namespaces only. The
  // namespaces are named <prefix><pid>br and <prefix><pid>h<host>, so that a tool's can be told
  // from another's (`weft demo`: wd, `weft soak`: ws).
  static Result<std::unique_ptr<NetnsTopology>> Create(int k, const std::string& prefix = "wd");
  ~NetnsTopology();  // Remove()

  // Deletes every namespace it made; idempotent and safe from another thread (an interrupted
  // demo cleans up from its signal thread while the main thread may be anywhere).
  void Remove();

  std::string Namespace(int host) const;   // host in 1..k
  std::string Address(int host) const;     // "10.79.0.<host>"
  // Moves the calling thread (and the threads it starts later) into the host's namespace.
  Status Enter(int host) const;
  // Takes the host's link to the bridge down or back up (its bridge-side veth end, so the host
  // sees nothing but silence: connections go half-open, as when a cable is pulled).
  Status SetLink(int host, bool up) const;

 private:
  NetnsTopology() = default;
  std::string tag_;
  std::mutex mu_;  // guards created_ for Remove()
  std::vector<std::string> created_;
};

}  // namespace weft::tools
