// The public headers stand alone: this file is compiled with include/ as weft's only include
// directory (tests/CMakeLists.txt), so it compiles only if include/weft/*.h name no internal
// type and include nothing from src/. It links the library and uses the front ends a little,
// so the declarations also match what the library defines.
#include <weft/config.h>
#include <weft/pool.h>
#include <weft/status.h>
#include <weft/transfer_engine.h>

#if __has_include("base/status.h") || __has_include("engine/engine.h")
#error "src/ is on this test's include path: it would not prove that the public headers stand alone"
#endif

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace {

TEST(PublicHeaders, StatusAndResultAreUsable) {
  weft::Result<int> missing = weft::Status(weft::Code::kNotFound, "nothing here");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(weft::CodeName(missing.status().code()), "NOT_FOUND");
  weft::Result<int> three = 3;
  EXPECT_EQ(three.value_or(0), 3);
}

TEST(PublicHeaders, ConfigLoadsWithOverrides) {
  auto config = weft::LoadConfig("", {{"pool_name", "public-headers"}, {"rank_size", "4MiB"}});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->pool_name, "public-headers");
  EXPECT_EQ(config->rank_size, 4u << 20);
}

TEST(PublicHeaders, PoolVocabularyIsPublic) {
  auto placement = weft::bm::Placement::OnRank(2, weft::bm::Medium::kDevice);
  EXPECT_EQ(placement.rank, 2u);
  weft::bm::CopyHandle empty;
  EXPECT_FALSE(empty.valid());
  EXPECT_EQ(empty.Wait(weft::Deadline::After(std::chrono::milliseconds(1))).code(), weft::Code::kInvalidArgument);
  weft::bm::JoinMode mode = weft::bm::JoinMode::kJoin;
  EXPECT_EQ(static_cast<int>(mode), 2);
}

TEST(PublicHeaders, TransferEngineWritesToItself) {
  weft::trans::TransferEngineOptions options;
  options.auth.allow_unauthenticated = true;
  auto engine = weft::trans::TransferEngine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  std::vector<uint8_t> from(4096, 0x5A), to(4096, 0);
  ASSERT_TRUE((*engine)->RegisterMemory(from.data(), from.size()).ok());
  ASSERT_TRUE((*engine)->RegisterMemory(to.data(), to.size()).ok());
  auto self = (*engine)->OpenSegment((*engine)->name());
  ASSERT_TRUE(self.ok()) << self.status().ToString();
  std::vector<weft::trans::TransferRequest> requests = {
      {weft::trans::Opcode::kWrite, from.data(), *self, reinterpret_cast<uint64_t>(to.data()), from.size()}};
  for (const weft::Status& s : (*engine)->Transfer(requests)) EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(to, from);
  EXPECT_NE((*engine)->MetricsText().find("weft_trans_batches_total"), std::string::npos);
}

}  // namespace
