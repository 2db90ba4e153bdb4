// The learning-rate schedule at its endpoints, against the rule in trainer/optimizer.h written out here again:
// step s < W gets lr * (s + 1) / W; W <= s < D gets min_lr + (1 + cos(pi (s - W) / (D - W))) / 2 * (lr - min_lr);
// s >= D gets min_lr. The parity test only walks a few steps inside warmup and decay; these cover the edges a
// run meets once: the first step, the end of the warmup, the step decay_steps and after, W = D and W = 0.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "trainer/optimizer.h"

namespace {

using mlagpt::trainer::learning_rate;

// lr, min_lr, W and D differ from each other and from 1, so no case is right by accident.
constexpr double kPeak = 3e-3;
constexpr double kMin = 2e-4;

mlagpt::trainer::OptimConfig optim() {
  mlagpt::trainer::OptimConfig config;
  config.lr = kPeak;
  return config;
}

mlagpt::trainer::ScheduleConfig schedule(int64_t warmup, int64_t decay) {
  mlagpt::trainer::ScheduleConfig config;
  config.warmup_steps = warmup;
  config.decay_steps = decay;
  config.min_lr = kMin;
  return config;
}

// The header's cosine phase, for W <= s < D.
double cosine(int64_t step, int64_t warmup, int64_t decay) {
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(decay - warmup);
  return kMin + 0.5 * (1.0 + std::cos(std::numbers::pi * progress)) * (kPeak - kMin);
}

}  // namespace

TEST(LearningRate, WarmupStartsAtOneStepsShareAndReachesThePeak) {
  constexpr int64_t kWarmup = 5;
  constexpr int64_t kDecay = 17;
  const auto s = schedule(kWarmup, kDecay);
  EXPECT_DOUBLE_EQ(learning_rate(0, optim(), s, kDecay), kPeak / kWarmup);
  EXPECT_DOUBLE_EQ(learning_rate(2, optim(), s, kDecay), kPeak * 3 / kWarmup);
  EXPECT_DOUBLE_EQ(learning_rate(kWarmup - 1, optim(), s, kDecay), kPeak);
  // The cosine starts where the warmup ended: its first step is still the peak.
  EXPECT_DOUBLE_EQ(learning_rate(kWarmup, optim(), s, kDecay), kPeak);
}

TEST(LearningRate, CosineFallsToMinLrAtDecayStepsAndStaysThere) {
  constexpr int64_t kWarmup = 4;
  constexpr int64_t kDecay = 14;
  const auto s = schedule(kWarmup, kDecay);
  for (int64_t step = kWarmup; step < kDecay; ++step) {
    EXPECT_DOUBLE_EQ(learning_rate(step, optim(), s, kDecay), cosine(step, kWarmup, kDecay)) << "step " << step;
  }
  // Halfway through the decay the rate is halfway between the peak and min_lr.
  EXPECT_DOUBLE_EQ(learning_rate((kWarmup + kDecay) / 2, optim(), s, kDecay), (kPeak + kMin) / 2);
  // The last decay step is still above min_lr; step D is min_lr exactly, and so is every step after it.
  EXPECT_GT(learning_rate(kDecay - 1, optim(), s, kDecay), kMin);
  for (const int64_t step : {kDecay, kDecay + 1, kDecay + 7, int64_t{1000000}}) {
    EXPECT_EQ(learning_rate(step, optim(), s, kDecay), kMin) << "step " << step;
  }
}

TEST(LearningRate, DecayStepsFromTheRunLengthWhenTheScheduleLeavesItZero) {
  // decay_steps = 0 in the config: the caller passes run.max_steps (TrainConfig::decay_steps()).
  constexpr int64_t kWarmup = 3;
  constexpr int64_t kMaxSteps = 11;
  mlagpt::trainer::TrainConfig config;
  config.optim = optim();
  config.schedule = schedule(kWarmup, 0);
  config.run.max_steps = kMaxSteps;
  ASSERT_EQ(config.decay_steps(), kMaxSteps);
  EXPECT_DOUBLE_EQ(learning_rate(kMaxSteps - 2, config.optim, config.schedule, config.decay_steps()),
                   cosine(kMaxSteps - 2, kWarmup, kMaxSteps));
  EXPECT_EQ(learning_rate(kMaxSteps, config.optim, config.schedule, config.decay_steps()), kMin);
}

TEST(LearningRate, WarmupEqualToDecayGoesFromThePeakStraightToMinLr) {
  // No cosine phase at all: D - W = 0 must not be divided by.
  constexpr int64_t kSteps = 6;
  const auto s = schedule(kSteps, kSteps);
  EXPECT_DOUBLE_EQ(learning_rate(0, optim(), s, kSteps), kPeak / kSteps);
  EXPECT_DOUBLE_EQ(learning_rate(kSteps - 1, optim(), s, kSteps), kPeak);
  EXPECT_EQ(learning_rate(kSteps, optim(), s, kSteps), kMin);
  EXPECT_EQ(learning_rate(kSteps + 3, optim(), s, kSteps), kMin);
}

TEST(LearningRate, NoWarmupStartsAtThePeak) {
  constexpr int64_t kDecay = 9;
  const auto s = schedule(0, kDecay);
  EXPECT_DOUBLE_EQ(learning_rate(0, optim(), s, kDecay), kPeak);
  EXPECT_DOUBLE_EQ(learning_rate(1, optim(), s, kDecay), cosine(1, 0, kDecay));
  EXPECT_DOUBLE_EQ(learning_rate(kDecay - 1, optim(), s, kDecay), cosine(kDecay - 1, 0, kDecay));
  EXPECT_EQ(learning_rate(kDecay, optim(), s, kDecay), kMin);
}

TEST(LearningRate, NoWarmupAndNoDecayIsMinLrThroughout) {
  // W = D = 0: a constant rate of min_lr, never a division by zero.
  const auto s = schedule(0, 0);
  for (const int64_t step : {0, 1, 5}) {
    const double lr = learning_rate(step, optim(), s, 0);
    EXPECT_TRUE(std::isfinite(lr));
    EXPECT_EQ(lr, kMin) << "step " << step;
  }
}
