// The HDF5 wrapper: a chunked dataset with attributes written to a temp file reads back through hyperslabs, and the
// file is readable by h5dump, i.e. by tools other than ours.
#include "data/hdf5_file.h"

#include <gtest/gtest.h>

#include <fstream>
#include <numeric>

#include "support/temp_dir.h"

using mlagpt::data::h5::File;
using mlagpt::testing::TempDir;

TEST(Hdf5File, ChunkedDatasetAndAttributesRoundTripThroughHyperslabs) {
  TempDir dir;
  const auto path = dir / "tokens.h5";
  std::vector<uint16_t> tokens(10000);
  std::iota(tokens.begin(), tokens.end(), uint16_t{0});
  {
    File file = File::create(path);
    auto dataset = file.create_dataset<uint16_t>("/tokens", {tokens.size()}, {1024});
    // Written in two uneven pieces, across chunk boundaries.
    dataset.write(std::span<const uint16_t>(tokens).first(3000), {0}, {3000});
    dataset.write(std::span<const uint16_t>(tokens).subspan(3000), {3000}, {7000});
    auto matrix = file.create_dataset<float>("/group/matrix", {4, 6}, {2, 3});
    std::vector<float> values(24);
    std::iota(values.begin(), values.end(), 0.5F);
    matrix.write(std::span<const float>(values), {0, 0}, {4, 6});
    file.set_attribute("format", std::string("mlagpt.tokens"));
    file.set_attribute("vocab_size", int64_t{50304});
    file.set_attribute("val_fraction", 0.125);
  }
  File file = File::open(path);
  EXPECT_EQ(file.string_attribute("format"), "mlagpt.tokens");
  EXPECT_EQ(file.int_attribute("vocab_size"), 50304);
  EXPECT_DOUBLE_EQ(file.float_attribute("val_fraction"), 0.125);
  auto dataset = file.open_dataset("/tokens");
  EXPECT_EQ(dataset.shape(), std::vector<uint64_t>{10000});
  EXPECT_EQ(dataset.chunk_shape(), std::vector<uint64_t>{1024});
  EXPECT_EQ(dataset.element_bytes(), 2U);
  EXPECT_TRUE(dataset.is_unsigned());
  std::vector<uint16_t> window(1025);
  dataset.read(std::span<uint16_t>(window), {5000}, {1025});
  for (size_t i = 0; i < window.size(); ++i) {
    ASSERT_EQ(window[i], tokens[5000 + i]);
  }
  auto matrix = file.open_dataset("/group/matrix");
  std::vector<float> block(2 * 3);
  matrix.read(std::span<float>(block), {1, 2}, {2, 3});  // rows 1..2, columns 2..4
  EXPECT_EQ(block, (std::vector<float>{8.5F, 9.5F, 10.5F, 14.5F, 15.5F, 16.5F}));
  EXPECT_EQ(dataset.read_all<uint16_t>(), tokens);
}

TEST(Hdf5File, H5dumpReadsWhatWeWrite) {
  TempDir dir;
  const auto path = dir / "small.h5";
  {
    File file = File::create(path);
    auto dataset = file.create_dataset<int64_t>("/doc_offsets", {4}, {4});
    const std::vector<int64_t> offsets{0, 17, 4242, 99999};
    dataset.write(std::span<const int64_t>(offsets), {0}, {4});
    file.set_attribute("tokenizer", std::string("byte"));
  }
  int status = 0;
  const std::string dump = mlagpt::testing::run_command(std::string(MLAGPT_H5DUMP) + " " + path.string(), &status);
  EXPECT_EQ(status, 0) << dump;
  EXPECT_NE(dump.find("DATASET \"doc_offsets\""), std::string::npos) << dump;
  EXPECT_NE(dump.find("0, 17, 4242, 99999"), std::string::npos) << dump;
  EXPECT_NE(dump.find("\"byte\""), std::string::npos) << dump;
}

TEST(Hdf5File, ErrorsNameTheFileAndTheProblem) {
  TempDir dir;
  try {
    File::open(dir / "missing.h5");
    FAIL() << "no exception";
  } catch (const mlagpt::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.h5: no such file"), std::string::npos) << e.what();
  }
  const auto text = dir / "not_hdf5.h5";
  std::ofstream(text) << "plain text";
  try {
    File::open(text);
    FAIL() << "no exception";
  } catch (const mlagpt::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("not an HDF5 file"), std::string::npos) << e.what();
  }
  File file = File::create(dir / "x.h5");
  EXPECT_THROW(File::create(dir / "x.h5"), mlagpt::Hdf5Error);  // exists, not overwritten
  auto dataset = file.create_dataset<float>("/a", {4});
  std::vector<float> five(5);
  try {
    dataset.write(std::span<const float>(five), {0}, {5});
    FAIL() << "no exception";
  } catch (const mlagpt::Hdf5Error& e) {
    EXPECT_NE(std::string(e.what()).find("x.h5:/a"), std::string::npos) << e.what();
  }
  EXPECT_THROW(file.open_dataset("/nope"), mlagpt::Hdf5Error);
  EXPECT_THROW(file.string_attribute("absent"), mlagpt::Hdf5Error);
}
