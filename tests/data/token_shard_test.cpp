// Token shards: what ShardWriter writes, ShardReader reads back exactly (uint16 and uint32 vocabularies); a
// writer that does not finish leaves no file; every malformed shard is refused with the file and the problem named.
#include "data/token_shard.h"

#include <gtest/gtest.h>

#include <fstream>

#include "data/hdf5_file.h"
#include "launch/error.h"
#include "support/temp_dir.h"

using mlagpt::data::ShardInfo;
using mlagpt::data::ShardReader;
using mlagpt::data::ShardWriter;
using mlagpt::testing::TempDir;

namespace {

ShardInfo info(int64_t vocab) {
  return {vocab, vocab - 1, "byte", std::string(64, 'a')};
}

void write_shard(const std::filesystem::path& path, int64_t vocab, const std::vector<std::vector<int32_t>>& docs) {
  int64_t total = 0;
  for (const auto& d : docs) {
    total += static_cast<int64_t>(d.size());
  }
  ShardWriter writer(path, info(vocab), total, static_cast<int64_t>(docs.size()));
  for (const auto& d : docs) {
    writer.add_document(d);
  }
  writer.finish();
}

std::string open_error(const std::filesystem::path& path) {
  try {
    ShardReader reader(path);
    reader.check_token_range();
  } catch (const mlagpt::Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(TokenShard, RoundTripsSmallAndLargeVocabularies) {
  TempDir dir;
  for (const int64_t vocab : {int64_t{257}, int64_t{65536}, int64_t{100000}}) {
    const auto path = dir / ("shard_" + std::to_string(vocab) + ".h5");
    std::vector<int32_t> a(1000);
    for (size_t i = 0; i < a.size(); ++i) {
      a[i] = static_cast<int32_t>(static_cast<int64_t>(i) % vocab);
    }
    std::vector<int32_t> b{static_cast<int32_t>(vocab - 1), 0, 5};
    write_shard(path, vocab, {a, b});
    const ShardReader reader(path);
    EXPECT_EQ(reader.num_tokens(), 1003);
    EXPECT_EQ(reader.info().vocab_size, vocab);
    EXPECT_EQ(reader.info().eot_id, vocab - 1);
    EXPECT_EQ(reader.doc_offsets(), (std::vector<uint64_t>{0, 1000}));
    std::vector<int64_t> window(6);
    reader.read(997, window);
    EXPECT_EQ(window, (std::vector<int64_t>{997 % vocab, 998 % vocab, 999 % vocab, vocab - 1, 0, 5}));
    EXPECT_NO_THROW(reader.check_token_range());
    EXPECT_THROW(reader.read(1000, window), mlagpt::DataError);  // past the end
  }
}

TEST(TokenShard, UnfinishedWriterLeavesNoFileAndOutOfRangeTokensAreRefused) {
  TempDir dir;
  const auto path = dir / "train_00000.h5";
  {
    ShardWriter writer(path, info(257), 3, 1);
    writer.add_document(std::vector<int32_t>{1, 2, 3});
  }  // no finish(): as if the process died
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  ShardWriter writer(path, info(257), 2, 1);
  EXPECT_THROW(writer.add_document(std::vector<int32_t>{1, 300}), mlagpt::DataError);
  ShardWriter short_writer(path, info(257), 5, 1);
  short_writer.add_document(std::vector<int32_t>{1});
  EXPECT_THROW(short_writer.finish(), mlagpt::DataError);  // fewer tokens than announced
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(TokenShard, MalformedShardsAreRefusedNamingFileAndProblem) {
  TempDir dir;
  const auto good = dir / "good.h5";
  write_shard(good, 257, {std::vector<int32_t>(5000, 7)});

  EXPECT_NE(open_error(dir / "missing.h5").find("missing.h5: no such file"), std::string::npos);
  const auto text = dir / "text.h5";
  std::ofstream(text) << "not hdf5";
  EXPECT_NE(open_error(text).find("text.h5: not an HDF5 file"), std::string::npos);

  // Truncated: the last bytes of the token data are gone.
  const auto truncated = dir / "truncated.h5";
  std::filesystem::copy_file(good, truncated);
  std::filesystem::resize_file(truncated, std::filesystem::file_size(good) - 4000);
  const std::string truncation = open_error(truncated);
  EXPECT_NE(truncation.find("truncated.h5"), std::string::npos) << truncation;

  const auto edit = [&](const std::string& name, const auto& change) {
    const auto path = dir / name;
    std::filesystem::copy_file(good, path);
    {
      auto file = mlagpt::data::h5::File::open(path, /*writable=*/true);
      change(file);
    }
    return open_error(path);
  };
  using mlagpt::data::h5::File;
  EXPECT_NE(edit("format.h5", [](File& f) { f.set_attribute("format", std::string("other")); })
                .find("format is 'other', expected 'mlagpt.tokens'"),
            std::string::npos);
  EXPECT_NE(edit("version.h5", [](File& f) { f.set_attribute("version", int64_t{7}); }).find("version 7"),
            std::string::npos);
  EXPECT_NE(edit("count.h5", [](File& f) { f.set_attribute("num_tokens", int64_t{4}); })
                .find("num_tokens says 4 but /tokens holds 5000"),
            std::string::npos);
  // A token id at or above vocab_size: shrink the vocabulary under the stored tokens (all 7).
  EXPECT_NE(edit("range.h5",
                 [](File& f) {
                   f.set_attribute("vocab_size", int64_t{7});
                   f.set_attribute("eot_id", int64_t{6});
                 })
                .find("token 7 at position 0 is >= vocab_size 7"),
            std::string::npos);
  // A window read finds it too, so the loader reports it instead of an embedding lookup failing.
  const ShardReader reader(dir / "range.h5");
  std::vector<int64_t> window(4);
  try {
    reader.read(10, window);
    FAIL() << "no error";
  } catch (const mlagpt::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("range.h5: token 7 at position 10 is >= vocab_size 7"), std::string::npos)
        << e.what();
  }
}

TEST(TokenShard, OtherToolsReadIt) {
  TempDir dir;
  const auto path = dir / "val_00000.h5";
  write_shard(path, 257, {{10, 11, 256}, {12, 256}});
  int status = -1;
  const std::string dump = mlagpt::testing::run_command(std::string(MLAGPT_H5DUMP) + " " + path.string(), &status);
  EXPECT_EQ(status, 0) << dump;
  EXPECT_NE(dump.find("10, 11, 256, 12, 256"), std::string::npos) << dump;
  EXPECT_NE(dump.find("\"mlagpt.tokens\""), std::string::npos) << dump;
}
