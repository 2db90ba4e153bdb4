// The C++ model against the independent PyTorch reference (tests/reference/): for each named config the fixture
// holds weights, a batch, and the float64 reference's logits, loss and every parameter's gradient, plus a second
// batch that the reference decoded through its KV cache in a fixed chunk schedule (naive, and for MLA absorbed).
// Loaded into mlagpt's Gpt and run in float32 on the CPU, all of them must match to a relative error
// (max |diff| / max |ref| per tensor) of at most 1e-5; the C++ naive and absorbed decoding, run in the same chunks,
// are compared against the reference's decoded logits, not only against each other. The errors reached are printed.
#include <ATen/ops/cat.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include "support/model_fixtures.h"

using mlagpt::data::h5::File;
using mlagpt::model::AttentionKind;
using mlagpt::model::Gpt;
using mlagpt::model::MlaDecodeMode;
using mlagpt::testing::read_float_tensor;
using mlagpt::testing::read_long_tensor;
using mlagpt::testing::relative_error;

namespace {

constexpr double kTolerance = 1e-5;
constexpr int64_t kFixtureVersion = 2;

// Every config make_fixtures.py writes; EveryFixtureIsTested fails on a file not listed here.
const std::vector<std::string> kFixtures{"mha",
                                         "gqa",
                                         "mqa",
                                         "mha_gpt2",
                                         "mla",
                                         "mla_noqlora",
                                         "mla_ropeless",
                                         "mla_distinct",
                                         "mla_distinct_noqlora",
                                         "mla_distinct_bias",
                                         "mla_distinct_theta",
                                         "gqa_distinct"};

std::filesystem::path fixture_path(const std::string& name) {
  return std::filesystem::path(MLAGPT_FIXTURES_DIR) / (name + ".h5");
}

// The fixture's config and parameters in a Gpt; fails the test (empty pointer) if the file and the model disagree
// on any parameter's name or shape.
std::shared_ptr<Gpt> load_model(const File& file) {
  EXPECT_EQ(file.string_attribute("format"), "mlagpt.reference_fixture");
  EXPECT_EQ(file.int_attribute("version"), kFixtureVersion) << file.path() << ": rerun make_fixtures.py";
  const auto config =
      mlagpt::model::model_config_from_json(nlohmann::json::parse(file.string_attribute("config")), file.path());
  auto model = std::make_shared<Gpt>(config);
  const c10::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    const at::Tensor reference = read_float_tensor(file, "/params/" + item.key());
    if (reference.sizes() != item.value().sizes()) {
      ADD_FAILURE() << item.key() << ": fixture shape " << reference.sizes() << ", model shape "
                    << item.value().sizes();
      return nullptr;
    }
    item.value().copy_(reference);
  }
  // Every fixture parameter is one of ours (no extra weights we would silently ignore).
  const hid_t params = H5Gopen2(file.id(), "/params", H5P_DEFAULT);
  EXPECT_GE(params, 0);
  H5G_info_t info{};
  H5Gget_info(params, &info);
  H5Gclose(params);
  EXPECT_EQ(info.nlinks, model->named_parameters().size());
  return model;
}

// Feeds idx [B, S] through a fresh cache in the given chunk sizes and concatenates the logits: [B, S, V].
at::Tensor decode_in_chunks(Gpt& model, const at::Tensor& idx, const at::Tensor& chunks, MlaDecodeMode mode) {
  auto cache = model.make_cache(idx.size(0), idx.size(1), at::TensorOptions().dtype(at::kFloat), mode);
  std::vector<at::Tensor> logits;
  int64_t at = 0;
  for (int64_t i = 0; i < chunks.size(0); ++i) {
    const int64_t n = chunks[i].item<int64_t>();
    logits.push_back(model.forward(idx.narrow(1, at, n), &cache));
    at += n;
  }
  EXPECT_EQ(cache.length(), idx.size(1));
  return at::cat(logits, 1);
}

}  // namespace

class GptReference : public testing::TestWithParam<std::string> {};

TEST_P(GptReference, LogitsLossAndGradientsMatchPyTorch) {
  at::manual_seed(0);
  const File file = File::open(fixture_path(GetParam()));
  const auto model = load_model(file);
  ASSERT_TRUE(model);

  const at::Tensor idx = read_long_tensor(file, "/input/idx");
  const at::Tensor targets = read_long_tensor(file, "/input/targets");
  const at::Tensor logits = model->forward(idx);
  const at::Tensor loss = mlagpt::model::cross_entropy_loss(logits, targets);
  loss.backward();

  const double logits_error = relative_error(logits, read_float_tensor(file, "/output/logits"));
  const double loss_error = relative_error(loss, read_float_tensor(file, "/output/loss"));
  EXPECT_LE(logits_error, kTolerance);
  EXPECT_LE(loss_error, kTolerance);
  double worst_gradient = 0;
  std::string worst_name;
  for (const auto& item : model->named_parameters()) {
    const at::Tensor reference = read_float_tensor(file, "/grads/" + item.key());
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    // Gradients that vanish in exact arithmetic (k_proj.bias: a constant added to every score of a query cancels
    // in the softmax) are compared in absolute terms against the size of the loss.
    const bool vanishing = reference.abs().max().item<double>() < 1e-9;
    const double error =
        vanishing ? item.value().grad().abs().max().item<double>() : relative_error(item.value().grad(), reference);
    EXPECT_LE(error, kTolerance) << item.key() << (vanishing ? " (absolute)" : "");
    if (!vanishing && error > worst_gradient) {
      worst_gradient = error;
      worst_name = item.key();
    }
  }
  std::printf("[reference %s] relative error: logits %.2e, loss %.2e, worst gradient %.2e (%s)\n", GetParam().c_str(),
              logits_error, loss_error, worst_gradient, worst_name.c_str());
}

TEST_P(GptReference, CachedDecodingMatchesPyTorch) {
  const File file = File::open(fixture_path(GetParam()));
  const auto model = load_model(file);
  ASSERT_TRUE(model);
  model->eval();
  const c10::NoGradGuard no_grad;
  const at::Tensor idx = read_long_tensor(file, "/decode/idx");
  const at::Tensor chunks = read_long_tensor(file, "/decode/chunks");
  const at::Tensor naive_reference = read_float_tensor(file, "/decode/logits");
  const double naive = relative_error(decode_in_chunks(*model, idx, chunks, MlaDecodeMode::kNaive), naive_reference);
  EXPECT_LE(naive, kTolerance) << "naive decoding";
  const bool mla = model->config().attention == AttentionKind::kMla;
  ASSERT_EQ(file.exists("/decode/logits_absorbed"), mla);
  if (!mla) {
    std::printf("[reference %s] decoding, relative error: %.2e\n", GetParam().c_str(), naive);
    return;
  }
  const at::Tensor absorbed_logits = decode_in_chunks(*model, idx, chunks, MlaDecodeMode::kAbsorbed);
  const double absorbed = relative_error(absorbed_logits, read_float_tensor(file, "/decode/logits_absorbed"));
  const double absorbed_vs_naive = relative_error(absorbed_logits, naive_reference);
  EXPECT_LE(absorbed, kTolerance) << "absorbed decoding vs the reference's absorbed decoding";
  EXPECT_LE(absorbed_vs_naive, kTolerance) << "absorbed decoding vs the reference's naive decoding";
  std::printf("[reference %s] decoding, relative error: naive %.2e, absorbed %.2e (vs reference naive %.2e)\n",
              GetParam().c_str(), naive, absorbed, absorbed_vs_naive);
}

INSTANTIATE_TEST_SUITE_P(AllVariants, GptReference, testing::ValuesIn(kFixtures));

// A config added to make_fixtures.py but not to kFixtures would never be compared.
TEST(GptReferenceFixtures, EveryFixtureIsTested) {
  size_t found = 0;
  for (const auto& entry : std::filesystem::directory_iterator(MLAGPT_FIXTURES_DIR)) {
    if (entry.path().extension() != ".h5") {
      continue;
    }
    ++found;
    const std::string name = entry.path().stem().string();
    const bool listed = std::find(kFixtures.begin(), kFixtures.end(), name) != kFixtures.end();
    EXPECT_TRUE(listed) << entry.path() << " is not in kFixtures of " << __FILE__ << " (or is a stale file: delete it)";
  }
  EXPECT_EQ(found, kFixtures.size()) << "fixtures in " << MLAGPT_FIXTURES_DIR;
}
