// The Trainer in-process under mpiexec -n 2 with parallel.tp = 2 and dropout: after training, every replicated
// parameter is bitwise the same on the two tensor-parallel ranks. That holds only if the ranks draw the same masks for
// the activations they both hold (the default generator seeded alike within the group), sum the shared gradients
// (sum_gradient) to the same values, count the same norm and so clip alike; the split parameters, which differ, show
// that the comparison sees the ranks' own tensors.
#include <ATen/ops/equal.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "launch/mpi_communicator.h"
#include "support/small_dataset.h"
#include "support/temp_dir.h"
#include "support/test_runtime.h"
#include "trainer/trainer.h"

namespace fs = std::filesystem;

namespace {

// A directory every rank shares: rank 0 makes it and tells the others its path.
class SharedDir {
 public:
  explicit SharedDir(mlagpt::launch::Communicator& comm) {
    std::string path;
    if (comm.rank() == 0) {
      dir_ = std::make_unique<mlagpt::testing::TempDir>();
      path = dir_->path().string();
    }
    int length = static_cast<int>(path.size());
    MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD);
    path.resize(static_cast<size_t>(length));
    MPI_Bcast(path.data(), length, MPI_CHAR, 0, MPI_COMM_WORLD);
    path_ = path;
  }
  const fs::path& path() const { return path_; }

 private:
  std::unique_ptr<mlagpt::testing::TempDir> dir_;
  fs::path path_;
};

TEST(TensorParallelTrainer, ReplicatedParametersStayBitwiseEqualAcrossTheGroupWithDropout) {
  mlagpt::launch::MpiCommunicator world(MPI_COMM_WORLD);
  ASSERT_EQ(world.size(), 2) << "run under mpiexec -n 2: one tensor-parallel group of 2";
  const SharedDir dir(world);
  if (world.rank() == 0) {
    mlagpt::testing::prepare_small_byte_dataset(dir.path());
  }
  world.barrier();
  const mlagpt::trainer::TrainConfig config =
      mlagpt::trainer::read_train_config({}, {"--run.out_dir=" + (dir.path() / "run").string(),
                                              "--run.device=cpu",
                                              "--run.threads=1",
                                              "--run.max_steps=4",
                                              "--run.log_every=100",
                                              "--data.dir=" + (dir.path() / "data").string(),
                                              "--data.batch_size=3",
                                              "--data.seq_len=24",
                                              "--model.block_size=24",
                                              "--model.n_layer=2",
                                              "--model.n_embd=40",
                                              "--model.n_head=4",
                                              "--model.mlp_hidden=112",
                                              "--model.kv_lora_rank=12",
                                              "--model.q_lora_rank=20",
                                              "--model.qk_nope_head_dim=8",
                                              "--model.qk_rope_head_dim=4",
                                              "--model.v_head_dim=6",
                                              "--model.dropout=0.2",
                                              "--optim.lr=3e-3",
                                              "--optim.grad_accum=2",
                                              "--schedule.warmup_steps=2",
                                              "--eval.every=0",
                                              "--parallel.tp=2"});
  mlagpt::trainer::Trainer trainer(config, mlagpt::testing::runtime());
  ASSERT_EQ(trainer.train(""), 0);

  mlagpt::model::Gpt& model = trainer.model();
  const auto& splits = model.parameter_splits();
  int replicas = 0;
  int summed = 0;
  for (const auto& item : model.named_parameters()) {
    const auto split = splits.find(item.key());
    ASSERT_NE(split, splits.end()) << item.key();
    const at::Tensor mine = item.value().detach().contiguous().reshape({-1});
    at::Tensor both = at::zeros({2 * mine.numel()}, mine.options());
    world.all_gather(mine, both);
    const bool equal = at::equal(both.narrow(0, 0, mine.numel()), both.narrow(0, mine.numel(), mine.numel()));
    if (split->second.split()) {
      EXPECT_FALSE(equal) << item.key() << " is split, yet the two ranks hold the same slice";
    } else {
      EXPECT_TRUE(equal) << item.key() << " is replicated, and the ranks' copies differ after training";
      ++replicas;
      summed += split->second.sum_gradient ? 1 : 0;
    }
  }
  EXPECT_GT(replicas, 0);
  EXPECT_GT(summed, 0) << "MLA's down-projections are replicas whose gradients the group sums";
}

}  // namespace
