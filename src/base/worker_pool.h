// A fixed set of threads running queued tasks: the engine splits large copies over one, the
// transfer engine runs batches on one. Shared by the layers, so it lives in base.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace weft {

class WorkerPool {
 public:
  explicit WorkerPool(unsigned threads);
  ~WorkerPool();  // finishes queued tasks, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Submit(std::function<void()> task);
  unsigned size() const { return static_cast<unsigned>(threads_.size()); }

  // Tasks waiting for a thread, and threads running one: the pool's queue depth and use, for
  // the metrics (a queue that stays long says the threads are too few for the work).
  struct Load {
    size_t queued = 0;
    unsigned running = 0;
  };
  Load load() const;

 private:
  void Run();
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  unsigned running_ = 0;  // under mu_
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace weft
