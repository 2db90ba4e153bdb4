// The data-parallel core under mpiexec -n 2 and -n 4, against plain computations on the same ranks: the bucketed
// reduction (GradReducer over FlatAdamW's flat buffers, buckets started during backward) gives the gradients the
// per-parameter all-reduce and division give, bit for bit; ZeRO-1 trains as the replicated optimizer does over 20
// steps (asserted within 1e-6 norm-wise per tensor: an MPI may sum a reduce-scatter in another order than an
// all-reduce, as Open MPI's blocking algorithms do on 4 ranks; its non-blocking ones, used here, agree bit for bit)
// and holds 1/R of its state; a parameter that gets no gradient on one rank only is an error on every rank,
// not a hang.
#include <ATen/ops/randint.h>
#include <c10/core/GradMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

#include "launch/error.h"
#include "launch/mpi_communicator.h"
#include "model/gpt.h"
#include "support/model_fixtures.h"
#include "trainer/optimizer.h"
#include "trainer/train_step.h"

namespace {

using mlagpt::trainer::FlatAdamW;
using mlagpt::trainer::FlatOptions;
using mlagpt::trainer::GradReducer;
using mlagpt::trainer::MicroBatch;
using mlagpt::trainer::TrainConfig;
using mlagpt::trainer::TrainStep;

constexpr int64_t kBatch = 3;
constexpr int64_t kSeqLen = 11;
constexpr int64_t kBucketBytes = 4096;  // many small buckets: parameters straddle buckets' shard boundaries

TrainConfig config() {
  TrainConfig c;
  c.model = mlagpt::testing::tiny_config(mlagpt::model::AttentionKind::kMla);
  c.data.dir = "unused";
  c.optim.lr = 3e-3;
  c.optim.grad_accum = 2;
  c.optim.grad_clip = 1.0;
  c.schedule.warmup_steps = 3;
  c.schedule.decay_steps = 20;
  c.schedule.min_lr = 3e-4;
  c.run.max_steps = 20;
  return c;
}

// Micro-batch `i` of rank `rank`: different on every rank and every call, the same for every replica.
MicroBatch batch(int rank, int64_t i, int64_t vocab) {
  at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(1000 * rank + i));
  return {at::randint(vocab, {kBatch, kSeqLen}, generator, at::kLong),
          at::randint(vocab, {kBatch, kSeqLen}, generator, at::kLong)};
}

// A model, its optimizer, reducer and step, initialized from seed 7 on every rank.
struct Replica {
  Replica(const TrainConfig& c, mlagpt::launch::Communicator& comm, bool zero, bool overlap = true)
      : model((at::manual_seed(7), c.model)),
        optimizer(mlagpt::trainer::adamw_parameters(model), mlagpt::trainer::adamw_settings(c.optim),
                  FlatOptions{.bucket_bytes = kBucketBytes, .zero = zero}, comm),
        reducer(optimizer, overlap),
        step(model, optimizer, reducer, c, comm) {}
  mlagpt::model::Gpt model;
  FlatAdamW optimizer;
  GradReducer reducer;
  TrainStep step;
};

// |a - b| / |b| over the whole tensor.
double norm_relative(const at::Tensor& actual, const at::Tensor& reference) {
  return (actual - reference).norm().item<double>() / reference.norm().item<double>();
}

class ParallelCore : public testing::Test {
 protected:
  mlagpt::launch::MpiCommunicator comm{MPI_COMM_WORLD};
  int rank = comm.rank();
  int ranks = comm.size();
};

TEST_F(ParallelCore, BucketedReductionEqualsThePerParameterOne) {
  const TrainConfig c = config();
  for (const bool overlap : {true, false}) {
    Replica bucketed(c, comm, /*zero=*/false, overlap);
    at::manual_seed(7);
    mlagpt::model::Gpt plain(c.model);
    ASSERT_GT(bucketed.optimizer.layout().buckets.size(), 4U);
    bucketed.optimizer.zero_grad();
    for (int64_t i = 0; i < 2; ++i) {
      const MicroBatch b = batch(rank, i, c.model.vocab_size);
      if (i == 1) {
        bucketed.reducer.arm();
      }
      (mlagpt::model::cross_entropy_loss(bucketed.model.forward(b.x), b.y) / 2.0 * (1.0 / ranks)).backward();
      (mlagpt::model::cross_entropy_loss(plain.forward(b.x), b.y) / 2.0).backward();
    }
    EXPECT_TRUE(bucketed.reducer.finish().empty());
    if (overlap) {
      EXPECT_GT(bucketed.reducer.started_during_backward(), 0) << "no bucket started before backward ended";
    } else {
      EXPECT_EQ(bucketed.reducer.started_during_backward(), 0);
    }
    // The per-parameter reduction the trainer used to do: sum, then divide.
    for (auto& p : plain.parameters()) {
      at::Tensor grad = p.mutable_grad();
      comm.all_reduce(grad, mlagpt::launch::ReduceOp::kSum);
      grad.div_(static_cast<double>(ranks));
    }
    const auto a = bucketed.model.named_parameters();
    const auto b = plain.named_parameters();
    for (const auto& item : b) {
      EXPECT_TRUE(at::equal(a[item.key()].grad(), item.value().grad()))
          << item.key() << " (overlap " << overlap << "): max difference "
          << (a[item.key()].grad() - item.value().grad()).abs().max().item<double>();
    }
  }
}

TEST_F(ParallelCore, ZeroOneTrainsAsTheReplicatedOptimizerOverTwentySteps) {
  const TrainConfig c = config();
  Replica replicated(c, comm, /*zero=*/false);
  Replica sharded(c, comm, /*zero=*/true);
  double worst_loss = 0;
  double worst_norm = 0;
  for (int64_t s = 0; s < c.run.max_steps; ++s) {
    int64_t i = 0;
    int64_t j = 0;
    const auto a = mlagpt::trainer::read_step_reports(
        {replicated.step.run(s, [&] { return batch(rank, 2 * s + i++, c.model.vocab_size); })});
    const auto b = mlagpt::trainer::read_step_reports(
        {sharded.step.run(s, [&] { return batch(rank, 2 * s + j++, c.model.vocab_size); })});
    ASSERT_TRUE(a[0].finite && b[0].finite);
    worst_loss = std::max(worst_loss, std::abs(b[0].loss - a[0].loss) / std::abs(a[0].loss));
    worst_norm = std::max(worst_norm, std::abs(b[0].grad_norm - a[0].grad_norm) / std::abs(a[0].grad_norm));
  }
  EXPECT_LE(worst_loss, 1e-6);
  EXPECT_LE(worst_norm, 1e-6);
  double worst_param = 0;
  double worst_element = 0;
  const auto pa = replicated.model.named_parameters();
  for (const auto& item : sharded.model.named_parameters()) {
    // Norm-wise: an element whose summed gradient is near 0 moves by up to 2 lr when the sums' rounding differs (Adam
    // normalizes it), so one element may differ by more; the largest such difference is printed.
    const double error = norm_relative(item.value().detach(), pa[item.key()].detach());
    EXPECT_LE(error, 1e-6) << item.key();
    worst_param = std::max(worst_param, error);
    worst_element =
        std::max(worst_element, mlagpt::testing::relative_error(item.value().detach(), pa[item.key()].detach()));
  }
  EXPECT_EQ(sharded.optimizer.step_count(), c.run.max_steps);
  // Every rank ends with the same parameters: the all-gather gave each rank the others' shards.
  for (const auto& item : sharded.model.named_parameters()) {
    at::Tensor copy = item.value().detach().clone();
    at::Tensor first = copy.clone();
    comm.broadcast(first, 0);
    EXPECT_TRUE(at::equal(copy, first)) << item.key() << " differs between rank 0 and rank " << rank;
  }
  if (rank == 0) {
    std::printf(
        "[zero-1] %d ranks, 20 steps: worst relative difference loss %.2e, grad norm %.2e, parameters %.2e "
        "(norm-wise; largest element difference %.2e of its tensor's largest element)\n",
        ranks, worst_loss, worst_norm, worst_param, worst_element);
  }
}

TEST_F(ParallelCore, ZeroOneHoldsItsShareOfTheOptimizerState) {
  const TrainConfig c = config();
  Replica replicated(c, comm, /*zero=*/false);
  Replica sharded(c, comm, /*zero=*/true);
  const auto& layout = sharded.optimizer.layout();
  EXPECT_EQ(sharded.optimizer.state_bytes() * ranks, replicated.optimizer.state_bytes());
  // The replica's state is the parameters' twice, plus the padding of each bucket to R aligned shards.
  const int64_t padding = layout.padded_numel() - layout.parameter_numel();
  EXPECT_EQ(replicated.optimizer.state_bytes(), 2 * 4 * (layout.parameter_numel() + padding));
  EXPECT_LT(padding, static_cast<int64_t>(layout.params.size() + layout.buckets.size() * ranks) *
                         mlagpt::trainer::FlatLayout::kAlignment);
  if (rank == 0) {
    std::printf("[zero-1] %d ranks: optimizer state %lld bytes per rank, replicated %lld (%lld padding elements)\n",
                ranks, static_cast<long long>(sharded.optimizer.state_bytes()),
                static_cast<long long>(replicated.optimizer.state_bytes()), static_cast<long long>(padding));
  }
}

TEST_F(ParallelCore, AParameterWithoutAGradientOnOneRankIsAnErrorOnEveryRank) {
  const TrainConfig c = config();
  for (const bool zero : {false, true}) {
    Replica replica(c, comm, zero);
    if (rank == 1) {
      // Frozen here only: backward gives it no gradient on this rank, so its bucket is never complete.
      replica.model.named_parameters()["blocks.0.norm1.weight"].requires_grad_(false);
    }
    int64_t i = 0;
    const auto report = replica.step.run(0, [&] { return batch(rank, i++, c.model.vocab_size); });
    EXPECT_THAT([&] { mlagpt::trainer::read_step_reports({report}); },
                testing::ThrowsMessage<mlagpt::Error>(testing::AllOf(
                    testing::HasSubstr("missing on some data-parallel rank"),
                    testing::HasSubstr(rank == 1 ? "blocks.0.norm1.weight" : "see the other ranks' logs"))))
        << "zero " << zero;
  }
  comm.barrier();  // every rank got here: nobody hangs in a collective the others skipped
}

}  // namespace
