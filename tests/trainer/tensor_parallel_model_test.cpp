// The model split over a tensor-parallel group (Megatron-LM's layout, docs/design.md "Tensor parallelism") against
// the same model on one device, under mpiexec -n 2 and -n 4 with the MPI backend, for every attention variant: MHA,
// GQA with split and with replicated KV heads, MQA, MLA with and without query compression, with and without
// RoPE, and with every MLP, norm, bias and embedding choice among them.
//
// Every rank builds the single-device model too (the reference) and compares: the weights a TP model draws are the
// chunks of the reference's; the loss (vocabulary-parallel cross entropy) and this rank's logits equal the
// reference's; every gradient, gathered from the ranks (after the sum over the group of the replicated parameters
// whose gradient is split by heads, as the trainer's GradReducer does), equals the reference gradient; all within
// 1e-5 relative. It also counts what the group communicates in one forward and backward against the analytic
// Megatron figure, and checks the generator of split activations: different on every rank, the default one left
// as it was.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "launch/error.h"
#include "launch/mpi_communicator.h"
#include "model/gpt.h"
#include "model/tensor_parallel.h"
#include "support/counting_communicator.h"
#include "support/model_fixtures.h"
#include "trainer/parallel/tensor_parallel_group.h"

namespace {

using mlagpt::model::AttentionKind;
using mlagpt::model::Gpt;
using mlagpt::model::ModelConfig;
using mlagpt::model::ParameterSplit;
using mlagpt::testing::relative_error;

constexpr double kTolerance = 1e-5;
constexpr int64_t kBatch = 3;
constexpr int64_t kTime = 7;

// No two sizes alike: d 48, H 8 (4 or 2 per rank), vocab 96, MLP 160, Dc 20, Dn 6, Dr 4, Dv 10, T 7, B 3.
ModelConfig base_config() {
  ModelConfig config;
  config.vocab_size = 96;
  config.block_size = 16;
  config.n_layer = 2;
  config.n_embd = 48;
  config.n_head = 8;
  config.mlp_hidden = 160;
  config.kv_lora_rank = 20;
  config.qk_nope_head_dim = 6;
  config.qk_rope_head_dim = 4;
  config.v_head_dim = 10;
  return config;
}

struct Variant {
  std::string name;
  ModelConfig config;
};

std::vector<Variant> variants() {
  std::vector<Variant> out;
  const auto add = [&out](std::string name, auto edit) {
    ModelConfig config = base_config();
    edit(config);
    config.resolve();
    out.push_back({std::move(name), config});
  };
  using mlagpt::model::MlpKind;
  using mlagpt::model::NormKind;
  using mlagpt::model::PositionKind;
  add("mha, gelu, layernorm, bias, learned positions, untied", [](ModelConfig& c) {
    c.attention = AttentionKind::kMha;
    c.mlp = MlpKind::kGelu;
    c.norm = NormKind::kLayerNorm;
    c.bias = true;
    c.positions = PositionKind::kLearned;
    c.tie_embeddings = false;
  });
  add("mha, rope", [](ModelConfig& c) { c.attention = AttentionKind::kMha; });
  add("gqa, 4 kv heads (split over 2 and 4 ranks)", [](ModelConfig& c) {
    c.attention = AttentionKind::kGqa;
    c.n_kv_head = 4;
    c.bias = true;
  });
  // 8 heads read 2 kv heads in groups of 4: over 4 ranks (2 heads each) a rank reads one kv head; 2 kv heads over
  // 4 ranks are replicated. And 8 heads over 6 kv heads is not a GQA; so for heads that straddle kv groups:
  add("gqa, 2 kv heads (split over 2 ranks, replicated over 4)", [](ModelConfig& c) {
    c.attention = AttentionKind::kGqa;
    c.n_kv_head = 2;
  });
  add("gqa, 12 heads over 3 kv heads (replicated: each rank's heads straddle kv groups)", [](ModelConfig& c) {
    c.attention = AttentionKind::kGqa;
    c.n_embd = 72;
    c.n_head = 12;
    c.n_kv_head = 3;
  });
  add("mqa, untied", [](ModelConfig& c) {
    c.attention = AttentionKind::kMqa;
    c.tie_embeddings = false;
  });
  add("mla, rope", [](ModelConfig& c) { c.attention = AttentionKind::kMla; });
  add("mla, q_lora_rank, rope, bias", [](ModelConfig& c) {
    c.attention = AttentionKind::kMla;
    c.q_lora_rank = 28;
    c.bias = true;
  });
  add("mla, q_lora_rank, no rope (learned positions), gelu", [](ModelConfig& c) {
    c.attention = AttentionKind::kMla;
    c.q_lora_rank = 28;
    c.qk_rope_head_dim = 0;
    c.positions = PositionKind::kLearned;
    c.mlp = MlpKind::kGelu;
  });
  return out;
}

class TensorParallelModel : public testing::Test {
 protected:
  mlagpt::launch::MpiCommunicator comm{MPI_COMM_WORLD};
  mlagpt::testing::CountingCommunicator counting{comm};
  mlagpt::trainer::TensorParallelGroup group{counting};
  int64_t rank = group.rank();
  int64_t ranks = group.size();

  // This rank's chunk of a whole tensor.
  at::Tensor chunk(const at::Tensor& whole, const ParameterSplit& split) const {
    if (!split.split()) {
      return whole;
    }
    const int64_t n = whole.size(split.dim) / ranks;
    return whole.narrow(split.dim, rank * n, n);
  }
  // The whole tensor from every rank's chunk.
  at::Tensor gathered(const at::Tensor& local, const ParameterSplit& split) {
    if (!split.split()) {
      return local;
    }
    const at::Tensor flat = local.contiguous().reshape({-1});
    at::Tensor all = at::empty({flat.numel() * ranks}, flat.options());
    comm.all_gather(flat, all);
    std::vector<at::Tensor> parts;
    for (int64_t r = 0; r < ranks; ++r) {
      parts.push_back(all.narrow(0, r * flat.numel(), flat.numel()).view(local.sizes()));
    }
    return at::cat(parts, split.dim);
  }
};

TEST_F(TensorParallelModel, TheRulesRefuseMeshesThatDoNotDivideTheModel) {
  ModelConfig config = base_config();
  config.resolve();
  config.validate_tensor_parallel(2);
  config.validate_tensor_parallel(4);
  try {
    config.validate_tensor_parallel(3);
    FAIL() << "tp = 3 with 8 heads was accepted";
  } catch (const mlagpt::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.tp = 3 does not divide model.n_head = 8"), std::string::npos)
        << e.what();
  }
  config.vocab_size = 100;  // divisible by 4, not by 8
  config.n_head = 16;
  config.n_embd = 64;
  config.mlp_hidden = 192;
  config.resolve();
  try {
    config.validate_tensor_parallel(8);
    FAIL() << "tp = 8 with a vocabulary of 100 was accepted";
  } catch (const mlagpt::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.vocab_size = 100"), std::string::npos) << e.what();
  }
  config.vocab_size = 96;
  config.mlp_hidden = 100;
  try {
    config.validate_tensor_parallel(8);
    FAIL() << "tp = 8 with 100 hidden units was accepted";
  } catch (const mlagpt::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.mlp_hidden = 100"), std::string::npos) << e.what();
  }
}

TEST_F(TensorParallelModel, EveryVariantEqualsTheSingleDeviceModelForwardAndBackward) {
  for (const Variant& variant : variants()) {
    SCOPED_TRACE(variant.name);
    at::manual_seed(1234);
    Gpt reference(variant.config);
    at::manual_seed(1234);
    Gpt model(variant.config, group);
    const auto& splits = model.parameter_splits();
    ASSERT_EQ(splits.size(), reference.named_parameters().size());

    // The weights drawn are the chunks of the single-device model's.
    const auto reference_params = reference.named_parameters();
    for (const auto& item : model.named_parameters()) {
      const ParameterSplit& split = splits.at(item.key());
      EXPECT_TRUE(at::equal(item.value(), chunk(reference_params[item.key()], split))) << item.key();
    }
    // Sharper weights, so that attention is not uniform and errors show; copied chunk by chunk.
    mlagpt::testing::sharpen(reference, 3.0);
    {
      const c10::NoGradGuard no_grad;
      for (auto& item : model.named_parameters()) {
        item.value().copy_(chunk(reference_params[item.key()], splits.at(item.key())));
      }
    }

    at::manual_seed(77);
    const at::Tensor idx = at::randint(variant.config.vocab_size, {kBatch, kTime}, at::kLong);
    at::Tensor targets = at::randint(variant.config.vocab_size, {kBatch, kTime}, at::kLong);
    targets.index_put_({0, 2}, mlagpt::model::kIgnoreIndex);

    const at::Tensor reference_logits = reference.forward(idx);
    const at::Tensor reference_loss = reference.loss(idx, targets);
    reference_loss.backward();
    const at::Tensor logits = model.forward(idx);
    const at::Tensor loss = model.loss(idx, targets);
    loss.backward();

    EXPECT_LT(relative_error(loss, reference_loss), kTolerance);
    EXPECT_LT(relative_error(logits, chunk(reference_logits, {.dim = 2})), kTolerance);
    double worst_gradient = 0;
    for (auto& item : model.named_parameters()) {
      const ParameterSplit& split = splits.at(item.key());
      at::Tensor grad = item.value().grad().clone();
      if (split.sum_gradient) {
        comm.all_reduce(grad, mlagpt::launch::ReduceOp::kSum);
      }
      const at::Tensor whole = gathered(grad, split);
      const at::Tensor& expected = reference_params[item.key()].grad();
      if (item.key().ends_with("k_proj.bias") && !variant.config.uses_rope()) {
        // Without RoPE a key bias adds q . b to every score of a query, which the softmax cancels: its gradient is
        // zero, and what both models compute is the residue of cancelling terms, different in every summation
        // order (with the sharpened weights, about 1e-2 of the largest gradient). There is nothing to compare.
        continue;
      }
      const double error = relative_error(whole, expected);
      worst_gradient = std::max(worst_gradient, error);
      EXPECT_LT(error, kTolerance) << item.key() << " (split dim " << split.dim
                                   << (split.sum_gradient ? ", summed" : "") << ")";
    }
    if (rank == 0) {
      std::printf("[tp %lld] %s: loss %.2e, logits %.2e, worst gradient %.2e (relative)\n",
                  static_cast<long long>(ranks), variant.name.c_str(), relative_error(loss, reference_loss),
                  relative_error(logits, chunk(reference_logits, {.dim = 2})), worst_gradient);
    }
  }
}

TEST_F(TensorParallelModel, CommunicatesWhatMegatronsAnalysisSays) {
  // Per block Megatron's layout sums [B, T, d] twice forward (attention's and the MLP's row-parallel outputs) and
  // twice backward (the gradients of their column-parallel inputs); the embedding once forward, the head once
  // backward; the cross entropy three numbers per position. Nothing else: MLA's replicated down-projections add no
  // activation traffic (their gradient is summed once per step, outside forward and backward).
  for (const Variant& variant : variants()) {
    SCOPED_TRACE(variant.name);
    at::manual_seed(5);
    Gpt model(variant.config, group);
    const at::Tensor idx = at::randint(variant.config.vocab_size, {kBatch, kTime}, at::kLong);
    counting.reset();
    model.loss(idx, idx).backward();
    const int64_t activation = kBatch * kTime * variant.config.n_embd * 4;  // one [B, T, d] float32 sum
    const int64_t analytic = variant.config.n_layer * 4 * activation + 2 * activation + 3 * kBatch * kTime * 4;
    EXPECT_EQ(counting.bytes(), analytic);
    EXPECT_EQ(counting.calls(), variant.config.n_layer * 4 + 2 + 2);
  }
}

// The group with a CPU generator of its own for split activations, seeded per rank.
class SeededGroup final : public mlagpt::model::TensorParallel {
 public:
  SeededGroup(const TensorParallel& inner, uint64_t seed)
      : inner_(inner), generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}
  int64_t rank() const override { return inner_.rank(); }
  int64_t size() const override { return inner_.size(); }
  void all_reduce_sum(at::Tensor& tensor) const override { inner_.all_reduce_sum(tensor); }
  void all_reduce_max(at::Tensor& tensor) const override { inner_.all_reduce_max(tensor); }
  at::Generator sharded_generator(const c10::Device& /*device*/) const override { return generator_; }

 private:
  const TensorParallel& inner_;
  at::Generator generator_;
};

TEST_F(TensorParallelModel, SplitActivationsDrawFromTheirOwnGeneratorPerRank) {
  const auto draw = [] { return at::rand({5}); };
  at::manual_seed(9);
  const at::Tensor expected_default = at::cat({draw(), draw()});
  at::manual_seed(9);
  const SeededGroup seeded(group, 100 + static_cast<uint64_t>(rank));
  at::Tensor sharded;
  {
    const mlagpt::model::ShardedRngScope scope(seeded, c10::Device(c10::kCPU));
    sharded = draw();
  }
  const at::Tensor after = at::cat({draw(), draw()});
  EXPECT_TRUE(at::equal(after, expected_default)) << "the scope moved the default generator";
  {
    const mlagpt::model::ShardedRngScope scope(seeded, c10::Device(c10::kCPU));
    EXPECT_FALSE(at::equal(draw(), sharded)) << "the sharded generator did not advance";
  }
  at::Tensor all = at::empty({5 * ranks});
  comm.all_gather(sharded, all);
  for (int64_t r = 1; r < ranks; ++r) {
    EXPECT_FALSE(at::equal(all.narrow(0, 0, 5), all.narrow(0, r * 5, 5))) << "rank " << r << " drew rank 0's";
  }
  // A group of one keeps drawing from the default generator.
  at::manual_seed(9);
  {
    const mlagpt::model::ShardedRngScope scope(mlagpt::model::single_device(), c10::Device(c10::kCPU));
    EXPECT_TRUE(at::equal(draw(), expected_default.narrow(0, 0, 5)));
  }
}

}  // namespace
