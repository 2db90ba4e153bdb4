// Run by CTest under `mpiexec -n 4`: sharded checkpoints (format 4, tp 1) written by 4 ranks with ZeRO-1 and buckets
// small enough that parameters straddle shard boundaries, after a few real optimizer steps (gradients reduce-scattered
// into each rank's shards, as the GradReducer does). The checkpoint loads into fresh models and optimizers on 1 rank
// (rank 0 alone, the others waiting), 2 ranks (the world split into {0, 1} and {2, 3}, both loading at once) and 4
// ranks, each with and without ZeRO-1 (on 4 ranks also with buckets of another size), and every parameter, every
// moment each rank holds and the step count equal what was saved, bitwise; what one rank saves of it loads back on 4.
// Each rank's file holds about a quarter of the model and all of them every element once. A corrupted piece that only
// one rank reads is a DataError on every rank, a missing rank file an IoError naming it on every rank, and a save whose
// write fails on one rank an IoError naming that rank's file on every rank, leaving nothing behind; none of them leaves
// a rank waiting.
#include "trainer/checkpointer.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <sys/resource.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <array>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "data/hdf5_file.h"
#include "launch/error.h"
#include "launch/mpi_communicator.h"
#include "support/model_fixtures.h"
#include "support/temp_dir.h"
#include "trainer/optimizer.h"

namespace fs = std::filesystem;
using mlagpt::launch::Communicator;
using mlagpt::launch::LocalCommunicator;
using mlagpt::launch::MpiCommunicator;
using mlagpt::trainer::Checkpointer;
using mlagpt::trainer::FlatAdamW;

namespace {

constexpr int kRanks = 4;
constexpr int64_t kSteps = 3;
constexpr int64_t kBucketBytes = 24 << 10;  // 6144 elements: several buckets, and large parameters split 4 ways

mlagpt::trainer::TrainConfig train_config() {
  mlagpt::trainer::TrainConfig config;
  config.model = mlagpt::testing::tiny_config(mlagpt::model::AttentionKind::kMla);
  config.model.vocab_size = 203;
  config.model.n_embd = 96;
  config.model.n_layer = 2;
  config.model.n_head = 4;
  config.model.q_lora_rank = 28;
  config.model.kv_lora_rank = 20;
  config.model.qk_nope_head_dim = 10;
  config.model.qk_rope_head_dim = 6;
  config.model.v_head_dim = 12;
  config.model.mlp_hidden = 0;
  config.model.resolve();
  config.data.dir = "data";  // not read: the stored config must only be valid
  return config;
}

const mlagpt::trainer::DatasetIdentity kDataset{"byte", std::string(64, 'a'), 257};

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A model of `seed` and a FlatAdamW over it.
struct Replica {
  Replica(uint64_t seed, bool zero, int64_t bucket_bytes, Communicator& comm) {
    at::manual_seed(seed);
    const auto config = train_config();
    model = std::make_unique<mlagpt::model::Gpt>(config.model);
    std::vector<mlagpt::trainer::NamedParameter> parameters;
    for (const auto& item : model->named_parameters()) {
      parameters.push_back({item.key(), item.value(), mlagpt::trainer::decays(item.key(), item.value())});
    }
    optimizer =
        std::make_unique<FlatAdamW>(std::move(parameters), mlagpt::trainer::AdamWSettings{},
                                    mlagpt::trainer::FlatOptions{.bucket_bytes = bucket_bytes, .zero = zero}, comm);
  }
  std::unique_ptr<mlagpt::model::Gpt> model;
  std::unique_ptr<FlatAdamW> optimizer;
};

// The whole state, flattened per parameter: what every rank of any mesh must find after a load.
struct Expected {
  std::vector<at::Tensor> params;
  std::vector<at::Tensor> exp_avg;
  std::vector<at::Tensor> exp_avg_sq;
  int64_t step_count = 0;
};

// Whether `replica` holds exactly the state of `expected`: every parameter whole, and the moments of the slices it
// holds under its own mesh.
void expect_loaded(Replica& replica, const Expected& expected, const std::string& what) {
  SCOPED_TRACE(what);
  FlatAdamW& optimizer = *replica.optimizer;
  EXPECT_EQ(optimizer.step_count(), expected.step_count);
  for (size_t i = 0; i < optimizer.parameters().size(); ++i) {
    EXPECT_TRUE(at::equal(optimizer.parameters()[i].tensor.detach().reshape({-1}), expected.params[i]))
        << optimizer.parameters()[i].name;
  }
  int64_t held = 0;
  for (const auto& slice : optimizer.held_slices()) {
    const auto i = static_cast<size_t>(slice.param);
    const int64_t length = slice.end - slice.begin;
    EXPECT_TRUE(at::equal(slice.exp_avg, expected.exp_avg[i].narrow(0, slice.begin, length)))
        << optimizer.parameters()[i].name << " [" << slice.begin << ", " << slice.end << ")";
    EXPECT_TRUE(at::equal(slice.exp_avg_sq, expected.exp_avg_sq[i].narrow(0, slice.begin, length)))
        << optimizer.parameters()[i].name << " [" << slice.begin << ", " << slice.end << ")";
    held += length;
  }
  const int64_t numel = optimizer.layout().parameter_numel();
  if (optimizer.zero() && optimizer.comm().size() > 1) {
    EXPECT_LT(held, numel);
  } else {
    EXPECT_EQ(held, numel);
  }
}

// Flips the lowest bit of byte `index` of a contiguous dataset's data.
void flip_byte(const fs::path& file, const std::string& dataset, uint64_t index) {
  haddr_t offset = HADDR_UNDEF;
  {
    const auto h5 = mlagpt::data::h5::File::open(file);
    offset = H5Dget_offset(h5.open_dataset(dataset).id());
  }
  ASSERT_NE(offset, HADDR_UNDEF) << dataset;
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(static_cast<std::streamoff>(offset + index));
  char byte = 0;
  io.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x01);
  io.seekp(static_cast<std::streamoff>(offset + index));
  io.write(&byte, 1);
  ASSERT_TRUE(io.good()) << file;
}

// Each of the 4 files of `step_dir` holds a quarter of the model's elements (give or take the buckets' padding),
// all of them together each element once, and the directory nothing else.
void expect_a_quarter_each(const fs::path& step_dir, int64_t numel) {
  SCOPED_TRACE(step_dir.string());
  const nlohmann::json json = nlohmann::json::parse(read_text(step_dir / "metadata.json"));
  EXPECT_EQ(json["version"], 4);
  EXPECT_EQ(json["mesh"]["dp"], kRanks);
  std::map<std::string, int64_t> element_bytes;  // per file, of the float32 tensors
  int64_t split = 0;                             // parameters with pieces in more than one file
  for (const auto& [name, record] : json["tensors"].items()) {
    std::set<std::string> files;
    for (const auto& piece : record["pieces"]) {
      files.insert(piece["file"].get<std::string>());
      if (record["dtype"] == "float32") {
        element_bytes[piece["file"].get<std::string>()] +=
            4 * (piece["end"].get<int64_t>() - piece["begin"].get<int64_t>());
      }
    }
    split += name.starts_with("params/") && files.size() > 1 ? 1 : 0;
  }
  EXPECT_GE(split, 3) << "too few parameters straddle a shard boundary for the test to mean anything";
  const int64_t total = 3 * 4 * numel;
  int64_t sum = 0;
  std::set<std::string> names{"metadata.json"};
  for (int r = 0; r < kRanks; ++r) {
    const std::string file = fmt::format("rank_{:05d}.h5", r);
    names.insert(file);
    ASSERT_TRUE(element_bytes.contains(file)) << file;
    sum += element_bytes[file];
    EXPECT_GT(element_bytes[file], total / 5) << file;
    EXPECT_LT(element_bytes[file], total * 3 / 10) << file;
    const auto size = static_cast<int64_t>(fs::file_size(step_dir / file));
    EXPECT_GE(size, element_bytes[file]) << file;
    EXPECT_LT(size, total * 7 / 20) << file << " holds more than a share of the model";
  }
  EXPECT_EQ(sum, total);  // each element of every parameter and moment once
  std::set<std::string> found;
  for (const auto& entry : fs::directory_iterator(step_dir)) {
    found.insert(entry.path().filename().string());
  }
  EXPECT_EQ(found, names);
}

class ShardedCheckpoint : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    world_ = new MpiCommunicator(MPI_COMM_WORLD);
    // One directory for all ranks: rank 0's, its path broadcast.
    std::array<char, 4096> path{};
    if (world_->rank() == 0) {
      dir_ = new mlagpt::testing::TempDir();
      std::snprintf(path.data(), path.size(), "%s", dir_->path().c_str());
    }
    MPI_Bcast(path.data(), static_cast<int>(path.size()), MPI_CHAR, 0, MPI_COMM_WORLD);
    root_ = new fs::path(path.data());

    saved_ = new Replica(1, /*zero=*/true, kBucketBytes, *world_);
    FlatAdamW& optimizer = *saved_->optimizer;
    const at::Tensor no_inf = at::zeros({}, at::kFloat);
    for (int64_t step = 0; step < kSteps; ++step) {
      optimizer.zero_grad();
      {
        const c10::NoGradGuard no_grad;
        for (size_t i = 0; i < optimizer.parameters().size(); ++i) {
          const at::Tensor& p = optimizer.parameters()[i].tensor;
          // Different on every rank, parameter and step; the ranks' sum is what each shard receives.
          at::Tensor grad = p.mutable_grad();
          grad.copy_((at::sin(at::arange(p.numel(), at::kFloat) * 0.37 + static_cast<double>(i) * 1.3 +
                              static_cast<double>(step)) *
                      (world_->rank() + 1) * 1e-2)
                         .view(p.sizes()));
        }
      }
      for (size_t b = 0; b < optimizer.layout().buckets.size(); ++b) {
        at::Tensor shard = optimizer.shard_grads(static_cast<int>(b));
        world_->reduce_scatter(optimizer.bucket_grads(static_cast<int>(b)), shard, mlagpt::launch::ReduceOp::kSum);
      }
      optimizer.step(1e-2, std::nullopt, no_inf);
    }
    report_ = new mlagpt::trainer::SaveReport(
        Checkpointer(*root_ / "run", 10, *world_)
            .save({.step = kSteps, .tokens_seen = 96, .loader_position = 12}, optimizer, train_config(), kDataset));

    // The whole state on every rank: parameters are replicated; each moment element is held by one rank.
    expected_ = new Expected();
    expected_->step_count = optimizer.step_count();
    std::vector<at::Tensor> exp_avg;
    std::vector<at::Tensor> exp_avg_sq;
    for (const auto& p : optimizer.parameters()) {
      expected_->params.push_back(p.tensor.detach().reshape({-1}).clone());
      exp_avg.push_back(at::zeros({p.tensor.numel()}, at::kFloat));
      exp_avg_sq.push_back(at::zeros({p.tensor.numel()}, at::kFloat));
    }
    for (const auto& slice : optimizer.held_slices()) {
      const auto i = static_cast<size_t>(slice.param);
      exp_avg[i].narrow(0, slice.begin, slice.end - slice.begin).copy_(slice.exp_avg);
      exp_avg_sq[i].narrow(0, slice.begin, slice.end - slice.begin).copy_(slice.exp_avg_sq);
    }
    at::Tensor all = at::cat({at::cat(exp_avg), at::cat(exp_avg_sq)});
    world_->all_reduce(all, mlagpt::launch::ReduceOp::kSum);
    const int64_t numel = optimizer.layout().parameter_numel();
    int64_t at = 0;
    for (const auto& p : optimizer.parameters()) {
      expected_->exp_avg.push_back(all.narrow(0, at, p.tensor.numel()));
      expected_->exp_avg_sq.push_back(all.narrow(0, numel + at, p.tensor.numel()));
      at += p.tensor.numel();
    }
  }
  static void TearDownTestSuite() {
    world_->barrier();
    delete expected_;
    delete report_;
    delete saved_;
    delete root_;
    delete dir_;
    delete world_;
  }

  static fs::path checkpoint() { return *root_ / "run" / fmt::format("step_{:08d}", kSteps); }
  // A copy of the checkpoint in `name`/ for a test to damage (made by rank 0; every rank returns once it is there).
  static fs::path copy_of_checkpoint(const std::string& name) {
    const fs::path copy = *root_ / name / checkpoint().filename();
    if (world_->rank() == 0) {
      fs::create_directories(copy.parent_path());
      fs::copy(checkpoint(), copy, fs::copy_options::recursive);
    }
    world_->barrier();
    return copy;
  }
  static nlohmann::json metadata() { return nlohmann::json::parse(read_text(checkpoint() / "metadata.json")); }

  static MpiCommunicator* world_;
  static mlagpt::testing::TempDir* dir_;
  static fs::path* root_;
  static Replica* saved_;
  static Expected* expected_;
  static mlagpt::trainer::SaveReport* report_;
};

MpiCommunicator* ShardedCheckpoint::world_ = nullptr;
mlagpt::testing::TempDir* ShardedCheckpoint::dir_ = nullptr;
fs::path* ShardedCheckpoint::root_ = nullptr;
Replica* ShardedCheckpoint::saved_ = nullptr;
Expected* ShardedCheckpoint::expected_ = nullptr;
mlagpt::trainer::SaveReport* ShardedCheckpoint::report_ = nullptr;

}  // namespace

TEST_F(ShardedCheckpoint, RunsOnFourRanksAndTheStateIsDistinctive) {
  ASSERT_EQ(world_->size(), kRanks);
  EXPECT_EQ(expected_->step_count, kSteps);
  EXPECT_GT(expected_->exp_avg.front().abs().max().item<float>(), 0.0F);
  EXPECT_GT(expected_->exp_avg_sq.back().abs().max().item<float>(), 0.0F);
}

// With ZeRO-1 (the suite's checkpoint) and replicated: the written shards are the same in both modes.
TEST_F(ShardedCheckpoint, EachRankFileHoldsAQuarterAndAllOfThemEveryElementOnce) {
  const int64_t numel = saved_->optimizer->layout().parameter_numel();
  const nlohmann::json json = metadata();
  EXPECT_EQ(json["mesh"]["zero"], 1);
  EXPECT_EQ(json["optimizer"]["step_count"], kSteps);
  int64_t on_disk = 0;
  for (int r = 0; r < kRanks; ++r) {
    on_disk += static_cast<int64_t>(fs::file_size(checkpoint() / fmt::format("rank_{:05d}.h5", r)));
  }
  EXPECT_EQ(report_->bytes,
            static_cast<int64_t>(fs::file_size(checkpoint() / fmt::format("rank_{:05d}.h5", world_->rank()))));
  EXPECT_EQ(report_->bytes_all_ranks, on_disk);
  EXPECT_EQ(report_->path, checkpoint());
  if (world_->rank() == 0) {
    expect_a_quarter_each(checkpoint(), numel);
  }
  Replica replicated(5, /*zero=*/false, kBucketBytes, *world_);
  const auto report = Checkpointer(*root_ / "replicated", 10, *world_)
                          .save({.step = 1}, *replicated.optimizer, train_config(), kDataset);
  if (world_->rank() == 0) {
    expect_a_quarter_each(report.path, numel);
  }
  world_->barrier();
}

TEST_F(ShardedCheckpoint, LoadsOnFourRanksWithAndWithoutZeroAndOtherBuckets) {
  for (const bool zero : {false, true}) {
    for (const int64_t bucket_bytes : {kBucketBytes, 5 * kBucketBytes / 2}) {
      Replica fresh(7, zero, bucket_bytes, *world_);
      EXPECT_FALSE(
          at::equal(fresh.optimizer->parameters().front().tensor.detach().reshape({-1}), expected_->params.front()));
      mlagpt::trainer::LoadReport report;
      const auto state = Checkpointer(*root_ / "run", 10, *world_)
                             .load(checkpoint(), *fresh.optimizer, train_config(), kDataset, &report);
      EXPECT_EQ(state.step, kSteps);
      EXPECT_EQ(state.tokens_seen, 96);
      EXPECT_EQ(state.loader_position, 12);
      EXPECT_GT(report.bytes, 4 * saved_->optimizer->layout().parameter_numel());
      expect_loaded(fresh, *expected_, fmt::format("4 ranks, zero {}, buckets of {} bytes", zero, bucket_bytes));
    }
  }
}

TEST_F(ShardedCheckpoint, LoadsOnTwoRanksWithAndWithoutZero) {
  MPI_Comm half_comm = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, world_->rank() / 2, world_->rank(), &half_comm);
  {
    MpiCommunicator half(half_comm);
    ASSERT_EQ(half.size(), 2);
    for (const bool zero : {false, true}) {
      Replica fresh(7, zero, kBucketBytes, half);
      Checkpointer(*root_ / "run", 10, half).load(checkpoint(), *fresh.optimizer, train_config(), kDataset);
      expect_loaded(fresh, *expected_, fmt::format("2 ranks (world rank {}), zero {}", world_->rank(), zero));
    }
  }
  MPI_Comm_free(&half_comm);
}

TEST_F(ShardedCheckpoint, LoadsOnOneRankWithAndWithoutZero) {
  // Rank 0 alone; an exception must not keep it from the barrier the others wait at.
  if (world_->rank() == 0) {
    try {
      LocalCommunicator local;
      for (const bool zero : {false, true}) {
        Replica fresh(7, zero, kBucketBytes, local);
        Checkpointer(*root_ / "run", 10, local).load(checkpoint(), *fresh.optimizer, train_config(), kDataset);
        expect_loaded(fresh, *expected_, fmt::format("1 rank, zero {}", zero));
      }
      // What eval and sample do: the weights alone, every piece of them.
      at::manual_seed(11);
      mlagpt::model::Gpt model(train_config().model);
      Checkpointer::load_weights(checkpoint(), model);
      size_t i = 0;
      for (const auto& item : model.named_parameters()) {
        EXPECT_TRUE(at::equal(item.value().detach().reshape({-1}), expected_->params[i++])) << item.key();
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
  }
  world_->barrier();
}

// 4 ranks -> 1 -> 4: what one process saves of the loaded state (one file, one piece per tensor) loads back onto 4
// ranks with ZeRO-1, where each rank reads its ranges out of those whole pieces.
TEST_F(ShardedCheckpoint, ACheckpointOfOneRankLoadsOnFourWithZero) {
  const fs::path dir = *root_ / "one_rank";
  if (world_->rank() == 0) {
    try {
      LocalCommunicator local;
      Replica one(7, /*zero=*/false, kBucketBytes, local);
      Checkpointer checkpointer(dir, 10, local);
      const auto state = checkpointer.load(checkpoint(), *one.optimizer, train_config(), kDataset);
      checkpointer.save(state, *one.optimizer, train_config(), kDataset);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
  }
  world_->barrier();
  Replica fresh(9, /*zero=*/true, kBucketBytes, *world_);
  const auto state = Checkpointer(dir, 10, *world_).resume("auto", *fresh.optimizer, train_config(), kDataset);
  EXPECT_TRUE(state.has_value() && state->step == kSteps);
  expect_loaded(fresh, *expected_, "saved by 1 rank, loaded on 4 with zero");
}

// The piece is one that rank 2 alone reads (its shard, with the layout that wrote it): the others must learn of it.
TEST_F(ShardedCheckpoint, ACorruptPieceOneRankReadsIsADataErrorOnEveryRank) {
  const fs::path copy = copy_of_checkpoint("corrupt");
  std::string dataset;
  const nlohmann::json json = metadata();
  for (const auto& [name, record] : json["tensors"].items()) {
    for (const auto& piece : record["pieces"]) {
      if (dataset.empty() && name.ends_with("/exp_avg_sq") && piece["file"] == "rank_00002.h5") {
        dataset = piece["dataset"].get<std::string>();
      }
    }
  }
  ASSERT_FALSE(dataset.empty());
  if (world_->rank() == 0) {
    flip_byte(copy / "rank_00002.h5", dataset, 6);
  }
  world_->barrier();
  Replica fresh(7, /*zero=*/true, kBucketBytes, *world_);
  const at::Tensor before = fresh.optimizer->parameters().front().tensor.detach().clone();
  try {
    Checkpointer(copy.parent_path(), 10, *world_).load(copy, *fresh.optimizer, train_config(), kDataset);
    ADD_FAILURE() << "rank " << world_->rank() << " loaded a corrupt checkpoint";
  } catch (const mlagpt::DataError& e) {
    const std::string text = e.what();
    EXPECT_NE(text.find((copy / "rank_00002.h5").string() + ": tensor " + dataset + " is corrupt"), std::string::npos)
        << text;
  }
  EXPECT_TRUE(at::equal(fresh.optimizer->parameters().front().tensor, before)) << "restored on rank " << world_->rank();
  EXPECT_EQ(fresh.optimizer->step_count(), 0);
  // --resume auto skips it, and with nothing before it refuses to start afresh: on every rank alike.
  try {
    Checkpointer(copy.parent_path(), 10, *world_).resume("auto", *fresh.optimizer, train_config(), kDataset);
    ADD_FAILURE() << "rank " << world_->rank() << " resumed a corrupt checkpoint";
  } catch (const mlagpt::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("none of the 1 complete checkpoints"), std::string::npos) << e.what();
  }
}

TEST_F(ShardedCheckpoint, AMissingRankFileIsAnIoErrorNamingItOnEveryRank) {
  const fs::path copy = copy_of_checkpoint("missing");
  if (world_->rank() == 0) {
    fs::remove(copy / "rank_00003.h5");
  }
  world_->barrier();
  for (const bool zero : {false, true}) {
    Replica fresh(7, zero, kBucketBytes, *world_);
    try {
      Checkpointer(copy.parent_path(), 10, *world_).load(copy, *fresh.optimizer, train_config(), kDataset);
      ADD_FAILURE() << "rank " << world_->rank() << " loaded a checkpoint without rank_00003.h5";
    } catch (const mlagpt::IoError& e) {
      EXPECT_NE(std::string(e.what()).find((copy / "rank_00003.h5").string() + ": no such file"), std::string::npos)
          << e.what();
    }
  }
}

// Rank 2 may write no file larger than 16 KiB, far less than its share: its write fails, the others' succeed.
TEST_F(ShardedCheckpoint, ASaveThatFailsOnOneRankIsAnIoErrorNamingItsFileOnEveryRank) {
  const fs::path dir = *root_ / "failing";
  Checkpointer checkpointer(dir, 10, *world_);
  checkpointer.save({.step = 1}, *saved_->optimizer, train_config(), kDataset);
  rlimit limit{};
  getrlimit(RLIMIT_FSIZE, &limit);
  const rlimit saved_limit = limit;
  if (world_->rank() == 2) {
    std::signal(SIGXFSZ, SIG_IGN);
    limit.rlim_cur = 16 << 10;
    setrlimit(RLIMIT_FSIZE, &limit);
  }
  try {
    checkpointer.save({.step = 2}, *saved_->optimizer, train_config(), kDataset);
    ADD_FAILURE() << "rank " << world_->rank() << " saved";
  } catch (const mlagpt::IoError& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "step_00000002" / "rank_00002.h5").string()), std::string::npos)
        << e.what();
  }
  if (world_->rank() == 2) {
    setrlimit(RLIMIT_FSIZE, &saved_limit);
    std::signal(SIGXFSZ, SIG_DFL);
  }
  world_->barrier();
  EXPECT_FALSE(fs::exists(dir / "step_00000002")) << "the failed save left files behind";
  EXPECT_EQ(read_text(dir / "latest"), "step_00000001\n");
  EXPECT_EQ(checkpointer.candidates(), std::vector<fs::path>{dir / "step_00000001"});
}
