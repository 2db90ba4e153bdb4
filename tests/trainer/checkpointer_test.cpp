// Damaged checkpoints and how they are refused. One small run (checkpoints of steps 2 and 4, format 4, written by one
// rank: one piece per tensor) is trained once; each test damages a copy of it: a truncated rank file, a
// metadata.json cut in half, not JSON, or with a piece table that leaves part of a tensor out, one flipped byte inside
// a parameter, an optimizer moment or the RNG state (found with H5Dget_offset, so that tensor bytes change, not
// HDF5's headers), a dataset of another tokenizer, a `latest` naming a missing or incomplete step, a save that fails.
// Each must be a clear error naming the file with nothing restored, or under `--resume auto` a warning naming the
// file and a resume from the checkpoint before it; never a crash or a silent fresh start. Also: rotation (`keep`),
// `latest`, eval's fallback, the bytes save and load report, and checkpoints of versions 3 (no tensor-parallel
// parts), 2 (one file, whole tensors) and 1 (no checksums) still loading the same state. Tests use the Checkpointer API
// over a FlatAdamW on one rank and the real `mlagpt` executable; tests/trainer/checkpointer_mpi_test.cpp covers several
// ranks and resharding.
#include "trainer/checkpointer.h"

#include <ATen/ops/equal.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "data/dataset_manifest.h"
#include "data/hdf5_file.h"
#include "data/prepare.h"
#include "data/sha256.h"
#include "launch/error.h"
#include "support/small_dataset.h"
#include "support/temp_dir.h"
#include "support/test_runtime.h"
#include "trainer/optimizer.h"
#include "trainer/parallel/flat_adamw.h"
#include "trainer/trainer.h"

namespace fs = std::filesystem;
using mlagpt::trainer::Checkpointer;
using mlagpt::trainer::TrainConfig;

using mlagpt::testing::runtime;

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// The file offset of a contiguous dataset's first byte.
uint64_t data_offset(const fs::path& file, const std::string& dataset) {
  const auto h5 = mlagpt::data::h5::File::open(file);
  const auto opened = h5.open_dataset(dataset);
  const haddr_t offset = H5Dget_offset(opened.id());
  EXPECT_NE(offset, HADDR_UNDEF) << dataset << " is not contiguous";
  return offset;
}

// Flips the lowest bit of the byte `index` bytes into `dataset`'s data: for a float, a change in the last place of
// its mantissa, the kind of damage that would otherwise go unnoticed.
void flip_byte(const fs::path& file, const std::string& dataset, uint64_t index) {
  const uint64_t offset = data_offset(file, dataset) + index;
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(static_cast<std::streamoff>(offset));
  char byte = 0;
  io.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x01);
  io.seekp(static_cast<std::streamoff>(offset));
  io.write(&byte, 1);
  ASSERT_TRUE(io.good()) << file;
}

// Captures what the default logger writes while it lives.
class CapturedLog {
 public:
  CapturedLog() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(text_)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~CapturedLog() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  std::string text() const { return text_.str(); }

 private:
  std::ostringstream text_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

// A model and optimizer as a run of `config` starts them, to load checkpoints into.
struct Target {
  explicit Target(const TrainConfig& config, mlagpt::launch::Communicator& comm) : model(config.model) {
    std::vector<mlagpt::trainer::NamedParameter> parameters;
    for (const auto& item : model.named_parameters()) {
      parameters.push_back({item.key(), item.value(), mlagpt::trainer::decays(item.key(), item.value())});
      initial[item.key()] = item.value().detach().clone();
    }
    optimizer = std::make_unique<mlagpt::trainer::FlatAdamW>(
        std::move(parameters),
        mlagpt::trainer::AdamWSettings{config.optim.beta1, config.optim.beta2, config.optim.eps,
                                       config.optim.weight_decay},
        mlagpt::trainer::FlatOptions{.bucket_bytes = static_cast<int64_t>(config.parallel.bucket_mb * (1 << 20)),
                                     .zero = config.parallel.zero != 0},
        comm);
  }
  // Whether nothing of a checkpoint reached the model or the optimizer.
  void expect_untouched() {
    for (const auto& item : model.named_parameters()) {
      EXPECT_TRUE(at::equal(item.value(), initial[item.key()])) << item.key() << " was restored";
    }
    EXPECT_EQ(optimizer->step_count(), 0) << "the optimizer's step count was restored";
    for (const auto& slice : optimizer->held_slices()) {
      EXPECT_EQ(slice.exp_avg.abs().max().item<float>(), 0.0F) << "optimizer state was restored";
      EXPECT_EQ(slice.exp_avg_sq.abs().max().item<float>(), 0.0F) << "optimizer state was restored";
    }
  }
  mlagpt::model::Gpt model;
  std::unique_ptr<mlagpt::trainer::FlatAdamW> optimizer;
  std::map<std::string, at::Tensor> initial;
};

class CheckpointerTest : public testing::Test {
 protected:
  // The dataset (byte tokenizer, a validation split for eval), the same text prepared with the char tokenizer, and
  // the run every test damages a copy of.
  static void SetUpTestSuite() {
    suite_ = new mlagpt::testing::TempDir();
    mlagpt::testing::prepare_small_byte_dataset(suite_->path());
    mlagpt::data::PrepareConfig prepare;
    prepare.inputs = {(*suite_ / "text").string()};
    prepare.tokenizer = "char";
    prepare.out = *suite_ / "char_data";
    prepare.val_fraction = 0.25;
    prepare.threads = 1;
    mlagpt::data::prepare_dataset(prepare);
    mlagpt::trainer::Trainer(config(*suite_ / "source", 4), runtime()).train("");
  }
  static void TearDownTestSuite() {
    delete suite_;
    suite_ = nullptr;
  }

  void SetUp() override {
    fs::copy(*suite_ / "source", run(), fs::copy_options::recursive);
    ASSERT_TRUE(Checkpointer::is_complete(step(2)));
    ASSERT_TRUE(Checkpointer::is_complete(step(4)));
  }

  static std::vector<std::string> overrides(const fs::path& out_dir, int64_t max_steps,
                                            const std::string& data = "data") {
    return {"--run.out_dir=" + out_dir.string(),
            "--run.device=cpu",
            "--run.threads=1",
            "--run.max_steps=" + std::to_string(max_steps),
            "--data.dir=" + (*suite_ / data).string(),
            "--data.batch_size=2",
            "--data.seq_len=24",
            "--model.vocab_size=257",
            "--model.block_size=24",
            "--model.n_layer=2",
            "--model.n_embd=48",
            "--model.n_head=4",
            "--model.kv_lora_rank=20",
            "--model.qk_nope_head_dim=12",
            "--model.qk_rope_head_dim=4",
            "--model.v_head_dim=10",
            "--schedule.warmup_steps=1",
            "--schedule.decay_steps=10",
            "--eval.every=0",
            "--checkpoint.every=2",
            "--checkpoint.keep=3"};
  }
  static TrainConfig config(const fs::path& out_dir, int64_t max_steps) {
    return mlagpt::trainer::read_train_config({}, overrides(out_dir, max_steps));
  }
  // `mlagpt ARGS 2>&1` with the exit status in `status`.
  static std::string mlagpt(const std::string& arguments, int* status, const std::string& prefix = "") {
    return mlagpt::testing::run_command(fmt::format("{}{} {} 2>&1", prefix, MLAGPT_EXECUTABLE, arguments), status);
  }
  std::string train_arguments(int64_t max_steps, const std::string& resume, const std::string& data = "data") const {
    std::string text = "train --resume " + resume;
    for (const auto& item : overrides(run(), max_steps, data)) {
      text += " " + item;
    }
    return text;
  }

  fs::path run() const { return dir_ / "run"; }
  fs::path checkpoints() const { return run() / "checkpoints"; }
  fs::path step(int64_t n) const { return checkpoints() / fmt::format("step_{:08d}", n); }
  fs::path rank_file(int64_t n) const { return step(n) / "rank_00000.h5"; }

  mlagpt::trainer::DatasetIdentity identity(const std::string& data = "data") const {
    const auto manifest = mlagpt::data::read_dataset_manifest(*suite_ / data);
    return {manifest.tokenizer.name, manifest.tokenizer.sha256, manifest.tokenizer.vocab_size};
  }
  // Checkpointer::resume(`resume`) into a fresh model; returns the step resumed (-1: none).
  int64_t resume(Target& target, const std::string& resume, const std::string& data = "data") {
    const auto state =
        Checkpointer(checkpoints(), 3, local_).resume(resume, *target.optimizer, config(run(), 8), identity(data));
    return state ? state->step : -1;
  }

  // Each kind of damage to step 4: an explicit load of it fails with `Expected` naming `named` (and nothing is
  // restored), and `--resume auto` warns naming it and resumes step 2.
  template <typename Expected>
  void expect_refused_then_skipped(const std::string& named) {
    {
      Target target(config(run(), 8), local_);
      try {
        resume(target, step(4).string());
        ADD_FAILURE() << "loaded the damaged " << step(4);
      } catch (const Expected& e) {
        EXPECT_NE(std::string(e.what()).find(named), std::string::npos) << e.what();
      }
      target.expect_untouched();
    }
    Target target(config(run(), 8), local_);
    const CapturedLog log;
    EXPECT_EQ(resume(target, "auto"), 2);
    EXPECT_NE(log.text().find("skips " + step(4).string()), std::string::npos) << log.text();
    EXPECT_NE(log.text().find(named), std::string::npos) << log.text();
  }

  static mlagpt::testing::TempDir* suite_;
  mlagpt::testing::TempDir dir_;
  mlagpt::launch::LocalCommunicator local_;
};

mlagpt::testing::TempDir* CheckpointerTest::suite_ = nullptr;

}  // namespace

TEST_F(CheckpointerTest, TruncatedRankFileIsRefusedAndSkipped) {
  fs::resize_file(rank_file(4), fs::file_size(rank_file(4)) / 2);
  expect_refused_then_skipped<mlagpt::IoError>(rank_file(4).string());
}

TEST_F(CheckpointerTest, MetadataCutInHalfIsRefusedAndSkipped) {
  const std::string text = read_text(step(4) / "metadata.json");
  write_text(step(4) / "metadata.json", text.substr(0, text.size() / 2));
  expect_refused_then_skipped<mlagpt::IoError>((step(4) / "metadata.json").string());
}

TEST_F(CheckpointerTest, MetadataThatIsNotJsonIsRefusedAndSkipped) {
  write_text(step(4) / "metadata.json", "this is not JSON\n");
  expect_refused_then_skipped<mlagpt::IoError>((step(4) / "metadata.json").string());
}

TEST_F(CheckpointerTest, MetadataOfTheWrongShapeIsRefusedAndSkipped) {
  auto json = nlohmann::json::parse(read_text(step(4) / "metadata.json"));
  json["step"] = "four";
  write_text(step(4) / "metadata.json", json.dump());
  expect_refused_then_skipped<mlagpt::IoError>((step(4) / "metadata.json").string());
}

// A parameter restored last, an optimizer moment and the CPU generator's state: each is verified before anything
// is restored.
TEST_F(CheckpointerTest, FlippedByteInAParameterIsRefusedAndSkipped) {
  const Target probe(config(run(), 8), local_);
  const std::string last = probe.model.named_parameters().keys().back();
  flip_byte(rank_file(4), "/params/" + last + "/0", 5);
  expect_refused_then_skipped<mlagpt::DataError>(
      fmt::format("{}: tensor /params/{}/0 is corrupt", rank_file(4).string(), last));
}

TEST_F(CheckpointerTest, FlippedByteInAnOptimizerMomentIsRefusedAndSkipped) {
  flip_byte(rank_file(4), "/optim/wte.weight/0/exp_avg_sq", 17);
  expect_refused_then_skipped<mlagpt::DataError>(
      fmt::format("{}: tensor /optim/wte.weight/0/exp_avg_sq is corrupt", rank_file(4).string()));
}

TEST_F(CheckpointerTest, FlippedByteInTheRngStateIsRefusedAndSkipped) {
  flip_byte(rank_file(4), "/rng/cpu", 100);
  expect_refused_then_skipped<mlagpt::DataError>(fmt::format("{}: tensor /rng/cpu is corrupt", rank_file(4).string()));
}

TEST_F(CheckpointerTest, FlippedByteFailsEvalOfThatStepAndEvalOfTheDirectoryTakesTheOneBefore) {
  const Target probe(config(run(), 8), local_);
  const std::string first = probe.model.named_parameters().keys().front();
  flip_byte(rank_file(4), "/params/" + first + "/0", 2);
  int status = 0;
  std::string output = mlagpt(fmt::format("eval --device cpu --batches 1 --ckpt {}", step(4).string()), &status);
  EXPECT_EQ(status, 1) << output;
  EXPECT_NE(output.find(fmt::format("{}: tensor /params/{}/0 is corrupt", rank_file(4).string(), first)),
            std::string::npos)
      << output;
  output = mlagpt(fmt::format("eval --device cpu --batches 1 --ckpt {}", checkpoints().string()), &status);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("skips " + step(4).string()), std::string::npos) << output;
  EXPECT_NE(output.find("val loss"), std::string::npos) << output;
}

TEST_F(CheckpointerTest, ADatasetOfAnotherTokenizerIsAConfigErrorNamingBoth) {
  Target target(config(run(), 8), local_);
  for (const std::string& resume_arg : {std::string("auto"), step(2).string()}) {
    try {
      resume(target, resume_arg, "char_data");
      ADD_FAILURE() << "resumed on a dataset of another tokenizer";
    } catch (const mlagpt::ConfigError& e) {
      const std::string text = e.what();
      // auto never falls back over a mismatch: every checkpoint of the run has the same tokenizer.
      EXPECT_NE(text.find(resume_arg == "auto" ? step(4).string() : step(2).string()), std::string::npos) << text;
      EXPECT_NE(text.find("tokenizer: byte ("), std::string::npos) << text;
      EXPECT_NE(text.find("!= char ("), std::string::npos) << text;
    }
    target.expect_untouched();
  }
  int status = 0;
  const std::string output = mlagpt(train_arguments(8, "auto", "char_data"), &status);
  EXPECT_EQ(status, 1) << output;
  EXPECT_NE(output.find("tokenizer: byte ("), std::string::npos) << output;
  EXPECT_FALSE(fs::exists(step(6))) << output;
}

TEST_F(CheckpointerTest, AutoWithNoLoadableCheckpointIsAnErrorNotAFreshStart) {
  write_text(step(2) / "metadata.json", "{");
  fs::resize_file(rank_file(4), 100);
  Target target(config(run(), 8), local_);
  try {
    resume(target, "auto");
    ADD_FAILURE() << "started from scratch over two damaged checkpoints";
  } catch (const mlagpt::IoError& e) {
    const std::string text = e.what();
    EXPECT_NE(text.find("none of the 2 complete checkpoints"), std::string::npos) << text;
    EXPECT_NE(text.find((step(2) / "metadata.json").string()), std::string::npos) << text;
    EXPECT_NE(text.find(rank_file(4).string()), std::string::npos) << text;
  }
  target.expect_untouched();
  int status = 0;
  const std::string output = mlagpt(train_arguments(8, "auto"), &status);
  EXPECT_EQ(status, 1) << output;
  EXPECT_EQ(output.find("no complete checkpoint in"), std::string::npos) << output;  // the fresh start's message
  EXPECT_FALSE(fs::exists(step(6))) << output;
}

TEST_F(CheckpointerTest, TrainResumeAutoSaysWhatItSkippedAndContinues) {
  flip_byte(rank_file(4), "/params/wte.weight/0", 0);
  int status = 0;
  std::string output = mlagpt(train_arguments(6, step(4).string()), &status);
  EXPECT_EQ(status, 1) << output;
  EXPECT_NE(output.find(rank_file(4).string() + ": tensor /params/wte.weight/0 is corrupt"), std::string::npos)
      << output;
  output = mlagpt(train_arguments(6, "auto"), &status);
  ASSERT_EQ(status, 0) << output;
  EXPECT_NE(output.find("skips " + step(4).string()), std::string::npos) << output;
  EXPECT_NE(output.find("resumed from " + step(2).string()), std::string::npos) << output;
  // The damaged step 4 was written again on the way to step 6.
  Target target(config(run(), 8), local_);
  EXPECT_EQ(resume(target, step(4).string()), 4);
  EXPECT_EQ(read_text(checkpoints() / "latest"), "step_00000006\n");
}

TEST_F(CheckpointerTest, LatestNamingAMissingOrIncompleteStepFallsBackToTheNewestComplete) {
  for (const bool incomplete : {false, true}) {
    SCOPED_TRACE(incomplete ? "incomplete" : "missing");
    if (incomplete) {
      // What a save killed before its metadata.json leaves.
      fs::create_directories(step(6));
      fs::copy_file(rank_file(4), rank_file(6));
    }
    write_text(checkpoints() / "latest", "step_00000006\n");
    EXPECT_EQ(Checkpointer(checkpoints(), 3, local_).find("auto"), step(4));
    Target target(config(run(), 8), local_);
    const CapturedLog log;
    EXPECT_EQ(resume(target, "auto"), 4);
    EXPECT_NE(log.text().find((checkpoints() / "latest").string() + " names step_00000006, which is not a complete"),
              std::string::npos)
        << log.text();
  }
}

TEST_F(CheckpointerTest, RotationKeepsTheLastTwoAndLatestNamesTheNewest) {
  const fs::path dir = dir_ / "rotation";
  const TrainConfig train = config(dir_ / "rotation_run", 8);
  Target target(train, local_);
  Checkpointer checkpointer(dir, 2, local_);
  for (int64_t step = 1; step <= 4; ++step) {
    checkpointer.save({.step = step, .tokens_seen = 48 * step, .loader_position = 2 * step}, *target.optimizer, train,
                      identity());
  }
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step_00000003", "step_00000004"}));
  EXPECT_EQ(read_text(dir / "latest"), "step_00000004\n");
  EXPECT_EQ(checkpointer.candidates(), (std::vector<fs::path>{dir / "step_00000004", dir / "step_00000003"}));
  Target loaded(train, local_);
  const auto state = checkpointer.resume("auto", *loaded.optimizer, train, identity());
  ASSERT_TRUE(state.has_value());
  EXPECT_EQ(state->step, 4);
  EXPECT_EQ(state->tokens_seen, 192);
  EXPECT_EQ(state->loader_position, 8);
}

// A save that cannot write (here: files limited to 32 KiB or less, well under a checkpoint's size) fails the run
// naming the file, and leaves the earlier checkpoint and `latest` as they were, still loadable.
TEST_F(CheckpointerTest, FailedSaveLeavesThePreviousCheckpointAndLatestIntact) {
  ASSERT_GT(fs::file_size(rank_file(4)), 64 * 1024U);
  const std::string before = read_text(step(4) / "metadata.json");
  int status = 0;
  const std::string output = mlagpt(train_arguments(6, "auto"), &status, "trap '' XFSZ; ulimit -f 64; exec ");
  EXPECT_EQ(status, 1) << output;
  EXPECT_NE(output.find(step(6).string()), std::string::npos) << output;
  EXPECT_EQ(read_text(checkpoints() / "latest"), "step_00000004\n");
  EXPECT_EQ(read_text(step(4) / "metadata.json"), before);
  EXPECT_FALSE(Checkpointer::is_complete(step(6)));
  Target target(config(run(), 8), local_);
  EXPECT_EQ(resume(target, "auto"), 4);
}

// A table of pieces that leaves part of a tensor out is a damaged checkpoint, refused before any file is read.
TEST_F(CheckpointerTest, MetadataWhosePiecesDoNotCoverATensorIsRefusedAndSkipped) {
  auto json = nlohmann::json::parse(read_text(step(4) / "metadata.json"));
  auto& pieces = json["tensors"]["optim/wte.weight/exp_avg"]["pieces"];
  ASSERT_EQ(pieces.size(), 1U);
  pieces[0]["end"] = pieces[0]["end"].get<int64_t>() - 1;
  write_text(step(4) / "metadata.json", json.dump(2));
  expect_refused_then_skipped<mlagpt::IoError>((step(4) / "metadata.json").string() +
                                               ": the pieces of tensor optim/wte.weight/exp_avg");
}

TEST_F(CheckpointerTest, ReportsSayHowManyBytesWereWrittenAndRead) {
  const TrainConfig train = config(dir_ / "report_run", 8);
  Target saved(train, local_);
  Checkpointer checkpointer(dir_ / "report", 2, local_);
  const auto written =
      checkpointer.save({.step = 3, .tokens_seen = 144, .loader_position = 6}, *saved.optimizer, train, identity());
  EXPECT_EQ(written.path, dir_ / "report" / "step_00000003");
  EXPECT_EQ(written.bytes, static_cast<int64_t>(fs::file_size(written.path / "rank_00000.h5")));
  EXPECT_EQ(written.bytes_all_ranks, written.bytes);
  EXPECT_GT(written.seconds, 0.0);
  // Read: every parameter and both moments (float32), and the CPU generator's state (bytes).
  const auto json = nlohmann::json::parse(read_text(written.path / "metadata.json"));
  const int64_t rng_bytes = json["tensors"]["rng/cpu"]["shape"][0].get<int64_t>();
  Target loaded(train, local_);
  mlagpt::trainer::LoadReport report;
  checkpointer.load(written.path, *loaded.optimizer, train, identity(), &report);
  EXPECT_EQ(report.bytes, 3 * 4 * loaded.optimizer->layout().parameter_numel() + rng_bytes);
  EXPECT_GT(report.seconds, 0.0);
}

namespace {

// Rewrites a checkpoint in format version 2, as the checkpointer wrote it before every rank wrote its shard: rank 0's
// file holds every tensor whole (/params/<name>, /optim/<name>/{exp_avg,exp_avg_sq} with an attribute step,
// /rng/cpu), and metadata.json records each with its SHA-256, and every parameter's optimizer step. The tensors are
// those of `loaded`, into which the checkpoint was loaded.
void rewrite_as_version2(const fs::path& step_dir, mlagpt::trainer::FlatAdamW& loaded) {
  const fs::path file_path = step_dir / "rank_00000.h5";
  std::vector<uint8_t> rng = mlagpt::data::h5::File::open(file_path).open_dataset("/rng/cpu").read_all<uint8_t>();
  auto json = nlohmann::json::parse(read_text(step_dir / "metadata.json"));
  json["version"] = 2;
  json.erase("optimizer");
  nlohmann::json tensors = nlohmann::json::object();
  nlohmann::json steps = nlohmann::json::object();
  {
    auto file = mlagpt::data::h5::File::create(file_path, /*overwrite=*/true);
    const auto sha256 = [](const void* data, size_t bytes) {
      mlagpt::data::Sha256 hash;
      hash.update(std::string_view(static_cast<const char*>(data), bytes));
      return mlagpt::data::to_hex(hash.finish());
    };
    const auto write = [&](const std::string& name, const at::Tensor& tensor) {
      const at::Tensor t = tensor.contiguous();
      const std::vector<uint64_t> shape(t.sizes().begin(), t.sizes().end());
      file.create_dataset<float>("/" + name, shape)
          .write(std::span<const float>(t.const_data_ptr<float>(), static_cast<size_t>(t.numel())),
                 std::vector<uint64_t>(shape.size(), 0), shape);
      tensors[name] = {{"shape", t.sizes().vec()},
                       {"dtype", "float32"},
                       {"file", "rank_00000.h5"},
                       {"sha256", sha256(t.const_data_ptr(), t.nbytes())}};
    };
    for (const auto& slice : loaded.held_slices()) {
      const auto& parameter = loaded.parameters()[static_cast<size_t>(slice.param)];
      ASSERT_EQ(slice.end - slice.begin, parameter.tensor.numel());
      write("params/" + parameter.name, parameter.tensor.detach());
      write("optim/" + parameter.name + "/exp_avg", slice.exp_avg.view(parameter.tensor.sizes()));
      write("optim/" + parameter.name + "/exp_avg_sq", slice.exp_avg_sq.view(parameter.tensor.sizes()));
      file.set_attribute("step", loaded.step_count(), "/optim/" + parameter.name);
      steps[parameter.name] = loaded.step_count();
    }
    const std::vector<uint64_t> rng_shape{rng.size()};
    file.create_dataset<uint8_t>("/rng/cpu", rng_shape).write(std::span<const uint8_t>(rng), {0}, rng_shape);
    tensors["rng/cpu"] = {{"shape", std::vector<int64_t>{static_cast<int64_t>(rng.size())}},
                          {"dtype", "uint8"},
                          {"file", "rank_00000.h5"},
                          {"sha256", sha256(rng.data(), rng.size())}};
    file.flush();
  }
  json["tensors"] = tensors;
  json["optimizer_steps"] = steps;
  write_text(step_dir / "metadata.json", json.dump(2));
}

// Whether two optimizers (over models) hold the same parameters, moments and step count, bitwise.
void expect_same_state(mlagpt::trainer::FlatAdamW& a, mlagpt::trainer::FlatAdamW& b) {
  EXPECT_EQ(a.step_count(), b.step_count());
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    EXPECT_TRUE(at::equal(a.parameters()[i].tensor, b.parameters()[i].tensor)) << a.parameters()[i].name;
  }
  const auto slices_a = a.held_slices();
  const auto slices_b = b.held_slices();
  ASSERT_EQ(slices_a.size(), slices_b.size());
  for (size_t k = 0; k < slices_a.size(); ++k) {
    EXPECT_TRUE(at::equal(slices_a[k].exp_avg, slices_b[k].exp_avg)) << a.parameters()[k].name;
    EXPECT_TRUE(at::equal(slices_a[k].exp_avg_sq, slices_b[k].exp_avg_sq)) << a.parameters()[k].name;
  }
}

}  // namespace

// Version 3: format 4 without the tensor-parallel split of each tensor and the part of each piece.
TEST_F(CheckpointerTest, Version3CheckpointLoadsTheSameState) {
  Target v4(config(run(), 8), local_);
  ASSERT_EQ(resume(v4, step(4).string()), 4);
  ASSERT_GT(v4.optimizer->step_count(), 0);
  auto json = nlohmann::json::parse(read_text(step(4) / "metadata.json"));
  ASSERT_EQ(json["version"], 4);
  json["version"] = 3;
  for (auto& [name, record] : json["tensors"].items()) {
    record.erase("split");
    for (auto& piece : record["pieces"]) {
      piece.erase("part");
    }
  }
  write_text(step(4) / "metadata.json", json.dump(2));
  Target v3(config(run(), 8), local_);
  EXPECT_EQ(resume(v3, step(4).string()), 4);
  expect_same_state(*v3.optimizer, *v4.optimizer);
}

// Version 2: one file, every tensor whole; it loads as one piece per tensor, checksums verified.
TEST_F(CheckpointerTest, Version2CheckpointLoadsTheSameStateAndIsVerified) {
  Target v3(config(run(), 8), local_);
  ASSERT_EQ(resume(v3, step(4).string()), 4);
  ASSERT_GT(v3.optimizer->step_count(), 0);
  rewrite_as_version2(step(4), *v3.optimizer);
  {
    Target v2(config(run(), 8), local_);
    EXPECT_EQ(resume(v2, step(4).string()), 4);
    expect_same_state(*v2.optimizer, *v3.optimizer);
  }
  flip_byte(rank_file(4), "/optim/wte.weight/exp_avg", 9);
  expect_refused_then_skipped<mlagpt::DataError>(
      fmt::format("{}: tensor /optim/wte.weight/exp_avg is corrupt", rank_file(4).string()));
}

TEST_F(CheckpointerTest, Version1CheckpointLoadsUnverifiedWithAWarning) {
  Target v3(config(run(), 8), local_);
  ASSERT_EQ(resume(v3, step(4).string()), 4);
  rewrite_as_version2(step(4), *v3.optimizer);
  auto json = nlohmann::json::parse(read_text(step(4) / "metadata.json"));
  json["version"] = 1;
  json.erase("optimizer_steps");
  nlohmann::json tensors = nlohmann::json::object();
  for (auto& [name, record] : json["tensors"].items()) {
    if (name.rfind("rng/", 0) != 0) {
      record.erase("sha256");
      tensors[name] = record;
    }
  }
  json["tensors"] = tensors;
  write_text(step(4) / "metadata.json", json.dump(2));
  Target target(config(run(), 8), local_);
  const CapturedLog log;
  EXPECT_EQ(resume(target, step(4).string()), 4);
  EXPECT_NE(log.text().find("format version 1 has no checksums"), std::string::npos) << log.text();
  expect_same_state(*target.optimizer, *v3.optimizer);
}
