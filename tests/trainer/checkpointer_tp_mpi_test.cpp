// Run by CTest under `mpiexec -n 4`: checkpoints (format 4) of a dp 2 x tp 2 mesh, loaded at other meshes. The
// parameters are synthetic (not the Gpt): some split along dimension 0, some along dimension 1, some replicated,
// each rank holding its chunk of a deterministic full tensor, in a FlatAdamW with ZeRO-1 and buckets small enough
// that parameters straddle shard boundaries, after real optimizer steps (gradients that are chunks of full ones,
// the same on every tp rank for the replicated parameters, reduce-scattered over the dp group). The checkpoint loads
// at dp 2 x tp 2, dp 1 x tp 2, dp 2 x tp 1, dp 4 x tp 1, dp 1 x tp 4 and dp 1 x tp 1 (the world split into as many
// copies of the mesh as fit, all loading at once), with and without ZeRO-1, and with splits other than the saved
// ones (a replicated parameter split, a split one replicated, one split along the other dimension); every rank's
// parameters and held moments equal bitwise its chunk of the full tensors, which every rank assembles from what the
// saving ranks held. load_weights reads the full tensors into one process. A damaged piece of one tp part (read by
// only some ranks) is a DataError on every rank, pieces that do not cover a part an IoError, a model whose full
// shape differs a ConfigError.
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <tuple>

#include "data/hdf5_file.h"
#include "launch/error.h"
#include "launch/mpi_communicator.h"
#include "support/model_fixtures.h"
#include "support/temp_dir.h"
#include "trainer/checkpointer.h"

namespace fs = std::filesystem;
using mlagpt::launch::Communicator;
using mlagpt::launch::LocalCommunicator;
using mlagpt::launch::MpiCommunicator;
using mlagpt::trainer::Checkpointer;
using mlagpt::trainer::FlatAdamW;
using mlagpt::trainer::ParameterSplits;

namespace {

constexpr int kRanks = 4;
constexpr int64_t kSteps = 2;
constexpr int64_t kBucketBytes = 512;  // 128 elements: several buckets, most parameters across shard boundaries

struct Synthetic {
  std::string name;
  std::vector<int64_t> shape;  // full
  int64_t dim;                 // split along it when saved; -1: replicated
  bool decay;
};
// Split dimensions divide by 4 (the largest tp loaded at); shapes like a small model's, no two dimensions of a
// tensor equal.
const std::vector<Synthetic> kParams = {
    {"wte.weight", {36, 10}, 0, true},                                              // vocabulary-parallel
    {"attn.down.weight", {6, 10}, -1, true},                                        // MLA's down-projection: replicated
    {"attn.proj.weight", {10, 24}, 1, true},                                        // row-parallel
    {"norm.weight", {10}, -1, false},        {"mlp.fc.weight", {28, 10}, 0, true},  // column-parallel
    {"mlp.fc.bias", {28}, 0, false},         {"mlp.proj.weight", {10, 28}, 1, true},
};

ParameterSplits saved_splits() {
  ParameterSplits splits;
  for (const Synthetic& p : kParams) {
    if (p.dim >= 0) {
      splits[p.name] = {.dim = p.dim};
    }
  }
  return splits;
}

mlagpt::trainer::TrainConfig train_config() {
  mlagpt::trainer::TrainConfig config;
  config.model = mlagpt::testing::tiny_config(mlagpt::model::AttentionKind::kMla);
  config.model.resolve();
  config.data.dir = "data";  // not read: the stored config must only be valid
  return config;
}

const mlagpt::trainer::DatasetIdentity kDataset{"byte", std::string(64, 'a'), 257};

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

// A group of the world's ranks of one `color`, of `size` ranks (a LocalCommunicator for one). Collective over the
// world.
std::unique_ptr<Communicator> split_world(int color, int size) {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, color, world_rank(), &comm);
  std::unique_ptr<Communicator> group;
  if (size == 1) {
    group = std::make_unique<LocalCommunicator>();
  } else {
    group = std::make_unique<MpiCommunicator>(comm);  // which duplicates it
  }
  MPI_Comm_free(&comm);
  return group;
}

// A dp x tp mesh laid out as launch/process_mesh.h lays it out (tp groups of consecutive ranks), in as many copies as
// the world holds: world rank w is rank w % (dp * tp) of copy w / (dp * tp).
struct Mesh {
  Mesh(int dp_size, int tp_size) {
    const int n = dp_size * tp_size;
    const int copy = world_rank() / n;
    const int q = world_rank() % n;
    dp = split_world(copy * n + q % tp_size, dp_size);
    tp = split_world(copy * n + q / tp_size, tp_size);
  }
  std::string describe() const { return fmt::format("dp {} x tp {}", dp->size(), tp->size()); }
  std::unique_ptr<Communicator> dp;
  std::unique_ptr<Communicator> tp;
};

int64_t numel_of(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

int64_t total_numel() {
  int64_t n = 0;
  for (const Synthetic& p : kParams) {
    n += numel_of(p.shape);
  }
  return n;
}

// The full initial value of parameter i.
at::Tensor initial(size_t i, const std::vector<int64_t>& shape) {
  return (at::sin(at::arange(numel_of(shape), at::kFloat) * 0.31 + static_cast<double>(i)) * 0.5).view(shape);
}

// `full`, flattened, or the chunk of it that this rank of `tp` holds when it is split along `dim`.
at::Tensor chunk_of(const at::Tensor& full, int64_t dim, const Communicator& tp) {
  if (dim < 0 || tp.size() == 1) {
    return full.reshape({-1});
  }
  return full.chunk(tp.size(), dim)[static_cast<size_t>(tp.rank())].contiguous().reshape({-1});
}

// One rank's parameters (its chunks of the full tensors) and a FlatAdamW over them.
struct Model {
  // `splits` are the current ones; `shapes` overrides full shapes by name.
  Model(const Mesh& mesh, bool zero, const ParameterSplits& splits,
        const std::map<std::string, std::vector<int64_t>>& shapes = {}) {
    std::vector<mlagpt::trainer::NamedParameter> parameters;
    for (size_t i = 0; i < kParams.size(); ++i) {
      const Synthetic& p = kParams[i];
      const auto shape = shapes.contains(p.name) ? shapes.at(p.name) : p.shape;
      const auto split = splits.find(p.name);
      const int64_t dim = split == splits.end() ? -1 : split->second.dim;
      std::vector<int64_t> local = shape;
      if (dim >= 0) {
        local[static_cast<size_t>(dim)] /= mesh.tp->size();
      }
      // A fresh model: the state must come from the checkpoint.
      const at::Tensor value = chunk_of(initial(i, shape) * -2.0, dim, *mesh.tp).view(local).clone();
      parameters.push_back({p.name, value.requires_grad_(), p.decay});
      dims.push_back(dim);
    }
    optimizer =
        std::make_unique<FlatAdamW>(std::move(parameters), mlagpt::trainer::AdamWSettings{},
                                    mlagpt::trainer::FlatOptions{.bucket_bytes = kBucketBytes, .zero = zero}, *mesh.dp);
  }
  std::vector<int64_t> dims;
  std::unique_ptr<FlatAdamW> optimizer;
};

// The full tensors, of kParams' full shapes.
struct Expected {
  std::vector<at::Tensor> params;
  std::vector<at::Tensor> exp_avg;
  std::vector<at::Tensor> exp_avg_sq;
  int64_t step_count = 0;
};

// Whether `model` holds exactly its chunks of `expected`: every parameter's, and of the moments the slices it holds.
void expect_loaded(Model& model, const Mesh& mesh, const Expected& expected, const std::string& what) {
  SCOPED_TRACE(fmt::format("{} (world rank {})", what, world_rank()));
  FlatAdamW& optimizer = *model.optimizer;
  EXPECT_EQ(optimizer.step_count(), expected.step_count);
  for (size_t i = 0; i < kParams.size(); ++i) {
    EXPECT_TRUE(at::equal(optimizer.parameters()[i].tensor.detach().reshape({-1}),
                          chunk_of(expected.params[i], model.dims[i], *mesh.tp)))
        << kParams[i].name;
  }
  int64_t held = 0;
  for (const auto& slice : optimizer.held_slices()) {
    const auto i = static_cast<size_t>(slice.param);
    const int64_t length = slice.end - slice.begin;
    const std::string range = fmt::format("{} [{}, {})", kParams[i].name, slice.begin, slice.end);
    EXPECT_TRUE(
        at::equal(slice.exp_avg, chunk_of(expected.exp_avg[i], model.dims[i], *mesh.tp).narrow(0, slice.begin, length)))
        << range;
    EXPECT_TRUE(at::equal(slice.exp_avg_sq,
                          chunk_of(expected.exp_avg_sq[i], model.dims[i], *mesh.tp).narrow(0, slice.begin, length)))
        << range;
    held += length;
  }
  const int64_t numel = optimizer.layout().parameter_numel();
  if (optimizer.zero() && mesh.dp->size() > 1) {
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

class TensorParallelCheckpoint : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    world_ = new MpiCommunicator(MPI_COMM_WORLD);
    std::array<char, 4096> path{};
    if (world_->rank() == 0) {
      dir_ = new mlagpt::testing::TempDir();
      std::snprintf(path.data(), path.size(), "%s", dir_->path().c_str());
    }
    MPI_Bcast(path.data(), static_cast<int>(path.size()), MPI_CHAR, 0, MPI_COMM_WORLD);
    root_ = new fs::path(path.data());

    const Mesh mesh(2, 2);
    Model saved(mesh, /*zero=*/true, saved_splits());
    FlatAdamW& optimizer = *saved.optimizer;
    {
      const c10::NoGradGuard no_grad;
      for (size_t i = 0; i < kParams.size(); ++i) {
        optimizer.parameters()[i].tensor.view({-1}).copy_(
            chunk_of(initial(i, kParams[i].shape), saved.dims[i], *mesh.tp));
      }
    }
    const at::Tensor no_inf = at::zeros({}, at::kFloat);
    for (int64_t step = 0; step < kSteps; ++step) {
      optimizer.zero_grad();
      {
        const c10::NoGradGuard no_grad;
        for (size_t i = 0; i < kParams.size(); ++i) {
          // A chunk of a full gradient: the same on every tp rank where replicated; different on every dp rank.
          const auto& shape = kParams[i].shape;
          const at::Tensor full =
              at::sin(initial(i, shape) * 7.0 + static_cast<double>(step)) * (mesh.dp->rank() + 1) * 1e-2;
          at::Tensor grad = optimizer.parameters()[i].tensor.mutable_grad();
          grad.view({-1}).copy_(chunk_of(full, saved.dims[i], *mesh.tp));
        }
      }
      for (size_t b = 0; b < optimizer.layout().buckets.size(); ++b) {
        at::Tensor shard = optimizer.shard_grads(static_cast<int>(b));
        mesh.dp->reduce_scatter(optimizer.bucket_grads(static_cast<int>(b)), shard, mlagpt::launch::ReduceOp::kSum);
      }
      optimizer.step(1e-2, std::nullopt, no_inf);
    }
    report_ = new mlagpt::trainer::SaveReport(
        Checkpointer(*root_ / "run", 10, *mesh.dp, *mesh.tp, saved_splits())
            .save({.step = kSteps, .tokens_seen = 96, .loader_position = 12}, optimizer, train_config(), kDataset));

    // The full tensors on every rank: each element comes from the one rank whose written slices hold it (split
    // parameters: the rank of its chunk; replicated ones: tp rank 0), summed over the world with zeros elsewhere.
    expected_ = new Expected();
    expected_->step_count = optimizer.step_count();
    std::vector<at::Tensor> parts;
    for (const char* kind : {"value", "exp_avg", "exp_avg_sq"}) {
      const std::string what = kind;
      for (size_t i = 0; i < kParams.size(); ++i) {
        at::Tensor local = at::zeros({optimizer.parameters()[i].tensor.numel()}, at::kFloat);
        for (const auto& slice : optimizer.written_slices()) {
          if (static_cast<size_t>(slice.param) == i && (saved.dims[i] >= 0 || mesh.tp->rank() == 0)) {
            const at::Tensor& data = what == "value"     ? slice.value
                                     : what == "exp_avg" ? slice.exp_avg
                                                         : slice.exp_avg_sq;
            local.narrow(0, slice.begin, slice.end - slice.begin).copy_(data);
          }
        }
        at::Tensor full = at::zeros(kParams[i].shape, at::kFloat);
        const at::Tensor shaped = local.view(optimizer.parameters()[i].tensor.sizes());
        if (saved.dims[i] >= 0) {
          full.chunk(mesh.tp->size(), saved.dims[i])[static_cast<size_t>(mesh.tp->rank())].copy_(shaped);
        } else {
          full.copy_(shaped);
        }
        parts.push_back(full.reshape({-1}));
      }
    }
    at::Tensor all = at::cat(parts);
    world_->all_reduce(all, mlagpt::launch::ReduceOp::kSum);
    int64_t at = 0;
    for (std::vector<at::Tensor>* out : {&expected_->params, &expected_->exp_avg, &expected_->exp_avg_sq}) {
      for (const Synthetic& p : kParams) {
        const int64_t numel = numel_of(p.shape);
        out->push_back(all.narrow(0, at, numel).view(p.shape));
        at += numel;
      }
    }
  }
  static void TearDownTestSuite() {
    world_->barrier();
    delete expected_;
    delete report_;
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

  // Loads `checkpoint` at a dp x tp mesh with `splits`, with and without ZeRO-1, and checks every rank's state.
  static void expect_loads(int dp, int tp, const ParameterSplits& splits, const std::string& what) {
    const Mesh mesh(dp, tp);
    for (const bool zero : {false, true}) {
      Model fresh(mesh, zero, splits);
      mlagpt::trainer::LoadReport report;
      const auto state = Checkpointer(*root_ / "run", 10, *mesh.dp, *mesh.tp, splits)
                             .load(checkpoint(), *fresh.optimizer, train_config(), kDataset, &report);
      EXPECT_EQ(state.step, kSteps);
      EXPECT_EQ(state.tokens_seen, 96);
      EXPECT_EQ(state.loader_position, 12);
      expect_loaded(fresh, mesh, *expected_, fmt::format("{}, {}, zero {}", mesh.describe(), what, zero));
      reports_[{dp, tp, zero}] = report;
    }
  }

  static MpiCommunicator* world_;
  static mlagpt::testing::TempDir* dir_;
  static fs::path* root_;
  static Expected* expected_;
  static mlagpt::trainer::SaveReport* report_;
  static std::map<std::tuple<int, int, bool>, mlagpt::trainer::LoadReport> reports_;
};

MpiCommunicator* TensorParallelCheckpoint::world_ = nullptr;
mlagpt::testing::TempDir* TensorParallelCheckpoint::dir_ = nullptr;
fs::path* TensorParallelCheckpoint::root_ = nullptr;
Expected* TensorParallelCheckpoint::expected_ = nullptr;
mlagpt::trainer::SaveReport* TensorParallelCheckpoint::report_ = nullptr;
std::map<std::tuple<int, int, bool>, mlagpt::trainer::LoadReport> TensorParallelCheckpoint::reports_;

}  // namespace

TEST_F(TensorParallelCheckpoint, RunsOnFourRanksAndTheStateIsDistinctive) {
  ASSERT_EQ(world_->size(), kRanks);
  EXPECT_EQ(expected_->step_count, kSteps);
  for (size_t i = 0; i < kParams.size(); ++i) {
    EXPECT_GT(expected_->exp_avg[i].abs().min().item<float>(), 0.0F) << kParams[i].name;
    EXPECT_FALSE(at::equal(expected_->params[i], initial(i, kParams[i].shape))) << kParams[i].name;
  }
}

// Every element once: split tensors in all four files, part = tp rank (world rank % 2); replicated ones only in the
// files of tp rank 0; every part covered by its pieces.
TEST_F(TensorParallelCheckpoint, TheMetadataRecordsTheMeshFullShapesSplitsAndParts) {
  if (world_->rank() != 0) {
    world_->barrier();
    return;
  }
  const nlohmann::json json = metadata();
  EXPECT_EQ(json["version"], 4);
  EXPECT_EQ(json["mesh"]["dp"], 2);
  EXPECT_EQ(json["mesh"]["tp"], 2);
  EXPECT_EQ(json["mesh"]["world_size"], kRanks);
  int64_t element_bytes = 0;
  int64_t straddling = 0;  // parameter parts with pieces in two files (both dp ranks)
  for (const Synthetic& p : kParams) {
    for (const std::string& name :
         {"params/" + p.name, "optim/" + p.name + "/exp_avg", "optim/" + p.name + "/exp_avg_sq"}) {
      SCOPED_TRACE(name);
      const auto& record = json["tensors"][name];
      EXPECT_EQ(record["shape"].get<std::vector<int64_t>>(), p.shape);
      EXPECT_EQ(record["split"]["dim"], p.dim);
      const int64_t parts = p.dim >= 0 ? 2 : 1;
      EXPECT_EQ(record["split"]["parts"], parts);
      std::map<int64_t, int64_t> covered;  // elements per part
      std::map<int64_t, std::set<std::string>> files;
      for (const auto& piece : record["pieces"]) {
        const int64_t part = piece["part"].get<int64_t>();
        const std::string file = piece["file"].get<std::string>();
        const int writer = std::stoi(file.substr(5, 5));
        EXPECT_EQ(writer % 2, part) << file;  // the tp rank that holds that part (0 for replicated)
        covered[part] += piece["end"].get<int64_t>() - piece["begin"].get<int64_t>();
        files[part].insert(file);
        element_bytes += 4 * (piece["end"].get<int64_t>() - piece["begin"].get<int64_t>());
      }
      const int64_t numel = numel_of(p.shape);
      EXPECT_EQ(covered.size(), static_cast<size_t>(parts));
      for (const auto& [part, elements] : covered) {
        EXPECT_EQ(elements, numel / parts) << "part " << part;
        straddling += name.starts_with("params/") && files[part].size() > 1 ? 1 : 0;
      }
    }
  }
  EXPECT_GE(straddling, 3) << "too few parameters straddle a shard boundary for the test to mean anything";
  int64_t on_disk = 0;
  std::set<std::string> found;
  for (const auto& entry : fs::directory_iterator(checkpoint())) {
    found.insert(entry.path().filename().string());
    on_disk += entry.path().extension() == ".h5" ? static_cast<int64_t>(fs::file_size(entry.path())) : 0;
  }
  EXPECT_EQ(found, (std::set<std::string>{"metadata.json", "rank_00000.h5", "rank_00001.h5", "rank_00002.h5",
                                          "rank_00003.h5"}));
  EXPECT_EQ(report_->bytes_all_ranks, on_disk);
  EXPECT_GE(on_disk, element_bytes);
  world_->barrier();
}

TEST_F(TensorParallelCheckpoint, LoadsBitwiseAtTheMeshThatSavedIt) {
  expect_loads(2, 2, saved_splits(), "the saved mesh and splits");
}

TEST_F(TensorParallelCheckpoint, LoadsAtOtherTensorParallelSizes) {
  expect_loads(1, 2, saved_splits(), "two copies");
  expect_loads(1, 4, saved_splits(), "one mesh");
  // At tp 4 without ZeRO a rank reads about half the split parameters (of the part its chunk lies in, the pieces
  // that overlap it) and the replicated ones whole, besides the generator's state: well under the checkpoint.
  const int64_t total = 3 * 4 * total_numel();
  const int64_t rng = metadata()["tensors"]["rng/cpu"]["shape"][0].get<int64_t>();
  const int64_t read = reports_[std::tuple(1, 4, false)].bytes - rng;
  EXPECT_GT(read, 0);
  EXPECT_LT(read, total * 6 / 10);
}

TEST_F(TensorParallelCheckpoint, LoadsWithoutTensorParallelism) {
  expect_loads(2, 1, saved_splits(), "two copies");
  expect_loads(4, 1, saved_splits(), "one mesh");
  expect_loads(1, 1, saved_splits(), "every rank alone");
}

// Saved replicated, loaded split (and along dim 1 of a tensor saved split along dim 0, and replicated where it was
// split): the full tensor is the common ground.
TEST_F(TensorParallelCheckpoint, LoadsWithOtherSplitsThanItWasSavedWith) {
  ParameterSplits splits = saved_splits();
  splits["attn.down.weight"] = {.dim = 1};
  splits["wte.weight"] = {.dim = 1};
  splits.erase("mlp.fc.weight");
  expect_loads(2, 2, splits, "other splits");
  expect_loads(1, 2, splits, "other splits, two copies");
}

// What eval and sample do: the full weights into one process, from every part.
TEST_F(TensorParallelCheckpoint, LoadWeightsReadsTheFullTensorsIntoOneProcess) {
  std::vector<mlagpt::trainer::NamedParameter> parameters;
  for (const Synthetic& p : kParams) {
    parameters.push_back({p.name, at::zeros(p.shape, at::kFloat)});
  }
  Checkpointer::load_weights(checkpoint(), parameters);
  Checkpointer::verify_weights(checkpoint());
  for (size_t i = 0; i < kParams.size(); ++i) {
    EXPECT_TRUE(at::equal(parameters[i].tensor, expected_->params[i])) << kParams[i].name;
  }
  world_->barrier();
}

// The piece is in part 1 of a split parameter: at the saved mesh only tp rank 1's ranks read it.
TEST_F(TensorParallelCheckpoint, ADamagedPieceOfATensorParallelPartIsADataErrorOnEveryRank) {
  const fs::path copy = copy_of_checkpoint("corrupt");
  std::string dataset;
  std::string file;
  const nlohmann::json json = metadata();
  for (const auto& piece : json["tensors"]["params/mlp.fc.weight"]["pieces"]) {
    if (dataset.empty() && piece["part"] == 1) {
      dataset = piece["dataset"].get<std::string>();
      file = piece["file"].get<std::string>();
    }
  }
  ASSERT_FALSE(dataset.empty());
  if (world_->rank() == 0) {
    flip_byte(copy / file, dataset, 5);
  }
  world_->barrier();
  const Mesh mesh(2, 2);
  Model fresh(mesh, /*zero=*/true, saved_splits());
  const at::Tensor before = fresh.optimizer->parameters().front().tensor.detach().clone();
  try {
    Checkpointer(copy.parent_path(), 10, *mesh.dp, *mesh.tp, saved_splits())
        .load(copy, *fresh.optimizer, train_config(), kDataset);
    ADD_FAILURE() << "rank " << world_->rank() << " loaded a corrupt checkpoint";
  } catch (const mlagpt::DataError& e) {
    const std::string text = e.what();
    EXPECT_NE(text.find((copy / file).string() + ": tensor " + dataset + " is corrupt"), std::string::npos) << text;
  }
  EXPECT_TRUE(at::equal(fresh.optimizer->parameters().front().tensor, before)) << "restored on rank " << world_->rank();
  EXPECT_EQ(fresh.optimizer->step_count(), 0);
  if (world_->rank() == 0) {
    EXPECT_THROW(Checkpointer::verify_weights(copy), mlagpt::DataError);
  }
  world_->barrier();
}

TEST_F(TensorParallelCheckpoint, PiecesThatDoNotCoverAPartAreAnIoErrorOnEveryRank) {
  const fs::path copy = copy_of_checkpoint("uncovered");
  if (world_->rank() == 0) {
    nlohmann::json json = metadata();
    auto& pieces = json["tensors"]["optim/attn.proj.weight/exp_avg"]["pieces"];
    nlohmann::json kept = nlohmann::json::array();
    for (const auto& piece : pieces) {
      if (piece["part"] != 1 || piece["begin"] != 0) {
        kept.push_back(piece);
      }
    }
    EXPECT_EQ(kept.size() + 1, pieces.size());  // no ASSERT: the other ranks wait for this one
    pieces = kept;
    std::ofstream(copy / "metadata.json") << json.dump(2);
  }
  world_->barrier();
  const Mesh mesh(2, 2);
  Model fresh(mesh, /*zero=*/false, saved_splits());
  try {
    Checkpointer(copy.parent_path(), 10, *mesh.dp, *mesh.tp, saved_splits())
        .load(copy, *fresh.optimizer, train_config(), kDataset);
    ADD_FAILURE() << "rank " << world_->rank() << " loaded a checkpoint with a part uncovered";
  } catch (const mlagpt::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("the pieces of tensor optim/attn.proj.weight/exp_avg (part 1 of 2)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(fresh.optimizer->step_count(), 0);
}

TEST_F(TensorParallelCheckpoint, AModelOfAnotherFullShapeIsAConfigErrorOnEveryRank) {
  const Mesh mesh(2, 2);
  Model other(mesh, /*zero=*/true, saved_splits(), {{"mlp.fc.weight", {32, 10}}});
  try {
    Checkpointer(*root_ / "run", 10, *mesh.dp, *mesh.tp, saved_splits())
        .load(checkpoint(), *other.optimizer, train_config(), kDataset);
    ADD_FAILURE() << "rank " << world_->rank() << " loaded a checkpoint of another shape";
  } catch (const mlagpt::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("params/mlp.fc.weight has shape [28, 10], the model expects [32, 10]"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(other.optimizer->step_count(), 0);
}
