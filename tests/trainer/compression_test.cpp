// Compression passes in one process (trainer/compression/compression.h): the three rank rules, factorize on a
// weight of known spectrum (the factors are the truncated SVD, balanced, with the kept energy and error the
// spectrum says), re-factorizing a low-rank projection from its factors to a lower rank, project mode, target
// selection and its errors, the [compress] config's rules, and in the Trainer the AdamW state across a pass: the
// other parameters' moments and the step count kept bitwise, the new factors' moments zero.
#include "trainer/compression/compression.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/diag.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/linalg_svdvals.h>
#include <ATen/ops/mm.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>

#include "launch/communicator.h"
#include "launch/error.h"
#include "support/error_text.h"
#include "support/model_fixtures.h"
#include "support/small_dataset.h"
#include "support/temp_dir.h"
#include "support/test_runtime.h"
#include "tests/linalg/known_spectrum.h"
#include "trainer/trainer.h"

using mlagpt::model::AttentionKind;
using mlagpt::model::Gpt;
using mlagpt::model::LowRankLinear;
using mlagpt::trainer::compress_model;
using mlagpt::trainer::CompressionSettings;
using mlagpt::trainer::CompressMode;
using mlagpt::trainer::RankRule;

using mlagpt::testing::error_of;

namespace {

double frobenius(const at::Tensor& t) {
  return t.to(at::kDouble).square().sum().sqrt().item<double>();
}

// The tiny MLA model with blocks.0.mlp.fc ([88, 32]) set to a matrix of spectrum 0.8^i.
struct KnownModel {
  KnownModel() : model(mlagpt::testing::tiny_config(AttentionKind::kMla)) {
    known = mlagpt::testing::with_spectrum("fc", 88, 32, mlagpt::testing::geometric(32, 0.8), 5);
    const c10::NoGradGuard no_grad;
    model.projection("blocks.0.mlp.fc")->effective_weight().copy_(known.a);
  }
  // sum_{i<k} sigma_i^2 / sum sigma^2
  double energy(int64_t k) const {
    return known.sigma.narrow(0, 0, k).square().sum().item<double>() / known.sigma.square().sum().item<double>();
  }
  at::Tensor truncated(int64_t k) const {  // the best rank-k approximation
    const auto [u, s, vh] = at::linalg_svd(known.a, false);
    return at::mm(u.narrow(1, 0, k) * s.narrow(0, 0, k), vh.narrow(0, 0, k));
  }
  Gpt model;
  mlagpt::testing::KnownMatrix known;
};

CompressionSettings settings(RankRule rule, CompressMode mode = CompressMode::kFactorize,
                             std::string target = "blocks.0.mlp.fc") {
  return {.targets = {std::move(target)}, .rule = rule, .mode = mode, .oversample = 10, .power_iters = 2, .seed = 3};
}

}  // namespace

TEST(RankRule, RankEnergyAndParamRatio) {
  const at::Tensor s = at::tensor({4.0, 2.0, 1.0, 1.0}, at::kDouble);  // energies 16, 4, 1, 1 of 22
  EXPECT_EQ(mlagpt::trainer::choose_rank({.rank = 3}, 40, 30, s, 22), 3);
  EXPECT_EQ(mlagpt::trainer::choose_rank({.rank = 99}, 40, 30, s, 22), 30);    // at most min(out, in)
  EXPECT_EQ(mlagpt::trainer::choose_rank({.energy = 0.7}, 40, 30, s, 22), 1);  // 16 / 22 = 0.727
  EXPECT_EQ(mlagpt::trainer::choose_rank({.energy = 0.9}, 40, 30, s, 22), 2);  // 20 / 22 = 0.909
  EXPECT_EQ(mlagpt::trainer::choose_rank({.energy = 1.0}, 40, 30, s, 22), 4);
  EXPECT_EQ(mlagpt::trainer::choose_rank({.energy = 0.99}, 40, 30, s, 30), 0);  // not within these values
  // k (40 + 30) <= 0.5 * 40 * 30: k = 8 (8 * 70 = 560 <= 600; 9 * 70 = 630 > 600).
  EXPECT_EQ(mlagpt::trainer::choose_rank({.param_ratio = 0.5}, 40, 30, s, 22), 8);
  EXPECT_EQ(mlagpt::trainer::choose_rank({.param_ratio = 0.001}, 40, 30, s, 22), 1);
}

TEST(Compression, FactorizeGivesTheTruncatedSvdAsBalancedFactors) {
  KnownModel m;
  mlagpt::launch::LocalCommunicator local;
  const auto report = compress_model(m.model, settings({.rank = 6}), local, local);
  ASSERT_EQ(report.layers.size(), 1U);
  const auto& layer = report.layers[0];
  EXPECT_EQ(layer.path, "blocks.0.mlp.fc");
  EXPECT_EQ(layer.rank_before, 0);
  EXPECT_EQ(layer.rank, 6);
  EXPECT_EQ(layer.parameters_before, 88 * 32);
  EXPECT_EQ(layer.parameters_after, 6 * (88 + 32));
  EXPECT_EQ(report.model_parameters_before - report.model_parameters_after, 88 * 32 - 6 * 120);
  EXPECT_NEAR(layer.kept_energy, m.energy(6), 1e-5);
  EXPECT_NEAR(layer.relative_error, std::sqrt(1 - m.energy(6)), 1e-4);
  auto* low_rank = dynamic_cast<LowRankLinear*>(m.model.projection("blocks.0.mlp.fc").get());
  ASSERT_NE(low_rank, nullptr);
  EXPECT_EQ(m.model.config().low_rank, "blocks.0.mlp.fc=6");
  const at::Tensor b = low_rank->weight_b().to(at::kDouble);
  const at::Tensor a = low_rank->weight_a().to(at::kDouble);
  EXPECT_LT(frobenius(at::mm(b, a) - m.truncated(6)) / frobenius(m.truncated(6)), 1e-4);
  // B = U S^1/2, A = S^1/2 V^T: B^T B = A A^T = diag(S).
  const at::Tensor s = at::diag(m.known.sigma.narrow(0, 0, 6));
  EXPECT_LT(frobenius(at::mm(b.t(), b) - s) / frobenius(s), 1e-4);
  EXPECT_LT(frobenius(at::mm(a, a.t()) - s) / frobenius(s), 1e-4);
}

TEST(Compression, AFactorizationThatWouldNotBeSmallerLeavesTheLayerDense) {
  KnownModel m;
  const at::Tensor before = m.model.projection("blocks.0.mlp.fc")->effective_weight().detach().clone();
  mlagpt::launch::LocalCommunicator local;
  // Rank 24 of [88, 32]: 24 * 120 = 2880 weights > 88 * 32 = 2816.
  const auto report = compress_model(m.model, settings({.rank = 24}), local, local);
  EXPECT_EQ(report.layers[0].rank, 0);
  EXPECT_EQ(report.layers[0].parameters_after, report.layers[0].parameters_before);
  EXPECT_EQ(report.model_parameters_after, report.model_parameters_before);
  EXPECT_TRUE(m.model.config().low_rank.empty());
  EXPECT_TRUE(m.model.projection("blocks.0.mlp.fc")->effective_weight().equal(before));
}

TEST(Compression, EnergyAndParamRatioRulesPickTheirRank) {
  {
    KnownModel m;
    // Half-way between the energies of ranks 4 and 5: the rule must pick 5.
    const double share = (m.energy(4) + m.energy(5)) / 2;
    mlagpt::launch::LocalCommunicator local;
    const auto report = compress_model(m.model, settings({.energy = share}), local, local);
    EXPECT_EQ(report.layers[0].rank, 5);
    EXPECT_GE(report.layers[0].kept_energy, share);
  }
  {
    KnownModel m;
    mlagpt::launch::LocalCommunicator local;
    const auto report = compress_model(m.model, settings({.param_ratio = 0.5}), local, local);
    EXPECT_EQ(report.layers[0].rank, 11);  // floor(0.5 * 88 * 32 / 120) = 11
    EXPECT_LE(report.layers[0].parameters_after, report.layers[0].parameters_before / 2);
  }
}

TEST(Compression, ALowRankProjectionIsRefactorizedFromItsFactorsToALowerRank) {
  KnownModel m;
  mlagpt::launch::LocalCommunicator local;
  compress_model(m.model, settings({.rank = 11}), local, local);
  auto* first = dynamic_cast<LowRankLinear*>(m.model.projection("blocks.0.mlp.fc").get());
  ASSERT_NE(first, nullptr);
  const at::Tensor product = first->effective_weight().detach().to(at::kDouble);
  const auto report = compress_model(m.model, settings({.rank = 4}), local, local);
  EXPECT_EQ(report.layers[0].rank_before, 11);
  EXPECT_EQ(report.layers[0].rank, 4);
  EXPECT_EQ(report.layers[0].parameters_after, 4 * 120);
  auto* second = dynamic_cast<LowRankLinear*>(m.model.projection("blocks.0.mlp.fc").get());
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->rank(), 4);
  // The best rank-4 approximation of the rank-11 product, and its exact error.
  const auto [u, s, vh] = at::linalg_svd(product, false);
  const at::Tensor best = at::mm(u.narrow(1, 0, 4) * s.narrow(0, 0, 4), vh.narrow(0, 0, 4));
  EXPECT_LT(frobenius(second->effective_weight().to(at::kDouble) - best) / frobenius(best), 1e-5);
  const double kept = s.narrow(0, 0, 4).square().sum().item<double>() / s.square().sum().item<double>();
  EXPECT_NEAR(report.layers[0].kept_energy, kept, 1e-6);
  EXPECT_NEAR(report.layers[0].relative_error, std::sqrt(1 - kept), 1e-5);
  // A later pass never raises the rank.
  EXPECT_EQ(compress_model(m.model, settings({.rank = 9}), local, local).layers[0].rank, 4);
}

TEST(Compression, ProjectKeepsTheDenseShapeAtRankK) {
  KnownModel m;
  mlagpt::launch::LocalCommunicator local;
  const auto report = compress_model(m.model, settings({.rank = 7}, CompressMode::kProject), local, local);
  EXPECT_EQ(report.layers[0].parameters_after, report.layers[0].parameters_before);
  EXPECT_EQ(report.model_parameters_after, report.model_parameters_before);
  EXPECT_TRUE(m.model.config().low_rank.empty());
  const at::Tensor w = m.model.projection("blocks.0.mlp.fc")->effective_weight().detach().to(at::kDouble);
  EXPECT_EQ(w.sizes(), (std::vector<int64_t>{88, 32}));
  EXPECT_LT(frobenius(w - m.truncated(7)) / frobenius(m.truncated(7)), 1e-4);
  const at::Tensor s = at::linalg_svdvals(w);
  EXPECT_LT(s[7].item<double>(), 1e-5 * s[0].item<double>()) << "rank 7";
  // A factorized projection is not projected.
  compress_model(m.model, settings({.rank = 5}), local, local);
  EXPECT_NE(error_of([&] {
              compress_model(m.model, settings({.rank = 3}, CompressMode::kProject), local, local);
            }).find("low rank already"),
            std::string::npos);
}

TEST(Compression, ANonFiniteWeightIsAnErrorNamingTheProjection) {
  KnownModel m;
  {
    const c10::NoGradGuard no_grad;
    m.model.projection("blocks.0.mlp.fc")->effective_weight()[3][5] = std::nan("");
  }
  mlagpt::launch::LocalCommunicator local;
  const std::string error = error_of([&] { compress_model(m.model, settings({.rank = 4}), local, local); });
  EXPECT_NE(error.find("compression of blocks.0.mlp.fc"), std::string::npos) << error;
  EXPECT_TRUE(m.model.config().low_rank.empty()) << "nothing was replaced";
}

TEST(Compression, TargetsAreGlobsAndOneThatMatchesNothingIsAnError) {
  const Gpt model(mlagpt::testing::tiny_config(AttentionKind::kMla));
  EXPECT_EQ(mlagpt::trainer::split_targets(" blocks.*.mlp.* , blocks.1.attn.kv_up,"),
            (std::vector<std::string>{"blocks.*.mlp.*", "blocks.1.attn.kv_up"}));
  EXPECT_EQ(mlagpt::trainer::select_targets(model, {"blocks.*.mlp.fc", "blocks.1.attn.kv_up"}),
            (std::vector<std::string>{"blocks.0.mlp.fc", "blocks.1.attn.kv_up", "blocks.1.mlp.fc"}));
  EXPECT_EQ(mlagpt::trainer::select_targets(model, {"blocks.*.mlp.*"}).size(), 6U);
  const std::string error = error_of([&] { mlagpt::trainer::select_targets(model, {"blocks.*.attn.k_proj"}); });
  EXPECT_NE(error.find("compress.targets: 'blocks.*.attn.k_proj' matches no projection"), std::string::npos) << error;
  EXPECT_NE(error.find("blocks.0.attn.kv_up"), std::string::npos) << error;
}

TEST(CompressConfig, RulesAreCheckedNamingTheFields) {
  const auto resolve = [](std::vector<std::string> overrides) {
    overrides.push_back("--data.dir=unused");
    return error_of([&] { mlagpt::trainer::read_train_config({}, overrides); });
  };
  EXPECT_EQ(resolve({"--compress.every=5", "--compress.targets=blocks.*.mlp.*", "--compress.rank=8"}), "no error");
  EXPECT_EQ(resolve({"--compress.every=5", "--compress.svd_rank=8"}), "no error");
  EXPECT_NE(resolve({"--compress.every=5", "--compress.targets=x", "--compress.rank=8", "--compress.energy=0.9"})
                .find("exactly one rank rule"),
            std::string::npos);
  EXPECT_NE(resolve({"--compress.every=5", "--compress.targets=x"}).find("exactly one rank rule"), std::string::npos);
  EXPECT_NE(resolve({"--compress.every=5", "--compress.rank=8"}).find("compress.targets is empty"), std::string::npos);
  EXPECT_NE(resolve({"--compress.targets=x", "--compress.rank=8"}).find("compress.every is 0"), std::string::npos);
  EXPECT_NE(resolve({"--compress.every=5", "--compress.svd_rank=8", "--compress.targets=x"}).find("svd_rank"),
            std::string::npos);
  EXPECT_NE(resolve({"--compress.every=5", "--compress.targets=x", "--compress.energy=1.5"}).find("compress.energy"),
            std::string::npos);
  EXPECT_NE(resolve({"--compress.every=5", "--compress.targets=x", "--compress.rank=2", "--compress.mode=prune"})
                .find("compress.mode"),
            std::string::npos);
  mlagpt::trainer::CompressConfig schedule{.every = 3, .start_step = 4};
  EXPECT_FALSE(schedule.due(3));
  EXPECT_TRUE(schedule.due(4));
  EXPECT_FALSE(schedule.due(5));
  EXPECT_TRUE(schedule.due(7));
  EXPECT_TRUE((mlagpt::trainer::CompressConfig{.every = 3}.due(3)));  // start_step 0 = every
  EXPECT_EQ((mlagpt::trainer::CompressConfig{.svd_rank = 4}.target_globs(AttentionKind::kMla)), "blocks.*.attn.kv_up");
  EXPECT_EQ((mlagpt::trainer::CompressConfig{.svd_rank = 4}.target_globs(AttentionKind::kGqa)),
            "blocks.*.attn.k_proj,blocks.*.attn.v_proj");
}

// The AdamW state across a pass, with and without ZeRO-1 (one rank: the same slices either way).
TEST(CompressionInTheTrainer, OtherMomentsAndTheStepCountAreKeptAndTheFactorsStartAtZero) {
  const mlagpt::testing::TempDir dir;
  mlagpt::testing::prepare_small_byte_dataset(dir.path());
  const auto config = mlagpt::trainer::read_train_config(
      {}, {"--run.out_dir=" + (dir / "run").string(), "--run.device=cpu", "--run.threads=1", "--run.max_steps=3",
           "--run.log_every=100", "--data.dir=" + (dir / "data").string(), "--data.batch_size=4", "--data.seq_len=32",
           "--model.block_size=32", "--model.n_layer=2", "--model.n_embd=32", "--model.n_head=4",
           "--model.kv_lora_rank=16", "--model.qk_nope_head_dim=8", "--model.qk_rope_head_dim=4",
           "--model.v_head_dim=8", "--optim.lr=3e-3", "--schedule.warmup_steps=1", "--eval.every=0"});
  mlagpt::trainer::Trainer trainer(config, mlagpt::testing::runtime());
  ASSERT_EQ(trainer.train(""), 0);
  const auto moments = [&trainer] {
    std::map<std::string, std::pair<at::Tensor, at::Tensor>> by_name;
    auto& optimizer = trainer.optimizer();
    for (const auto& slice : optimizer.held_slices()) {
      by_name[optimizer.layout().params[static_cast<size_t>(slice.param)].name] = {slice.exp_avg.clone(),
                                                                                   slice.exp_avg_sq.clone()};
    }
    return by_name;
  };
  const auto before = moments();
  const int64_t steps = trainer.optimizer().step_count();
  ASSERT_EQ(steps, 3);
  mlagpt::trainer::CompressConfig compress{.every = 1, .targets = "blocks.*.mlp.fc", .rank = 6};
  const auto report = trainer.compress(compress);
  EXPECT_EQ(report.layers.size(), 2U);
  EXPECT_EQ(trainer.config().model.low_rank, "blocks.0.mlp.fc=6,blocks.1.mlp.fc=6");
  EXPECT_EQ(trainer.optimizer().step_count(), steps);
  const auto after = moments();
  for (const auto& [name, state] : before) {
    if (name.find("mlp.fc.") != std::string::npos) {
      EXPECT_FALSE(after.contains(name)) << name << " was replaced by factors";
      continue;
    }
    ASSERT_TRUE(after.contains(name)) << name;
    EXPECT_TRUE(after.at(name).first.equal(state.first)) << name;
    EXPECT_TRUE(after.at(name).second.equal(state.second)) << name;
    EXPECT_GT(state.second.abs().max().item<double>(), 0.0) << name << ": a moment that training has set";
  }
  for (const std::string factor : {"blocks.0.mlp.fc.weight_a", "blocks.1.mlp.fc.weight_b"}) {
    ASSERT_TRUE(after.contains(factor)) << factor;
    EXPECT_EQ(after.at(factor).first.abs().max().item<double>(), 0.0) << factor;
    EXPECT_EQ(after.at(factor).second.abs().max().item<double>(), 0.0) << factor;
  }
  // svd_rank: the key/value up-projection weights (MLA's kv_up) at that rank.
  const auto svd = trainer.compress({.every = 1, .svd_rank = 4});
  ASSERT_EQ(svd.layers.size(), 2U);
  EXPECT_EQ(svd.layers[0].path, "blocks.0.attn.kv_up");
  EXPECT_EQ(svd.layers[1].path, "blocks.1.attn.kv_up");
  EXPECT_EQ(svd.layers[1].rank, 4);
  EXPECT_EQ(trainer.config().model.low_rank,
            "blocks.0.attn.kv_up=4,blocks.0.mlp.fc=6,blocks.1.attn.kv_up=4,blocks.1.mlp.fc=6");
}
