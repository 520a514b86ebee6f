// The GVA windows of the pools alive in this process: [base, end) per pool, claimed while the
// pool exists. A binding that takes bare integers as addresses (Python) asks it whether an int
// is meant as a GVA (inside some pool's window: the engine checks it) or as a local pointer
// (which it must then prove mapped before anything dereferences it). Header-only: the state
// is inline, one instance per shared object that links the pool.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

namespace weft::gva {

class LiveWindows {
 public:
  struct Window {
    uint64_t base, end;
    uint64_t id;
  };

  // Held by a pool for as long as its window is alive.
  class Claim {
   public:
    Claim() = default;
    Claim(uint64_t base, uint64_t end) : id_(Add(base, end)) {}
    Claim(Claim&& o) noexcept : id_(o.id_) { o.id_ = 0; }
    Claim& operator=(Claim&& o) noexcept {
      if (this != &o) {
        Remove(id_);
        id_ = o.id_;
        o.id_ = 0;
      }
      return *this;
    }
    ~Claim() { Remove(id_); }

   private:
    uint64_t id_ = 0;
  };

  // Whether addr lies in the window of a pool alive in this process.
  static bool Contains(uint64_t addr) {
    std::lock_guard lock(mu());
    for (const Window& w : windows())
      if (addr >= w.base && addr < w.end) return true;
    return false;
  }

 private:
  static uint64_t Add(uint64_t base, uint64_t end) {
    std::lock_guard lock(mu());
    static uint64_t next = 0;
    const uint64_t id = ++next;
    windows().push_back({base, end, id});
    return id;
  }
  static void Remove(uint64_t id) noexcept {
    if (id == 0) return;
    std::lock_guard lock(mu());
    auto& ws = windows();
    for (size_t i = 0; i < ws.size(); ++i)
      if (ws[i].id == id) {
        ws.erase(ws.begin() + static_cast<std::ptrdiff_t>(i));
        return;
      }
  }
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::vector<Window>& windows() {
    static std::vector<Window> w;
    return w;
  }
};

}  // namespace weft::gva
