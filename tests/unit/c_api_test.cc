// The C API (include/weft/weft.h) in one process: codes, messages, null arguments, config,
// alloc/free, copies (blocking, batch, async), errors, leave. tests/c/c_api_example.c covers two
// processes from plain C.
#include "weft/weft.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "base/random.h"
#include "base/status.h"

namespace {

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

std::string UniqueName(const char* what) {
  static std::atomic<int> counter{0};
  return std::string("capi-") + what + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + "-" +
         std::to_string(weft::FreshSeed() & 0xFFFF);
}

struct ConfigPtr {
  weft_config* c = weft_config_new();
  ~ConfigPtr() { weft_config_free(c); }
};

// A pool hosted by this process alone.
class CApiPool : public ::testing::Test {
 protected:
  void SetUp() override {
    name_ = UniqueName("unit");
    ConfigPtr cfg;
    ASSERT_EQ(weft_config_set(cfg.c, "pool_name", name_.c_str()), WEFT_OK) << weft_last_error();
    ASSERT_EQ(weft_config_set(cfg.c, "rank_size", "16MiB"), WEFT_OK) << weft_last_error();
    ASSERT_EQ(weft_pool_join(cfg.c, WEFT_JOIN_HOST, &pool_), WEFT_OK) << weft_last_error();
  }
  void TearDown() override { weft_pool_free(pool_); }

  std::string name_;
  weft_pool* pool_ = nullptr;
};

TEST(CApi, CodesMatchStatusCodes) {
  for (int c = 0; c <= static_cast<int>(weft::kLastCode); ++c)
    EXPECT_EQ(weft_error_string(-c), weft::CodeName(static_cast<weft::Code>(c))) << c;
  EXPECT_STREQ(weft_error_string(WEFT_E_POOL_FULL), "POOL_FULL");
  EXPECT_STREQ(weft_error_string(WEFT_E_PEER_DOWN), "PEER_DOWN");
  EXPECT_STREQ(weft_error_string(3), "UNKNOWN");
  EXPECT_STREQ(weft_error_string(-21), "BUSY");
  EXPECT_STREQ(weft_error_string(-22), "UNKNOWN");
  EXPECT_STREQ(weft_error_string(-2147483647 - 1), "UNKNOWN");
}

TEST(CApi, LastErrorIsPerThread) {
  EXPECT_EQ(weft_config_set(nullptr, "k", "v"), WEFT_E_INVALID_ARGUMENT);
  const std::string mine = weft_last_error();
  EXPECT_NE(mine.find("INVALID_ARGUMENT"), std::string::npos) << mine;
  EXPECT_NE(mine.find("config"), std::string::npos) << mine;
  std::string theirs = "unset";
  std::thread([&] { theirs = weft_last_error(); }).join();
  EXPECT_EQ(theirs, "");
  std::thread([&] {
    (void)weft_free(nullptr, 0);
    theirs = weft_last_error();
  }).join();
  EXPECT_NE(theirs.find("pool"), std::string::npos) << theirs;
  EXPECT_EQ(weft_last_error(), mine);  // untouched by the other thread, and by successes:
  ConfigPtr cfg;
  EXPECT_EQ(weft_config_set(cfg.c, "rank_size", "1MiB"), WEFT_OK);
  EXPECT_EQ(weft_last_error(), mine);
}

TEST(CApi, ConfigChecksKeysAndValues) {
  ConfigPtr cfg;
  ASSERT_NE(cfg.c, nullptr);
  EXPECT_EQ(weft_config_set(cfg.c, "rank_size", "64MiB"), WEFT_OK);
  EXPECT_EQ(weft_config_set(cfg.c, "rank_size", "many"), WEFT_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(weft_last_error()).find("rank_size"), std::string::npos) << weft_last_error();
  EXPECT_EQ(weft_config_set(cfg.c, "bogus", "1"), WEFT_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(weft_last_error()).find("bogus"), std::string::npos);
  EXPECT_EQ(weft_config_set(cfg.c, nullptr, "1"), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_config_set(cfg.c, "rank_size", nullptr), WEFT_E_INVALID_ARGUMENT);
  weft_pool* pool = nullptr;
  EXPECT_EQ(weft_pool_join(cfg.c, 3, &pool), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_pool_join(nullptr, WEFT_JOIN_AUTO, &pool), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_pool_join(cfg.c, WEFT_JOIN_AUTO, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(pool, nullptr);
}

TEST(CApi, ConfigOverridesEnvironment) {
  const std::string name = UniqueName("env");
  setenv("WEFT_RANK_SIZE", "3MiB", 1);
  setenv("WEFT_POOL_NAME", name.c_str(), 1);
  ConfigPtr cfg;
  weft_pool* pool = nullptr;
  ASSERT_EQ(weft_pool_join(cfg.c, WEFT_JOIN_HOST, &pool), WEFT_OK) << weft_last_error();
  EXPECT_EQ(weft_pool_local_size(pool), 3u << 20);  // the environment over the default
  weft_pool_free(pool);
  ASSERT_EQ(weft_config_set(cfg.c, "rank_size", "2MiB"), WEFT_OK);
  ASSERT_EQ(weft_pool_join(cfg.c, WEFT_JOIN_HOST, &pool), WEFT_OK) << weft_last_error();
  EXPECT_EQ(weft_pool_local_size(pool), 2u << 20);  // the set key over the environment
  weft_pool_free(pool);
  unsetenv("WEFT_RANK_SIZE");
  unsetenv("WEFT_POOL_NAME");
}

// copy_threads=100000 used to terminate the host process in weft_pool_join (a thread that could
// not start left joinable std::threads behind). Every key has a range: the value is refused by
// weft_config_set, and by weft_pool_join when it comes from the environment.
TEST(CApi, ConfigValuesOutOfRangeAreErrorsNotAborts) {
  ConfigPtr cfg;
  EXPECT_EQ(weft_config_set(cfg.c, "copy_threads", "100000"), WEFT_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(weft_last_error()).find("copy_threads"), std::string::npos) << weft_last_error();
  EXPECT_NE(std::string(weft_last_error()).find("0..256"), std::string::npos) << weft_last_error();
  EXPECT_EQ(weft_config_set(cfg.c, "log_level", "loud"), WEFT_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(weft_last_error()).find("trace, debug, info, warn, error, off"), std::string::npos)
      << weft_last_error();
  const std::string name = UniqueName("range");
  ASSERT_EQ(weft_config_set(cfg.c, "pool_name", name.c_str()), WEFT_OK);
  ASSERT_EQ(weft_config_set(cfg.c, "rank_size", "1MiB"), WEFT_OK);
  setenv("WEFT_COPY_THREADS", "100000", 1);
  weft_pool* pool = nullptr;
  const int rc = weft_pool_join(cfg.c, WEFT_JOIN_HOST, &pool);
  unsetenv("WEFT_COPY_THREADS");
  EXPECT_EQ(rc, WEFT_E_INVALID_ARGUMENT) << weft_last_error();
  EXPECT_NE(std::string(weft_last_error()).find("copy_threads"), std::string::npos) << weft_last_error();
  EXPECT_EQ(pool, nullptr);
  weft_pool_free(pool);
}

TEST(CApi, JoinErrors) {
  ConfigPtr cfg;
  const std::string name = UniqueName("nobody");
  ASSERT_EQ(weft_config_set(cfg.c, "pool_name", name.c_str()), WEFT_OK);
  ASSERT_EQ(weft_config_set(cfg.c, "rank_size", "1MiB"), WEFT_OK);
  ASSERT_EQ(weft_config_set(cfg.c, "deadline_ms", "2000"), WEFT_OK);
  weft_pool* pool = nullptr;
  EXPECT_EQ(weft_pool_join(cfg.c, WEFT_JOIN_JOIN, &pool), WEFT_E_UNAVAILABLE) << weft_last_error();
  EXPECT_EQ(pool, nullptr);
}

TEST_F(CApiPool, Basics) {
  EXPECT_NE(weft_pool_rank(pool_), UINT32_MAX);
  EXPECT_EQ(weft_pool_local_size(pool_), 16u << 20);
  uint64_t slice = 0;
  ASSERT_EQ(weft_pool_slice_address(pool_, weft_pool_rank(pool_), &slice), WEFT_OK);
  uint32_t rank = 99;
  ASSERT_EQ(weft_pool_rank_of(pool_, slice + 5, &rank), WEFT_OK);
  EXPECT_EQ(rank, weft_pool_rank(pool_));
  EXPECT_EQ(weft_pool_rank_of(pool_, 0x10, &rank), WEFT_E_INVALID_ADDRESS);
  EXPECT_EQ(weft_pool_slice_address(pool_, 1u << 31, &slice), WEFT_E_OUT_OF_RANGE);
  EXPECT_EQ(weft_pool_wait_for_peers(pool_, 1, 1000), WEFT_OK) << weft_last_error();
  EXPECT_EQ(weft_pool_barrier(pool_, 10000), WEFT_OK) << weft_last_error();
  EXPECT_EQ(weft_pool_wait_for_peers(pool_, 2, 50), WEFT_E_TIMEOUT) << weft_last_error();
}

TEST_F(CApiPool, CopyRoundTrip) {
  for (uint64_t len : {1ull, 100ull, 4096ull, (1ull << 20) + 3, 9ull << 20}) {
    uint64_t gva = 0;
    ASSERT_EQ(weft_alloc(pool_, len, WEFT_PLACE_LOCAL, 0, &gva), WEFT_OK) << weft_last_error();
    const uint64_t seed = weft::FreshSeed();
    std::vector<uint8_t> src(len), back(len, 0xA5);
    weft::FillRandom(src.data(), len, seed);
    ASSERT_EQ(weft_copy(pool_, gva, Addr(src.data()), len, WEFT_DIR_LH2GH), WEFT_OK) << weft_last_error();
    ASSERT_EQ(weft_copy(pool_, Addr(back.data()), gva, len, WEFT_DIR_AUTO), WEFT_OK) << weft_last_error();
    EXPECT_EQ(weft::FirstMismatch(back.data(), len, seed), std::nullopt) << len;
    void* mapped = nullptr;
    ASSERT_EQ(weft_pool_local_address(pool_, gva, len, &mapped), WEFT_OK);
    EXPECT_EQ(std::memcmp(mapped, src.data(), len), 0);
    ASSERT_EQ(weft_free(pool_, gva), WEFT_OK);
  }
}

TEST_F(CApiPool, BatchAndAsync) {
  constexpr int kPages = 32;
  constexpr uint64_t kPage = 4096 + 7;
  uint64_t gva = 0;
  ASSERT_EQ(weft_alloc(pool_, kPages * kPage, WEFT_PLACE_SPREAD, 0, &gva), WEFT_OK) << weft_last_error();
  const uint64_t seed = weft::FreshSeed();
  std::vector<uint8_t> src(kPages * kPage), back(kPages * kPage, 0x5A);
  weft::FillRandom(src.data(), src.size(), seed);
  std::vector<weft_copy_request> put(kPages), get(kPages);
  for (int i = 0; i < kPages; ++i) {
    put[i] = {gva + i * kPage, Addr(src.data() + i * kPage), kPage};
    get[i] = {Addr(back.data() + i * kPage), gva + i * kPage, kPage};
  }
  std::vector<int> results(kPages, 1);
  ASSERT_EQ(weft_copy_batch(pool_, put.data(), kPages, WEFT_DIR_AUTO, results.data()), WEFT_OK) << weft_last_error();
  for (int r : results) EXPECT_EQ(r, WEFT_OK);
  get[7].src = gva + (16u << 20) + 100;  // past the slice: only this one fails
  EXPECT_EQ(weft_copy_batch(pool_, get.data(), kPages, WEFT_DIR_GH2LH, results.data()), results[7]);
  EXPECT_LT(results[7], 0);
  EXPECT_NE(std::string(weft_last_error()).find("request 7"), std::string::npos) << weft_last_error();
  for (int i = 0; i < kPages; ++i) {
    if (i == 7) continue;
    EXPECT_EQ(results[i], WEFT_OK) << i;
    EXPECT_EQ(std::memcmp(back.data() + i * kPage, src.data() + i * kPage, kPage), 0) << i;
  }

  std::fill(back.begin(), back.end(), 0xA5);
  weft_copy_handle* h = nullptr;
  ASSERT_EQ(weft_copy_async(pool_, Addr(back.data()), gva, back.size(), WEFT_DIR_AUTO, &h), WEFT_OK);
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(weft_copy_wait(h, -1), WEFT_OK) << weft_last_error();
  EXPECT_EQ(weft_copy_poll(h), 0);
  EXPECT_EQ(weft_copy_wait(h, 0), WEFT_OK);
  weft_copy_free(h);
  EXPECT_EQ(weft::FirstMismatch(back.data(), back.size(), seed), std::nullopt);

  h = nullptr;
  ASSERT_EQ(weft_copy_async(pool_, Addr(back.data()), 0x40, 8, WEFT_DIR_GH2LH, &h), WEFT_OK);
  const int rc = weft_copy_wait(h, 10000);
  EXPECT_LT(rc, 0);
  EXPECT_NE(rc, WEFT_E_TIMEOUT);
  EXPECT_EQ(weft_copy_poll(h), rc);
  weft_copy_free(h);
  EXPECT_EQ(weft_free(pool_, gva), WEFT_OK);
}

TEST_F(CApiPool, AllocErrors) {
  uint64_t gva = 0;
  EXPECT_EQ(weft_alloc(pool_, 0, WEFT_PLACE_LOCAL, 0, &gva), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_alloc(pool_, 17u << 20, WEFT_PLACE_LOCAL, 0, &gva), WEFT_E_POOL_FULL);
  EXPECT_NE(std::string(weft_last_error()).find("POOL_FULL"), std::string::npos);
  EXPECT_EQ(weft_alloc(pool_, 64, 3, 0, &gva), WEFT_E_INVALID_ARGUMENT);
  const int missing = weft_alloc(pool_, 64, WEFT_PLACE_RANK, 40, &gva);
  EXPECT_TRUE(missing == WEFT_E_NOT_FOUND || missing == WEFT_E_PEER_DOWN) << weft_error_string(missing);
  ASSERT_EQ(weft_alloc(pool_, 1000, WEFT_PLACE_LOCAL, 0, &gva), WEFT_OK);
  EXPECT_EQ(weft_free(pool_, gva + 8), WEFT_E_INVALID_ADDRESS);
  EXPECT_EQ(weft_free(pool_, 0x1234), WEFT_E_INVALID_ADDRESS);
  EXPECT_EQ(weft_free(pool_, gva), WEFT_OK);
  EXPECT_EQ(weft_free(pool_, gva), WEFT_E_DOUBLE_FREE);
}

TEST_F(CApiPool, CopyErrors) {
  char buf[64] = {};
  uint64_t slice = 0;
  ASSERT_EQ(weft_pool_slice_address(pool_, weft_pool_rank(pool_), &slice), WEFT_OK);
  EXPECT_EQ(weft_copy(pool_, slice + (16u << 20) - 8, Addr(buf), 64, WEFT_DIR_LH2GH), WEFT_E_OUT_OF_RANGE);
  EXPECT_EQ(weft_copy(pool_, Addr(buf), Addr(buf + 32), 8, WEFT_DIR_GH2GH), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_copy(pool_, Addr(buf), Addr(buf + 32), 8, 200), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_copy(pool_, Addr(buf), Addr(buf + 32), 8, WEFT_DIR_LH2LH), WEFT_OK) << weft_last_error();
  char route[200];
  const int n = weft_pool_route(pool_, slice, Addr(buf), 8, WEFT_DIR_AUTO, route, sizeof route);
  ASSERT_GT(n, 0) << weft_last_error();
  EXPECT_NE(std::string(route).find("LH -> GH"), std::string::npos) << route;
  EXPECT_EQ(weft_pool_route(pool_, slice, Addr(buf), 8, WEFT_DIR_AUTO, nullptr, 0), n);
}

TEST_F(CApiPool, NullArguments) {
  uint64_t u64 = 0;
  uint32_t u32 = 0;
  weft_copy_handle* h = nullptr;
  EXPECT_EQ(weft_pool_rank(nullptr), UINT32_MAX);
  EXPECT_EQ(weft_pool_local_size(nullptr), 0u);
  EXPECT_EQ(weft_pool_leave(nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_pool_slice_address(pool_, 0, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_pool_rank_of(nullptr, 0, &u32), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_alloc(pool_, 8, WEFT_PLACE_LOCAL, 0, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_alloc(nullptr, 8, WEFT_PLACE_LOCAL, 0, &u64), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_free(nullptr, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_copy(nullptr, 0, 0, 1, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_copy_async(pool_, 0, 0, 1, 0, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_copy_async(nullptr, 0, 0, 1, 0, &h), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_copy_wait(nullptr, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_copy_poll(nullptr), WEFT_E_INVALID_ARGUMENT);
  int results[2] = {5, 5};
  EXPECT_EQ(weft_copy_batch(pool_, nullptr, 2, 0, results), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(results[1], WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_pool_barrier(nullptr, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_pool_wait_for_peers(nullptr, 1, 0), WEFT_E_INVALID_ARGUMENT);
  weft_pool_free(nullptr);
  weft_copy_free(nullptr);
  weft_config_free(nullptr);
}

// A second peer of the same pool in this process (no process-global state), with another
// rank_size refused as MISMATCH; copies between the two peers' slices; leave then CANCELLED.
TEST_F(CApiPool, SecondPeerMismatchAndLeave) {
  ConfigPtr cfg;
  ASSERT_EQ(weft_config_set(cfg.c, "pool_name", name_.c_str()), WEFT_OK);
  ASSERT_EQ(weft_config_set(cfg.c, "rank_size", "8MiB"), WEFT_OK);
  weft_pool* other = nullptr;
  EXPECT_EQ(weft_pool_join(cfg.c, WEFT_JOIN_JOIN, &other), WEFT_E_MISMATCH) << weft_last_error();
  EXPECT_EQ(weft_pool_join(cfg.c, WEFT_JOIN_HOST, &other), WEFT_E_ALREADY_EXISTS) << weft_last_error();
  ASSERT_EQ(weft_config_set(cfg.c, "rank_size", "16MiB"), WEFT_OK);
  ASSERT_EQ(weft_pool_join(cfg.c, WEFT_JOIN_AUTO, &other), WEFT_OK) << weft_last_error();
  ASSERT_EQ(weft_pool_wait_for_peers(pool_, 2, 10000), WEFT_OK) << weft_last_error();
  const uint32_t other_rank = weft_pool_rank(other);
  EXPECT_NE(other_rank, weft_pool_rank(pool_));

  uint64_t gva = 0;
  const uint64_t len = (2u << 20) + 1, seed = weft::FreshSeed();
  ASSERT_EQ(weft_alloc(pool_, len, WEFT_PLACE_RANK, other_rank, &gva), WEFT_OK) << weft_last_error();
  std::vector<uint8_t> src(len), back(len, 0xA5);
  weft::FillRandom(src.data(), len, seed);
  ASSERT_EQ(weft_copy(pool_, gva, Addr(src.data()), len, WEFT_DIR_LH2GH), WEFT_OK) << weft_last_error();
  ASSERT_EQ(weft_copy(other, Addr(back.data()), gva, len, WEFT_DIR_GH2LH), WEFT_OK) << weft_last_error();
  EXPECT_EQ(weft::FirstMismatch(back.data(), len, seed), std::nullopt);

  EXPECT_EQ(weft_pool_leave(other), WEFT_OK) << weft_last_error();
  EXPECT_EQ(weft_pool_leave(other), WEFT_OK);
  EXPECT_EQ(weft_alloc(other, 8, WEFT_PLACE_LOCAL, 0, &gva), WEFT_E_CANCELLED);
  EXPECT_EQ(weft_copy(other, Addr(back.data()), Addr(src.data()), 8, 0), WEFT_E_CANCELLED);
  weft_copy_handle* h = nullptr;
  EXPECT_EQ(weft_copy_async(other, Addr(back.data()), Addr(src.data()), 8, 0, &h), WEFT_E_CANCELLED);
  EXPECT_EQ(h, nullptr);
  weft_pool_free(other);
}

}  // namespace

// ---- the store (the KV store section of weft.h) ----

// Opening with bad arguments, and join-only where nobody serves the coordinator: codes, a
// message, and *out left alone.
TEST(CApiStore, OpenErrors) {
  ConfigPtr cfg;
  const std::string name = UniqueName("store-nobody");
  ASSERT_EQ(weft_config_set(cfg.c, "pool_name", name.c_str()), WEFT_OK);
  ASSERT_EQ(weft_config_set(cfg.c, "coordinator", ("/tmp/weft-" + name + ".sock").c_str()), WEFT_OK);
  ASSERT_EQ(weft_config_set(cfg.c, "rank_size", "1MiB"), WEFT_OK);
  ASSERT_EQ(weft_config_set(cfg.c, "deadline_ms", "2000"), WEFT_OK);
  weft_store* store = nullptr;
  EXPECT_EQ(weft_store_open(nullptr, WEFT_JOIN_JOIN, &store), WEFT_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(weft_last_error()).find("config"), std::string::npos) << weft_last_error();
  EXPECT_EQ(weft_store_open(cfg.c, WEFT_JOIN_JOIN, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_open(cfg.c, 3, &store), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_open(cfg.c, -1, &store), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_open(cfg.c, WEFT_JOIN_JOIN, &store), WEFT_E_UNAVAILABLE) << weft_last_error();
  EXPECT_EQ(store, nullptr);
  EXPECT_EQ(weft_store_close(nullptr), WEFT_OK);
}

// Every call on a NULL store is INVALID_ARGUMENT naming the store; batches say so in every result.
TEST(CApiStore, NullStore) {
  char buf[16] = {};
  uint64_t n = 0;
  auto names_store = [] { return std::string(weft_last_error()).find("store is NULL") != std::string::npos; };
  EXPECT_EQ(weft_store_put(nullptr, "k", buf, 1, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_TRUE(names_store()) << weft_last_error();
  EXPECT_EQ(weft_store_upsert(nullptr, "k", buf, 1, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_put_from(nullptr, "k", buf, 1, nullptr, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_get_into(nullptr, "k", buf, sizeof buf), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_get_size(nullptr, "k", &n), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_exists(nullptr, "k"), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_remove(nullptr, "k", 1), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_remove_by_regex(nullptr, ".*", 1, &n), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_remove_all(nullptr, 1, &n), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_register_buffer(nullptr, buf, sizeof buf), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_unregister_buffer(nullptr, buf), WEFT_E_INVALID_ARGUMENT);
  EXPECT_TRUE(names_store()) << weft_last_error();
  const char* keys[2] = {"a", "b"};
  const void* values[2] = {buf, buf};
  void* buffers[2] = {buf, buf + 8};
  const uint64_t sizes[2] = {8, 8};
  int put_results[2] = {1, 1};
  EXPECT_EQ(weft_store_put_batch(nullptr, keys, values, sizes, 2, nullptr, 0, put_results), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(put_results[0], WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(put_results[1], WEFT_E_INVALID_ARGUMENT);
  int64_t get_results[2] = {1, 1};
  EXPECT_EQ(weft_store_get_into_batch(nullptr, keys, buffers, sizes, 2, get_results), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(get_results[0], WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(get_results[1], WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_get_into_batch(nullptr, keys, buffers, sizes, 2, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(weft_last_error()).find("results"), std::string::npos) << weft_last_error();
}

// A store hosted in this process (it is its own master): the calls work, and bad arguments on a
// live store are refused with their own message before anything is sent.
class CApiStoreHosted : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string name = UniqueName("store");
    ConfigPtr cfg;
    ASSERT_EQ(weft_config_set(cfg.c, "pool_name", name.c_str()), WEFT_OK);
    ASSERT_EQ(weft_config_set(cfg.c, "rank_size", "8MiB"), WEFT_OK);
    ASSERT_EQ(weft_store_open(cfg.c, WEFT_JOIN_HOST, &store_), WEFT_OK) << weft_last_error();
  }
  void TearDown() override { EXPECT_EQ(weft_store_close(store_), WEFT_OK) << weft_last_error(); }
  weft_store* store_ = nullptr;
};

TEST_F(CApiStoreHosted, RoundTripAndCodes) {
  std::vector<uint8_t> value(5000), area(8192, 0xA5);
  weft::FillRandom(value.data(), value.size(), weft::FreshSeed());
  const weft_store_place pinned = {1, 0, 1, -1};
  ASSERT_EQ(weft_store_put(store_, "k", value.data(), value.size(), &pinned), WEFT_OK) << weft_last_error();
  EXPECT_EQ(weft_store_put(store_, "k", value.data(), value.size(), nullptr), WEFT_E_ALREADY_EXISTS);
  ASSERT_EQ(weft_store_register_buffer(store_, area.data(), area.size()), WEFT_OK) << weft_last_error();
  EXPECT_EQ(weft_store_get_into(store_, "k", area.data(), area.size()), 5000);
  EXPECT_TRUE(std::equal(value.begin(), value.end(), area.begin()));
  EXPECT_EQ(area[5000], 0xA5);
  EXPECT_EQ(weft_store_get_into(store_, "k", area.data(), 4999), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_get_into(store_, "nope", area.data(), area.size()), WEFT_E_NOT_FOUND);
  uint64_t size = 0;
  EXPECT_EQ(weft_store_get_size(store_, "k", &size), WEFT_OK);
  EXPECT_EQ(size, 5000u);
  EXPECT_EQ(weft_store_exists(store_, "k"), 1);
  EXPECT_EQ(weft_store_exists(store_, "nope"), 0);
  uint64_t removed = 99;
  EXPECT_EQ(weft_store_remove_all(store_, 1, &removed), WEFT_OK) << weft_last_error();
  EXPECT_EQ(removed, 1u);
  EXPECT_EQ(weft_store_unregister_buffer(store_, area.data()), WEFT_OK);
}

TEST_F(CApiStoreHosted, BadArgumentsOnALiveStore) {
  char buf[64] = {};
  uint64_t n = 0;
  EXPECT_EQ(weft_store_put(store_, nullptr, buf, 1, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(weft_last_error()).find("key is NULL"), std::string::npos) << weft_last_error();
  EXPECT_EQ(weft_store_put(store_, "", buf, 1, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_put(store_, std::string(4097, 'k').c_str(), buf, 1, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_put(store_, "k", nullptr, 1, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(weft_last_error()).find("value is NULL"), std::string::npos) << weft_last_error();
  EXPECT_EQ(weft_store_put(store_, "k", buf, 0, nullptr), WEFT_E_INVALID_ARGUMENT);
  const weft_store_place none = {0, 0, 0, -1};
  EXPECT_EQ(weft_store_put(store_, "k", buf, 1, &none), WEFT_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(weft_last_error()).find("replicas"), std::string::npos) << weft_last_error();
  const weft_store_place nine = {9, 0, 0, -1};
  EXPECT_EQ(weft_store_upsert(store_, "k", buf, 1, &nine), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_put_from(store_, "k", buf, 1, &nine, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_put_from(store_, "k", nullptr, 1, nullptr, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_put_from(store_, "k", buf, sizeof buf, nullptr, 0), WEFT_E_NOT_REGISTERED);
  EXPECT_EQ(weft_store_get_into(store_, nullptr, buf, sizeof buf), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_get_into(store_, "k", nullptr, sizeof buf), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_get_size(store_, "k", nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_exists(store_, nullptr), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_remove(store_, nullptr, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_remove(store_, "k", 0), WEFT_E_NOT_FOUND);
  EXPECT_EQ(weft_store_remove_by_regex(store_, nullptr, 0, &n), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_remove_by_regex(store_, "(", 0, &n), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_remove_by_regex(store_, "x", 0, nullptr), WEFT_OK);  // the count is optional
  EXPECT_EQ(weft_store_register_buffer(store_, nullptr, 8), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_register_buffer(store_, buf, 0), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_unregister_buffer(store_, buf), WEFT_E_NOT_REGISTERED);
  EXPECT_EQ(weft_store_exists(store_, "k"), 0);  // nothing above was stored

  // Batches: NULL arrays or a NULL key refuse all; a bad key alone fails alone.
  const char* keys[3] = {"b0", nullptr, "b2"};
  const void* values[3] = {buf, buf, buf};
  const uint64_t sizes[3] = {8, 8, 8};
  int results[3] = {7, 7, 7};
  EXPECT_EQ(weft_store_put_batch(store_, keys, values, sizes, 3, nullptr, 0, results), WEFT_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(weft_last_error()).find("keys[1]"), std::string::npos) << weft_last_error();
  for (int r : results) EXPECT_EQ(r, WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_put_batch(store_, nullptr, values, sizes, 3, nullptr, 0, results), WEFT_E_INVALID_ARGUMENT);
  results[0] = 7;
  const char* good_keys[3] = {"b0", "b1", "b2"};
  EXPECT_EQ(weft_store_put_batch(store_, good_keys, values, sizes, 3, &nine, 0, results), WEFT_E_INVALID_ARGUMENT);
  for (int r : results) EXPECT_EQ(r, WEFT_E_INVALID_ARGUMENT);
  const void* null_value[3] = {buf, nullptr, buf};
  keys[1] = "b1";
  EXPECT_EQ(weft_store_put_batch(store_, keys, null_value, sizes, 3, nullptr, 0, results), WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(weft_store_exists(store_, "b0"), 0);
  keys[1] = "";
  EXPECT_EQ(weft_store_put_batch(store_, keys, values, sizes, 3, nullptr, 0, results), WEFT_E_INVALID_ARGUMENT);
  EXPECT_NE(std::string(weft_last_error()).find("key 1 of 3"), std::string::npos) << weft_last_error();
  EXPECT_EQ(results[0], WEFT_OK);
  EXPECT_EQ(results[1], WEFT_E_INVALID_ARGUMENT);
  EXPECT_EQ(results[2], WEFT_OK);
  EXPECT_EQ(weft_store_put_batch(store_, nullptr, nullptr, nullptr, 0, nullptr, 0, nullptr), WEFT_OK);
  EXPECT_EQ(weft_store_get_into_batch(store_, nullptr, nullptr, nullptr, 0, nullptr), WEFT_OK);
}
