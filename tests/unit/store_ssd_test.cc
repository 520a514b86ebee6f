// The store's SSD tier on its own: files written and read back exactly, torn and corrupted files
// refused (and deleted), the oldest files making room, leftovers of an earlier run cleared.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "api/store/ssd_tier.h"
#include "base/random.h"

namespace weft::store {
namespace {

namespace fs = std::filesystem;

class StoreSsd : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("weft-ssd-test-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<uint8_t> Value(size_t n, uint64_t seed) {
    std::vector<uint8_t> v(n);
    FillRandom(v.data(), n, seed);
    return v;
  }
  std::string FileOf(uint64_t id) const { return (dir_ / (std::to_string(id) + ".wobj")).string(); }
  // Flips one byte of a file at `offset` from its end.
  void FlipFromEnd(const std::string& path, size_t offset) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-static_cast<std::streamoff>(offset), std::ios::end);
    char c = 0;
    f.read(&c, 1);
    f.seekp(-static_cast<std::streamoff>(offset), std::ios::end);
    c = static_cast<char>(c ^ 0x40);
    f.write(&c, 1);
  }

  fs::path dir_;
};

TEST_F(StoreSsd, PartsAreWrittenAndReadBackExactly) {
  auto tier = SsdTier::Open(dir_.string(), 64 << 20);
  ASSERT_TRUE(tier.ok()) << tier.status().ToString();
  const uint64_t seed = FreshSeed();
  const auto a = Value(1000, seed), b = Value(3 << 20, seed + 1);
  const Span parts[] = {{a.data(), a.size()}, {nullptr, 0}, {b.data(), b.size()}};
  ASSERT_TRUE((*tier)->Write(7, "layer/7", parts).ok());
  std::vector<uint8_t> back(a.size() + b.size(), 0xA5);
  ASSERT_TRUE((*tier)->Read(7, "layer/7", back.data(), back.size()).ok());
  EXPECT_TRUE(std::equal(a.begin(), a.end(), back.begin()));
  EXPECT_TRUE(std::equal(b.begin(), b.end(), back.begin() + a.size()));
  EXPECT_GE((*tier)->used(), back.size());
  EXPECT_EQ((*tier)->Read(8, "layer/7", back.data(), back.size()).code(), Code::kNotFound);
}

TEST_F(StoreSsd, AFileOfAnotherKeyOrSizeIsNeverServed) {
  auto tier = SsdTier::Open(dir_.string(), 1 << 20);
  ASSERT_TRUE(tier.ok());
  const auto v = Value(4096, FreshSeed());
  const Span part{v.data(), v.size()};
  ASSERT_TRUE((*tier)->Write(1, "k", {&part, 1}).ok());
  std::vector<uint8_t> back(8192);
  EXPECT_EQ((*tier)->Read(1, "other", back.data(), 4096).code(), Code::kIo);
  EXPECT_FALSE(fs::exists(FileOf(1))) << "a file that fails its checks is deleted";
  ASSERT_TRUE((*tier)->Write(2, "k", {&part, 1}).ok());
  EXPECT_EQ((*tier)->Read(2, "k", back.data(), 4095).code(), Code::kIo);
}

TEST_F(StoreSsd, CorruptedAndTornFilesAreRefusedAndDeleted) {
  auto tier = SsdTier::Open(dir_.string(), 1 << 20);
  ASSERT_TRUE(tier.ok());
  const auto v = Value(10000, FreshSeed());
  const Span part{v.data(), v.size()};
  std::vector<uint8_t> back(v.size());
  // A flipped byte in the value, in the key, in the header.
  const size_t flips[] = {1, 5000, v.size() + 1, v.size() + 1 + 8};
  uint64_t id = 10;
  for (size_t at : flips) {
    ASSERT_TRUE((*tier)->Write(++id, "key", {&part, 1}).ok());
    FlipFromEnd(FileOf(id), at);
    EXPECT_EQ((*tier)->Read(id, "key", back.data(), back.size()).code(), Code::kIo) << "flip at -" << at;
    EXPECT_FALSE(fs::exists(FileOf(id)));
  }
  // Torn: the file ends early.
  ASSERT_TRUE((*tier)->Write(++id, "key", {&part, 1}).ok());
  fs::resize_file(FileOf(id), fs::file_size(FileOf(id)) - 100);
  EXPECT_EQ((*tier)->Read(id, "key", back.data(), back.size()).code(), Code::kIo);
  EXPECT_EQ((*tier)->used(), 0u);
}

TEST_F(StoreSsd, TheOldestFilesMakeRoomAndAValueLargerThanTheTierIsRefused) {
  auto tier = SsdTier::Open(dir_.string(), 3 * (100 << 10) + 1000);
  ASSERT_TRUE(tier.ok());
  const auto v = Value(100 << 10, FreshSeed());
  const Span part{v.data(), v.size()};
  for (uint64_t id = 1; id <= 5; ++id) ASSERT_TRUE((*tier)->Write(id, "k" + std::to_string(id), {&part, 1}).ok());
  std::vector<uint8_t> back(v.size());
  EXPECT_EQ((*tier)->Read(1, "k1", back.data(), back.size()).code(), Code::kNotFound);
  EXPECT_EQ((*tier)->Read(2, "k2", back.data(), back.size()).code(), Code::kNotFound);
  for (uint64_t id = 3; id <= 5; ++id) {
    ASSERT_TRUE((*tier)->Read(id, "k" + std::to_string(id), back.data(), back.size()).ok()) << id;
    EXPECT_EQ(back, v);
  }
  EXPECT_LE((*tier)->used(), (*tier)->capacity());
  const auto big = Value(400 << 10, 1);
  const Span large{big.data(), big.size()};
  EXPECT_EQ((*tier)->Write(9, "big", {&large, 1}).code(), Code::kInvalidArgument);
}

TEST_F(StoreSsd, FilesOfAnEarlierRunAreClearedAndBadSettingsRefused) {
  fs::create_directories(dir_);
  std::ofstream(dir_ / "3.wobj") << "old";
  std::ofstream(dir_ / "keep.txt") << "not ours";
  auto tier = SsdTier::Open(dir_.string(), 1 << 20);
  ASSERT_TRUE(tier.ok());
  EXPECT_FALSE(fs::exists(dir_ / "3.wobj"));
  EXPECT_TRUE(fs::exists(dir_ / "keep.txt"));
  EXPECT_EQ(SsdTier::Open(dir_.string(), 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(SsdTier::Open("/proc/no/such/dir", 1 << 20).status().code(), Code::kIo);
}

}  // namespace
}  // namespace weft::store
