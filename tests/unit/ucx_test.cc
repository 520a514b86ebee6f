// The ucx transport (transport/ucx/ucx_transport.h) through the region contract, over UCX's tcp
// transport and over what UCX chooses by itself (UCX_TLS per test): two transports of this process, one
// exporting regions, the other posting puts and gets. Skipped, with the reason, where this build
// has no UCX headers or this machine no UCX library.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "base/metrics.h"
#include "base/random.h"
#include "engine/builtin_transports.h"
#include "transport/registry.h"

#if WEFT_HAVE_UCX
#include "transport/tcp/tcp_transport.h"
#include "transport/ucx/ucx_transport.h"
#include "transport/ucx/ucx_worker.h"
#endif

namespace weft::transport {
namespace {

Deadline Soon() { return Deadline::After(std::chrono::seconds(20)); }

// Without UCX the entry is there and says why it is absent; with it, it is created. "auto"
// starts it only where an RDMA NIC is present (this machine lists none under
// /sys/class/infiniband, so the probe says no and auto leaves it out).
TEST(Ucx, RegistryEntrySaysWhyItIsAbsentOrCreatesIt) {
  const Registry registry = engine::BuiltinTransports();
  const RegistryEntry* e = registry.Find("ucx");
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->in_auto);
  ASSERT_TRUE(e->auto_here != nullptr);
  EXPECT_EQ(e->auto_where, "an RDMA NIC is present");
  std::error_code ec;
  const bool nic = std::filesystem::directory_iterator("/sys/class/infiniband", ec) != std::filesystem::directory_iterator();
  EXPECT_EQ(e->auto_here(), !ec && nic);
  auto chosen = registry.Select("auto");
  ASSERT_TRUE(chosen.ok()) << chosen.status().ToString();
  const bool ucx_in_auto = std::any_of(chosen->begin(), chosen->end(), [](auto* c) { return c->name == "ucx"; });
  EXPECT_EQ(ucx_in_auto, e->auto_here());
  auto made = e->create(TransportContext{});
  if (!made.ok()) {
    EXPECT_EQ(made.status().code(), Code::kNotSupported) << made.status().ToString();
    EXPECT_FALSE(made.status().message().empty());
    GTEST_SKIP() << "ucx is absent here: " << made.status().message();
  }
  EXPECT_EQ((*made)->name(), "ucx");
  EXPECT_TRUE((*made)->capabilities() & kCapRegions);
}

// An entry's auto_here probe decides whether "auto" takes it; naming it works either way, and
// the docs' table says where auto takes it.
TEST(Ucx, AutoTakesAnEntryOnlyWhereItsProbeSaysSo) {
  for (bool here : {false, true}) {
    Registry registry = engine::BuiltinTransports();
    RegistryEntry probe{"probe", kCapHostMemory | kCapRemoteNode | kCapRegions, "a test entry", {},
                        [](const TransportContext&) -> Result<std::unique_ptr<Transport>> {
                          return Error(Code::kNotSupported, "never created");
                        }};
    probe.auto_here = [here] { return here; };
    probe.auto_where = "the probe says so";
    ASSERT_TRUE(registry.Add(std::move(probe)).ok());
    auto chosen = registry.Select("auto");
    ASSERT_TRUE(chosen.ok());
    EXPECT_EQ(std::any_of(chosen->begin(), chosen->end(), [](auto* c) { return c->name == "probe"; }), here);
    auto named = registry.Select("probe");
    ASSERT_TRUE(named.ok());
    ASSERT_EQ(named->size(), 1u);
    EXPECT_NE(registry.Markdown().find("| `probe` | where the probe says so |"), std::string::npos);
  }
}

// The RDMA resources are read from ucp_context_print_info's text: rc, dc, ud and srd
// transports count; tcp, shared memory and CUDA ones do not.
TEST(Ucx, RdmaResourcesAreReadFromUcxsResourceList) {
#if WEFT_HAVE_UCX
  const char* with_nic =
      "#\n# UCP context\n#\n#     md 0  :  self\n#     md 1  :  tcp\n#     md 2  :  mlx5_0\n"
      "#   resource 0  :  md 0  dev 0  flags -- self/memory\n"
      "#   resource 1  :  md 1  dev 1  flags -- tcp/eth0\n"
      "#   resource 2  :  md 2  dev 2  flags -- rc_verbs/mlx5_0:1\n"
      "#   resource 3  :  md 2  dev 2  flags -- rc_mlx5/mlx5_0:1\n"
      "#   resource 4  :  md 2  dev 2  flags -- dc_mlx5/mlx5_0:1\n"
      "#   resource 5  :  md 2  dev 2  flags -- ud_verbs/mlx5_0:1\n"
      "#   resource 6  :  md 3  dev 3  flags -- cuda_copy/cuda\n";
  EXPECT_EQ(ucx::RdmaResources(with_nic), "rc_verbs/mlx5_0:1, rc_mlx5/mlx5_0:1, dc_mlx5/mlx5_0:1, ud_verbs/mlx5_0:1");
  const char* without =
      "#   resource 0  :  md 0  dev 0  flags -- self/memory\n"
      "#   resource 1  :  md 1  dev 1  flags -- tcp/lo\n"
      "#   resource 2  :  md 2  dev 2  flags -- posix/memory\n"
      "#   resource 3  :  md 3  dev 3  flags -- cma/memory\n";
  EXPECT_EQ(ucx::RdmaResources(without), "");
  EXPECT_EQ(ucx::RdmaResources(""), "");
  EXPECT_EQ(ucx::RdmaResources("#   resource 1  :  garbage without a name"), "");
#else
  GTEST_SKIP() << "this weft was built without UCX's headers (libucx-dev)";
#endif
}

#if WEFT_HAVE_UCX

using tcp::TcpTransport;
using tcp::TcpTransportOptions;
using ucx::UcxOptions;
using ucx::UcxTransport;

std::unique_ptr<UcxTransport> MakeOrSkip(const std::string& tls, std::string* why, UcxOptions o = {}) {
  o.tls = tls;
  auto t = UcxTransport::Create(o);
  if (!t.ok()) {
    *why = t.status().ToString();
    return nullptr;
  }
  return std::move(*t);
}

// An owner exporting one region and a peer that imported it.
struct Pair {
  std::unique_ptr<UcxTransport> owner, peer;
  std::vector<uint8_t> memory;
  std::unique_ptr<PeerLink> link;
  std::unique_ptr<ImportedRegion> region;
};

class UcxPairTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    std::string why;
    p_.owner = MakeOrSkip(GetParam(), &why);
    if (p_.owner) p_.peer = MakeOrSkip(GetParam(), &why);
    if (!p_.peer) GTEST_SKIP() << "no UCX here: " << why;
    p_.memory.assign(kRegion, 0);
    auto blob = p_.owner->ExportRegion({1, p_.memory.data(), kRegion, false, -1, -1, 0});
    ASSERT_TRUE(blob.ok()) << blob.status().ToString();
    blob_ = *blob;
    Link();
  }

  // The peer connects to the owner and imports its region.
  void Link() {
    p_.region.reset();
    p_.link.reset();
    auto endpoint = p_.owner->EndpointBlob();
    ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
    auto link = p_.peer->Connect(*endpoint);
    ASSERT_TRUE(link.ok()) << link.status().ToString();
    p_.link = std::move(*link);
    // The importer's address of the region is its own business (a GVA in a pool): use another.
    auto region = p_.peer->ImportRegion(*p_.link, kImportBase, kRegion, blob_);
    ASSERT_TRUE(region.ok()) << region.status().ToString();
    p_.region = std::move(*region);
  }

  RemoteOp Op(RemoteOpKind kind, uint8_t* local, uint64_t offset, uint64_t len) const {
    return RemoteOp{kind, local, false, p_.link.get(), p_.region.get(), offset, len};
  }
  std::vector<Status> Post(std::span<const RemoteOp> ops) {
    std::vector<Status> results(ops.size());
    p_.peer->Post(ops, results, Soon());
    return results;
  }

  static constexpr uint64_t kRegion = 24 << 20;
  static constexpr uint64_t kImportBase = 0x7e0000000000ull;
  // Registries a test may give the transports: declared before p_, so they outlive them.
  MetricsRegistry owner_metrics_, peer_metrics_;
  Pair p_;
  std::string blob_;
};

TEST_P(UcxPairTest, PutsAndGetsAreExact) {
  const uint64_t off = 8191, len = (5u << 20) + 321;
  const uint64_t seed = FreshSeed();
  std::vector<uint8_t> src(len), back(len, 0x5A);
  FillRandom(src.data(), len, seed);
  std::memset(p_.memory.data(), 0xEE, kRegion);
  RemoteOp put = Op(RemoteOpKind::kWrite, src.data(), off, len);
  ASSERT_TRUE(Post({&put, 1})[0].ok());
  EXPECT_FALSE(FirstMismatch(p_.memory.data() + off, len, seed).has_value());
  EXPECT_EQ(p_.memory[off - 1], 0xEE);
  EXPECT_EQ(p_.memory[off + len], 0xEE);
  RemoteOp get = Op(RemoteOpKind::kRead, back.data(), off, len);
  ASSERT_TRUE(Post({&get, 1})[0].ok());
  EXPECT_EQ(back, src);
}

// 1000 scattered 4 KiB pages in one Post, half written and half read, every byte compared.
TEST_P(UcxPairTest, ABatchOfScatteredPages) {
  constexpr size_t kPages = 1000, kPage = 4096;
  const uint64_t seed = FreshSeed();
  std::vector<uint8_t> local(kPages * kPage), theirs(kPages * kPage);
  FillRandom(local.data(), local.size(), seed);
  FillRandom(p_.memory.data(), kRegion, seed ^ 0x55);
  std::vector<uint64_t> slot(kPages);
  for (size_t i = 0; i < kPages; ++i) slot[i] = ((i * 7919) % (kRegion / kPage)) * kPage;  // distinct, scattered
  // The pages to be read hold their expected bytes at the owner first.
  for (size_t i = 1; i < kPages; i += 2) std::memcpy(p_.memory.data() + slot[i], local.data() + i * kPage, kPage);
  std::vector<uint8_t> reads(kPages * kPage, 0xA5);
  std::vector<RemoteOp> ops;
  for (size_t i = 0; i < kPages; ++i) {
    const bool write = i % 2 == 0;
    ops.push_back(Op(write ? RemoteOpKind::kWrite : RemoteOpKind::kRead,
                     (write ? local.data() : reads.data()) + i * kPage, slot[i], kPage));
  }
  auto results = Post(ops);
  for (size_t i = 0; i < kPages; ++i) {
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].ToString();
    const uint8_t* want = local.data() + i * kPage;
    const uint8_t* got = i % 2 == 0 ? p_.memory.data() + slot[i] : reads.data() + i * kPage;
    ASSERT_EQ(std::memcmp(want, got, kPage), 0) << "page " << i;
  }
}

// Calls from several threads to one peer at once (each waits on its own flush while the others
// issue and progress): every call's bytes exact, both directions, in each thread's own part of
// the region; the rest of the region untouched.
TEST_P(UcxPairTest, CallsFromManyThreadsToOnePeerAreExact) {
  constexpr int kThreads = 6, kCalls = 40;
  constexpr uint64_t kPart = 1 << 20, kPage = 16 << 10;
  std::memset(p_.memory.data(), 0xEE, kRegion);
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const uint64_t base = t * kPart;
      std::vector<uint8_t> src(kPart), back(kPart);
      for (int c = 0; c < kCalls && failures[t].empty(); ++c) {
        const uint64_t seed = FreshSeed();
        FillRandom(src.data(), kPart, seed);
        std::memset(back.data(), 0x5A, kPart);
        // A batch of scattered pages, or the whole part in one op, taking turns.
        std::vector<RemoteOp> puts, gets;
        const uint64_t step = c % 2 == 0 ? kPage : kPart;
        for (uint64_t off = 0; off < kPart; off += step) {
          puts.push_back(Op(RemoteOpKind::kWrite, src.data() + off, base + off, step));
          gets.push_back(Op(RemoteOpKind::kRead, back.data() + off, base + off, step));
        }
        for (const Status& s : Post(puts))
          if (!s.ok()) failures[t] = "put: " + s.ToString();
        for (const Status& s : Post(gets))
          if (!s.ok()) failures[t] = "get: " + s.ToString();
        if (!failures[t].empty()) break;
        if (auto bad = FirstMismatch(p_.memory.data() + base, kPart, seed))
          failures[t] = "call " + std::to_string(c) + ": byte " + std::to_string(*bad) + " written wrong";
        else if (auto bad_back = FirstMismatch(back.data(), kPart, seed))
          failures[t] = "call " + std::to_string(c) + ": byte " + std::to_string(*bad_back) + " read back wrong";
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], "") << "thread " << t;
  const uint8_t* rest = p_.memory.data() + kThreads * kPart;
  EXPECT_TRUE(std::all_of(rest, rest + (kRegion - kThreads * kPart), [](uint8_t b) { return b == 0xEE; }));
}

// Calls from several threads while the peer goes away: each op either completed (its bytes
// exact) or failed PEER_DOWN, none hangs past its deadline.
TEST_P(UcxPairTest, CallsFromManyThreadsWhenThePeerDiesFailPeerDown) {
  constexpr int kThreads = 4;
  constexpr uint64_t kPart = 256 << 10;
  std::atomic<int> calls{0};
  std::atomic<bool> stop{false};
  std::vector<std::string> failures(kThreads);
  std::vector<std::atomic<int>> down(kThreads);  // read by the main thread while they run
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> src(kPart, static_cast<uint8_t>(t + 1));
      RemoteOp put = Op(RemoteOpKind::kWrite, src.data(), t * kPart, kPart);
      while (!stop.load() && down[t] < 3) {
        std::vector<Status> results(1);
        p_.peer->Post({&put, 1}, results, Deadline::After(std::chrono::seconds(30)));
        calls.fetch_add(1);
        if (results[0].code() == Code::kPeerDown) {
          ++down[t];
        } else if (!results[0].ok()) {
          failures[t] = results[0].ToString();
          return;
        }
      }
    });
  }
  for (int i = 0; i < 3000 && calls.load() < 20; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_GE(calls.load(), 20) << "the calls before the owner went away did not come back";
  p_.owner.reset();  // the owner's process is gone mid-calls
  for (int i = 0; i < 3000 && std::any_of(down.begin(), down.end(), [](const auto& d) { return d.load() < 3; }); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  stop.store(true);
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(failures[t], "") << "thread " << t;
    EXPECT_EQ(down[t].load(), 3) << "thread " << t << ": its calls after the owner went away are PEER_DOWN";
  }
}

// Malformed blobs are PROTOCOL naming the path; an id exported twice, device memory and an empty
// region are refused; a peer that went away fails its ops with PEER_DOWN within the deadline.
TEST_P(UcxPairTest, BadInputAndADeadPeer) {
  auto endpoint = p_.owner->EndpointBlob();
  ASSERT_TRUE(endpoint.ok());
  for (std::string bad : {std::string(), std::string("\x02", 1), endpoint->substr(0, 3), *endpoint + "x"}) {
    auto link = p_.peer->Connect(bad);
    ASSERT_FALSE(link.ok());
    EXPECT_EQ(link.status().code(), Code::kProtocol) << link.status().ToString();
    EXPECT_NE(link.status().message().find("ucx"), std::string::npos);
  }
  EXPECT_EQ(p_.peer->ImportRegion(*p_.link, 1, 1, std::string("\x01\0\0\0\0\0\0\0\0\0", 10)).status().code(),
            Code::kProtocol);
  EXPECT_EQ(p_.owner->ExportRegion({1, p_.memory.data(), 4096, false, -1, -1, 0}).status().code(),
            Code::kAlreadyExists);
  EXPECT_EQ(p_.owner->ExportRegion({3, nullptr, 0, false, -1, -1, 0}).status().code(), Code::kInvalidArgument);
  std::vector<uint8_t> buf(4096, 1);
  if (!p_.owner->device_direct()) {
    // Without CUDA in UCX: no device region is exported, and a device end without staging is refused.
    EXPECT_EQ(p_.owner->ExportRegion({2, p_.memory.data(), 4096, true, 0, -1, 0}).status().code(),
              Code::kNotSupported);
    EXPECT_FALSE(p_.peer->capabilities() & kCapDeviceMemory);
    RemoteOp device = Op(RemoteOpKind::kWrite, buf.data(), 0, buf.size());
    device.local_device = true;
    EXPECT_EQ(Post({&device, 1})[0].code(), Code::kNotSupported);
  }

  RemoteOp ok = Op(RemoteOpKind::kWrite, buf.data(), 0, buf.size());
  ASSERT_TRUE(Post({&ok, 1})[0].ok());
  p_.owner.reset();  // the peer's process is gone: its worker, its endpoints, its registrations
  std::vector<Status> results(1);
  p_.peer->Post({&ok, 1}, results, Deadline::After(std::chrono::seconds(30)));
  EXPECT_FALSE(results[0].ok());
  EXPECT_EQ(results[0].code(), Code::kPeerDown) << results[0].ToString();
}

// What the transport publishes (weft_ucx_*): regions at the owner; at the peer, the endpoint made
// on the first op, each completed op and its bytes by kind, nothing left waiting on the worker,
// and an op to a peer that went away counted as failed.
TEST_P(UcxPairTest, MetricsCountRegionsEndpointsOpsAndFailures) {
  MetricsRegistry& owner_metrics = owner_metrics_;
  MetricsRegistry& peer_metrics = peer_metrics_;
  p_.region.reset();
  p_.link.reset();
  std::string why;
  UcxOptions o;
  o.metrics = &owner_metrics;
  p_.owner = MakeOrSkip(GetParam(), &why, o);
  ASSERT_TRUE(p_.owner) << why;
  o.metrics = &peer_metrics;
  p_.peer = MakeOrSkip(GetParam(), &why, o);
  ASSERT_TRUE(p_.peer) << why;
  auto blob = p_.owner->ExportRegion({1, p_.memory.data(), kRegion, false, -1, -1, 0});
  ASSERT_TRUE(blob.ok()) << blob.status().ToString();
  blob_ = *blob;
  Link();
  auto gauge = [](MetricsRegistry& m, const char* name) {
    (void)m.PrometheusText();  // runs the scrape hooks
    return m.gauge(name)->value();
  };
  auto counter = [](MetricsRegistry& m, const std::string& name) {
    (void)m.PrometheusText();
    return m.counter(name)->value();
  };
  EXPECT_EQ(gauge(owner_metrics, "weft_ucx_regions_exported"), 1);
  EXPECT_EQ(gauge(peer_metrics, "weft_ucx_endpoints_open"), 0) << "endpoints are made on first use";

  const uint64_t write_len = 12345, read_len = 777;
  std::vector<uint8_t> src(write_len, 0x3C), back(read_len, 0);
  RemoteOp put = Op(RemoteOpKind::kWrite, src.data(), 100, write_len);
  RemoteOp gets[2] = {Op(RemoteOpKind::kRead, back.data(), 0, read_len), Op(RemoteOpKind::kRead, back.data(), 5, read_len)};
  ASSERT_TRUE(Post({&put, 1})[0].ok());
  for (const Status& s : Post(gets)) ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(counter(peer_metrics, "weft_ucx_ops_total{op=\"write\"}"), 1u);
  EXPECT_EQ(counter(peer_metrics, "weft_ucx_ops_total{op=\"read\"}"), 2u);
  EXPECT_EQ(counter(peer_metrics, "weft_ucx_bytes_total{op=\"write\"}"), write_len);
  EXPECT_EQ(counter(peer_metrics, "weft_ucx_bytes_total{op=\"read\"}"), 2 * read_len);
  EXPECT_EQ(counter(peer_metrics, "weft_ucx_ops_failed_total"), 0u);
  EXPECT_EQ(counter(peer_metrics, "weft_ucx_endpoints_created_total"), 1u);
  EXPECT_EQ(gauge(peer_metrics, "weft_ucx_endpoints_open"), 1);
  EXPECT_EQ(gauge(peer_metrics, "weft_ucx_posts_waiting"), 0);
  const std::string text = peer_metrics.PrometheusText();
  EXPECT_NE(text.find("# TYPE weft_ucx_posts_waiting gauge"), std::string::npos) << text;

  p_.owner->WithdrawRegion(1);
  EXPECT_EQ(gauge(owner_metrics, "weft_ucx_regions_exported"), 0);
  p_.owner.reset();  // the peer's process is gone
  std::vector<Status> results(1);
  p_.peer->Post({&put, 1}, results, Deadline::After(std::chrono::seconds(30)));
  ASSERT_FALSE(results[0].ok());
  EXPECT_EQ(counter(peer_metrics, "weft_ucx_ops_failed_total"), 1u);
  EXPECT_EQ(counter(peer_metrics, "weft_ucx_ops_total{op=\"write\"}"), 1u) << "a failed op is not a completed one";
  EXPECT_EQ(gauge(peer_metrics, "weft_ucx_posts_waiting"), 0);
}

// Without CUDA in UCX, local device ends go through the staging pipeline's bounce buffers: here
// a stand-in "device" (host memory, copied by a counting memcpy) shows that every device byte
// passed through a bounce buffer and arrived exactly, alone and mixed with host ends in one Post.
TEST_P(UcxPairTest, DeviceEndsAreStagedWhenUcxHasNoCuda) {
  std::atomic<int> device_copies{0};
  UcxOptions o;
  o.device.copy = [&](void* dst, const void* src, uint64_t len) {
    ++device_copies;
    std::memcpy(dst, src, len);
    return OkStatus();
  };
  o.staging.slice_bytes = 256 << 10;
  std::string why;
  auto staged = MakeOrSkip(GetParam(), &why, o);
  ASSERT_NE(staged, nullptr) << why;
  if (staged->device_direct()) GTEST_SKIP() << "this UCX moves CUDA memory itself: nothing is staged";
  EXPECT_TRUE(staged->capabilities() & kCapDeviceMemory);
  EXPECT_NE(staged->ExplainRemote().find("staged through host bounce buffers"), std::string::npos);
  p_.peer = std::move(staged);
  Link();

  const uint64_t len = (3u << 20) + 777, off = 4099;
  const uint64_t seed = FreshSeed();
  std::vector<uint8_t> device(len), host(64 << 10), back(len, 0x5A), host_back(host.size(), 0x5A);
  FillRandom(device.data(), len, seed);
  FillRandom(host.data(), host.size(), seed ^ 1);
  std::memset(p_.memory.data(), 0xEE, kRegion);
  const uint64_t host_off = off + len + 8192;
  RemoteOp writes[2] = {Op(RemoteOpKind::kWrite, device.data(), off, len),
                        Op(RemoteOpKind::kWrite, host.data(), host_off, host.size())};
  writes[0].local_device = true;
  for (const Status& s : Post(writes)) ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(FirstMismatch(p_.memory.data() + off, len, seed).has_value());
  EXPECT_FALSE(FirstMismatch(p_.memory.data() + host_off, host.size(), seed ^ 1).has_value());
  EXPECT_EQ(p_.memory[off - 1], 0xEE);
  EXPECT_EQ(p_.memory[off + len], 0xEE);
  const int after_write = device_copies.load();
  EXPECT_GE(after_write, static_cast<int>(len / o.staging.slice_bytes));

  RemoteOp reads[2] = {Op(RemoteOpKind::kRead, back.data(), off, len),
                       Op(RemoteOpKind::kRead, host_back.data(), host_off, host.size())};
  reads[0].local_device = true;
  for (const Status& s : Post(reads)) ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(back, device);
  EXPECT_EQ(host_back, host);
  EXPECT_GT(device_copies.load(), after_write);
  auto* t = static_cast<UcxTransport*>(p_.peer.get());
  EXPECT_EQ(t->staging_stats().bytes, 2 * len);
}

// Without an RDMA resource UCX reaches other nodes over its own tcp, which measured well below
// weft's: unless the user named ucx, the cost model must then rank it after tcp at every size,
// so that it carries only what tcp cannot. Named, or with an RDMA resource, it ranks ahead.
TEST(Ucx, TheCostModelRanksUcxByItsRdmaResourcesUnlessNamed) {
  std::string why;
  auto chosen = MakeOrSkip("tcp", &why);
  if (chosen == nullptr) GTEST_SKIP() << "ucx is absent here: " << why;
  UcxOptions o;
  o.named = true;
  auto named = MakeOrSkip("tcp", &why, o);
  ASSERT_NE(named, nullptr) << why;
  auto tcp = TcpTransport::Create(TcpTransportOptions{});
  ASSERT_TRUE(tcp.ok()) << tcp.status().ToString();
  const bool rdma = !chosen->rdma_resources().empty();
  for (uint64_t bytes : {uint64_t{8}, uint64_t{4096}, uint64_t{1} << 20, uint64_t{64} << 20}) {
    SCOPED_TRACE(bytes);
    const double tcp_cost = (*tcp)->RemoteCostNanos(bytes);
    EXPECT_LT(named->RemoteCostNanos(bytes), tcp_cost);
    EXPECT_EQ(chosen->RemoteCostNanos(bytes) < tcp_cost, rdma);
  }
  EXPECT_NE(chosen->ExplainRemote().find(rdma ? "over RDMA (" : "ranked behind weft's tcp"), std::string::npos)
      << chosen->ExplainRemote();
  EXPECT_NE(named->ExplainRemote().find(rdma ? "over RDMA (" : "named, so ranked ahead"), std::string::npos)
      << named->ExplainRemote();
}

// tcp alone, and whatever UCX picks by itself here (with peer failure handling, which UCX 1.13's
// shared-memory transports lack, that is tcp for the endpoint's lanes too).
INSTANTIATE_TEST_SUITE_P(Tls, UcxPairTest, ::testing::Values("tcp", ""),
                         [](const auto& info) { return std::string(*info.param ? "Tcp" : "UcxDefault"); });

#endif  // WEFT_HAVE_UCX

}  // namespace
}  // namespace weft::transport
