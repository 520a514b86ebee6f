#include "tools/weft/bench_coll_gloo.h"

#if WEFT_HAVE_GLOO
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoall.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/reduce.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/transport/tcp/device.h>
#endif

namespace weft::tools::coll {

#if WEFT_HAVE_GLOO
namespace {

class Gloo final : public GlooBaseline {
 public:
  explicit Gloo(std::shared_ptr<gloo::rendezvous::Context> context) : context_(std::move(context)) {}

  bool Supports(std::string_view c) const override {
    return c == "allreduce" || c == "allgather" || c == "broadcast" || c == "alltoall" || c == "reduce";
  }

  Status Run(std::string_view c, const float* send, float* recv, uint64_t count) override {
    try {
      RunUnchecked(c, const_cast<float*>(send), recv, count);
      return OkStatus();
    } catch (const std::exception& e) {  // gloo reports failures by exception
      return Error(Code::kIo, "gloo {}: {}", c, e.what());
    }
  }

  Status Barrier() override {
    try {
      gloo::BarrierOptions opts(context_);
      opts.setTag(++tag_);
      gloo::barrier(opts);
      return OkStatus();
    } catch (const std::exception& e) {
      return Error(Code::kIo, "gloo barrier: {}", e.what());
    }
  }

 private:
  using ReduceFn = void (*)(void*, const void*, const void*, size_t);

  void RunUnchecked(std::string_view c, float* send, float* recv, uint64_t count) {
    const size_t n = static_cast<size_t>(context_->size);
    if (c == "allreduce") {
      gloo::AllreduceOptions opts(context_);
      opts.setInput(send, count);
      opts.setOutput(recv, count);
      opts.setReduceFunction(static_cast<ReduceFn>(&gloo::sum<float>));
      opts.setTag(++tag_);
      gloo::allreduce(opts);
    } else if (c == "allgather") {
      gloo::AllgatherOptions opts(context_);
      opts.setInput(send, count);
      opts.setOutput(recv, count * n);
      opts.setTag(++tag_);
      gloo::allgather(opts);
    } else if (c == "broadcast") {
      gloo::BroadcastOptions opts(context_);
      opts.setOutput(recv, count);
      opts.setRoot(0);
      opts.setTag(++tag_);
      gloo::broadcast(opts);
    } else if (c == "alltoall") {
      gloo::AlltoallOptions opts(context_);
      opts.setInput(send, count * n);
      opts.setOutput(recv, count * n);
      opts.setTag(++tag_);
      gloo::alltoall(opts);
    } else if (c == "reduce") {
      gloo::ReduceOptions opts(context_);
      opts.setInput(send, count);
      opts.setOutput(recv, count);
      opts.setRoot(0);
      opts.setReduceFunction(static_cast<ReduceFn>(&gloo::sum<float>));
      opts.setTag(++tag_);
      gloo::reduce(opts);
    }
  }

  std::shared_ptr<gloo::rendezvous::Context> context_;
  uint32_t tag_ = 0;
};

}  // namespace

Result<std::unique_ptr<GlooBaseline>> GlooBaseline::Connect(int rank, int size, const std::string& dir) {
  try {
    gloo::transport::tcp::attr attr("127.0.0.1");
    auto device = gloo::transport::tcp::CreateDevice(attr);
    gloo::rendezvous::FileStore store(dir);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    context->connectFullMesh(store, device);
    return std::unique_ptr<GlooBaseline>(new Gloo(std::move(context)));
  } catch (const std::exception& e) {
    return Error(Code::kIo, "gloo rendezvous in {}: {}", dir, e.what());
  }
}

#else

Result<std::unique_ptr<GlooBaseline>> GlooBaseline::Connect(int, int, const std::string&) {
  return Error(Code::kNotSupported, "this build has no gloo (install libgloo-dev and reconfigure)");
}

#endif

}  // namespace weft::tools::coll
