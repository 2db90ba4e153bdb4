// The C++ model against the independent PyTorch reference (tests/reference/): for each named config the fixture
// holds weights, a batch, and the float64 reference's logits, loss and every parameter's gradient. Loaded into
// mlagpt's Gpt and run in float32 on the CPU, all of them must match to a relative error (max |diff| / max |ref|
// per tensor) of at most 1e-5. The errors reached are printed.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>

#include "support/model_fixtures.h"

using mlagpt::data::h5::File;
using mlagpt::testing::read_float_tensor;
using mlagpt::testing::read_long_tensor;
using mlagpt::testing::relative_error;

namespace {

constexpr double kTolerance = 1e-5;

std::filesystem::path fixture_path(const std::string& name) {
  return std::filesystem::path(MLAGPT_FIXTURES_DIR) / (name + ".h5");
}

}  // namespace

class GptReference : public testing::TestWithParam<std::string> {};

TEST_P(GptReference, LogitsLossAndGradientsMatchPyTorch) {
  at::manual_seed(0);
  const File file = File::open(fixture_path(GetParam()));
  ASSERT_EQ(file.string_attribute("format"), "mlagpt.reference_fixture");
  const auto config =
      mlagpt::model::model_config_from_json(nlohmann::json::parse(file.string_attribute("config")), file.path());
  mlagpt::model::Gpt model(config);
  {
    const c10::NoGradGuard no_grad;
    for (auto& item : model.named_parameters()) {
      const at::Tensor reference = read_float_tensor(file, "/params/" + item.key());
      ASSERT_EQ(reference.sizes(), item.value().sizes()) << item.key();
      item.value().copy_(reference);
    }
  }
  // Every fixture parameter is one of ours (no extra weights we would silently ignore).
  const hid_t params = H5Gopen2(file.id(), "/params", H5P_DEFAULT);
  ASSERT_GE(params, 0);
  H5G_info_t info{};
  H5Gget_info(params, &info);
  H5Gclose(params);
  const size_t fixture_params = info.nlinks;
  EXPECT_EQ(fixture_params, model.named_parameters().size());

  const at::Tensor idx = read_long_tensor(file, "/input/idx");
  const at::Tensor targets = read_long_tensor(file, "/input/targets");
  const at::Tensor logits = model.forward(idx);
  const at::Tensor loss = mlagpt::model::cross_entropy_loss(logits, targets);
  loss.backward();

  const double logits_error = relative_error(logits, read_float_tensor(file, "/output/logits"));
  const double loss_error = relative_error(loss, read_float_tensor(file, "/output/loss"));
  EXPECT_LE(logits_error, kTolerance);
  EXPECT_LE(loss_error, kTolerance);
  double worst_gradient = 0;
  std::string worst_name;
  for (const auto& item : model.named_parameters()) {
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

INSTANTIATE_TEST_SUITE_P(AllVariants, GptReference,
                         testing::Values("mha", "gqa", "mqa", "mha_gpt2", "mla", "mla_noqlora", "mla_ropeless"));
