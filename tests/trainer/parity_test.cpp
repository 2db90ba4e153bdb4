// Training parity with PyTorch: tests/reference/train_reference.py trains the reference GPT (float32, CPU) for 20
// AdamW steps with two micro-batches each, clipping and the warmup + cosine schedule; mlagpt's TrainStep, started
// from the same weights on the same batches, must give the same loss curve within 1e-4 relative at every step, and
// close final parameters. The errors reached are printed.
#include <ATen/ops/from_blob.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "data/hdf5_file.h"
#include "support/model_fixtures.h"
#include "support/train_fixture.h"
#include "trainer/train_step.h"

using mlagpt::data::h5::File;
using mlagpt::testing::read_float_tensor;
using mlagpt::testing::read_long_tensor;
using mlagpt::testing::relative_error;

TEST(TrainingParity, LossCurveMatchesPyTorchAdamW) {
  const File file = File::open(std::string(MLAGPT_FIXTURES_DIR) + "/train_reference.h5");
  ASSERT_EQ(file.string_attribute("format"), "mlagpt.train_reference");
  const mlagpt::trainer::TrainConfig config = mlagpt::testing::train_config_of(file);
  mlagpt::model::Gpt model(config.model);
  mlagpt::testing::load_initial_parameters(model, file);
  mlagpt::testing::SingleProcessStep process(model, config);

  const at::Tensor x = read_long_tensor(file, "/batches/x");  // [steps * accum, B, T]
  const at::Tensor y = read_long_tensor(file, "/batches/y");
  const auto losses = file.open_dataset("/losses").read_all<double>();
  const auto grad_norms = file.open_dataset("/grad_norms").read_all<double>();
  const auto lrs = file.open_dataset("/lrs").read_all<double>();
  int64_t micro = 0;
  double worst_loss = 0;
  double worst_norm = 0;
  for (int64_t s = 0; s < config.run.max_steps; ++s) {
    const auto result = mlagpt::trainer::read_step_reports({process.step.run(s, [&] {
                          const int64_t i = micro++;
                          return mlagpt::trainer::MicroBatch{x[i], y[i]};
                        })}).front();
    const auto u = static_cast<size_t>(s);
    EXPECT_NEAR(result.learning_rate, lrs[u], 1e-12 * lrs[u]) << "step " << s;
    const double loss_error = std::abs(result.loss - losses[u]) / std::abs(losses[u]);
    const double norm_error = std::abs(result.grad_norm - grad_norms[u]) / std::abs(grad_norms[u]);
    EXPECT_LE(loss_error, 1e-4) << "step " << s;
    EXPECT_LE(norm_error, 1e-4) << "step " << s;
    worst_loss = std::max(worst_loss, loss_error);
    worst_norm = std::max(worst_norm, norm_error);
  }
  double worst_param = 0;
  for (const auto& item : model.named_parameters()) {
    const double error = relative_error(item.value(), read_float_tensor(file, "/params_final/" + item.key()));
    EXPECT_LE(error, 1e-4) << item.key();
    worst_param = std::max(worst_param, error);
  }
  std::printf("[parity] 20 steps: worst relative error loss %.2e, grad norm %.2e, final parameters %.2e\n", worst_loss,
              worst_norm, worst_param);
}
