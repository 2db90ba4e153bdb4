// Which AdamW step is fastest on this machine's CPU (or GPU with --device cuda), over the parameters of a model of
// --layers x --width (MLA, the shapes the trainer uses) (issue 10). Not a CTest test.
//
// Four ways of doing the same update, each timed over --steps steps after a warm-up step, medians reported as a
// ratio against the first:
//   libtorch  torch::optim::AdamW over the separate parameters (what the trainer used before FlatAdamW)
//   foreach   the same update in _foreach ops (PyTorch's foreach=True algorithm: about ten multi-tensor kernels)
//             over the separate parameters
//   flat      FlatAdamW: at::_fused_adamw_ over the flat buffers, one call per weight-decay group (the trainer's)
//   fused     at::_fused_adamw_ over the separate parameters
// Run: build/ci/tests/bench/adamw_bench [--layers 4] [--width 256] [--steps 20] [--threads 2] [--device cpu]
#include <ATen/Parallel.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_addcdiv.h>
#include <ATen/ops/_foreach_addcmul.h>
#include <ATen/ops/_foreach_div.h>
#include <ATen/ops/_foreach_lerp.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_sqrt.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/randn_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>
#include <torch/optim/adamw.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <vector>

#include "bench_models.h"
#include "launch/communicator.h"
#include "model/accounting.h"
#include "model/gpt.h"
#include "trainer/optimizer.h"

namespace {

constexpr double kLr = 1e-3, kBeta1 = 0.9, kBeta2 = 0.95, kEps = 1e-8, kDecay = 0.1;

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

void synchronize(const c10::Device& device) {
  if (device.is_cuda()) {
    (void)at::zeros({1}, at::TensorOptions().device(device)).cpu();  // a copy to the host waits for the stream
  }
}

double time_steps(int steps, const c10::Device& device, const std::function<void()>& step) {
  step();
  synchronize(device);
  std::vector<double> times;
  for (int i = 0; i < steps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    step();
    synchronize(device);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return median(times);
}

// A fresh model's parameters on `device`, each with a random gradient.
std::vector<mlagpt::trainer::NamedParameter> parameters(mlagpt::model::Gpt& model, const c10::Device& device) {
  model.to(device);
  auto named = mlagpt::trainer::adamw_parameters(model);
  for (auto& p : named) {
    p.tensor.mutable_grad() = at::randn_like(p.tensor);
  }
  return named;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"AdamW steps: LibTorch's, _foreach, and _fused_adamw_ over flat buffers or separate tensors"};
  int64_t layers = 4;
  int64_t width = 256;
  int steps = 20;
  int threads = 2;
  std::string device_name = "cpu";
  app.add_option("--layers", layers);
  app.add_option("--width", width);
  app.add_option("--steps", steps);
  app.add_option("--threads", threads);
  app.add_option("--device", device_name);
  CLI11_PARSE(app, argc, argv);
  at::set_num_threads(threads);
  const c10::Device device(device_name);
  const c10::NoGradGuard no_grad;
  const mlagpt::model::ModelConfig config = mlagpt::bench::scaled_mla_config(layers, width, 256);

  std::vector<std::pair<std::string, double>> results;
  {
    mlagpt::model::Gpt model(config);
    auto named = parameters(model, device);
    std::vector<at::Tensor> decay, no_decay;
    for (auto& p : named) {
      (p.decay ? decay : no_decay).push_back(p.tensor);
    }
    const auto options = [](double wd) {
      return std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(kLr).betas({kBeta1, kBeta2}).eps(kEps).weight_decay(wd));
    };
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, options(kDecay));
    groups.emplace_back(no_decay, options(0.0));
    torch::optim::AdamW adamw(groups, *options(kDecay));
    results.emplace_back("libtorch", time_steps(steps, device, [&] { adamw.step(); }));
  }
  {
    mlagpt::model::Gpt model(config);
    auto named = parameters(model, device);
    struct Group {
      std::vector<at::Tensor> params, grads, m, v;
      double decay;
    };
    std::vector<Group> groups(2);
    groups[0].decay = kDecay;
    groups[1].decay = 0.0;
    for (auto& p : named) {
      Group& g = groups[p.decay ? 0 : 1];
      g.params.push_back(p.tensor);
      g.grads.push_back(p.tensor.grad());
      g.m.push_back(at::zeros_like(p.tensor));
      g.v.push_back(at::zeros_like(p.tensor));
    }
    int64_t step = 0;
    results.emplace_back("foreach", time_steps(steps, device, [&] {
                           ++step;
                           const double bc1 = 1 - std::pow(kBeta1, static_cast<double>(step));
                           const double bc2_sqrt = std::sqrt(1 - std::pow(kBeta2, static_cast<double>(step)));
                           for (Group& g : groups) {
                             if (g.decay > 0) {
                               at::_foreach_mul_(g.params, 1 - kLr * g.decay);
                             }
                             at::_foreach_lerp_(g.m, g.grads, 1 - kBeta1);
                             at::_foreach_mul_(g.v, kBeta2);
                             at::_foreach_addcmul_(g.v, g.grads, g.grads, 1 - kBeta2);
                             std::vector<at::Tensor> denom = at::_foreach_sqrt(g.v);
                             at::_foreach_div_(denom, bc2_sqrt);
                             at::_foreach_add_(denom, kEps);
                             at::_foreach_addcdiv_(g.params, g.m, denom, -kLr / bc1);
                           }
                         }));
  }
  {
    mlagpt::model::Gpt model(config);
    auto named = parameters(model, device);
    mlagpt::launch::LocalCommunicator local;
    mlagpt::trainer::FlatAdamW flat(named, mlagpt::trainer::AdamWSettings{.weight_decay = kDecay},
                                    mlagpt::trainer::FlatOptions{}, local);
    const at::Tensor no_inf = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device));
    results.emplace_back("flat", time_steps(steps, device, [&] { flat.step(kLr, std::nullopt, no_inf); }));
  }
  {
    mlagpt::model::Gpt model(config);
    auto named = parameters(model, device);
    std::vector<at::Tensor> params[2], grads[2], m[2], v[2], counts[2];
    const at::Tensor count = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device));
    for (auto& p : named) {
      const int g = p.decay ? 0 : 1;
      params[g].push_back(p.tensor);
      grads[g].push_back(p.tensor.grad());
      m[g].push_back(at::zeros_like(p.tensor));
      v[g].push_back(at::zeros_like(p.tensor));
      counts[g].push_back(count);
    }
    results.emplace_back("fused", time_steps(steps, device, [&] {
                           count.add_(1);
                           for (int g = 0; g < 2; ++g) {
                             at::_fused_adamw_(params[g], grads[g], m[g], v[g], {}, counts[g], kLr, kBeta1, kBeta2,
                                               g == 0 ? kDecay : 0.0, kEps, false, false);
                           }
                         }));
  }
  mlagpt::model::Gpt model(config);
  fmt::print("AdamW step on {} ({} threads), {} parameter tensors, {:.2f} M parameters: median of {} steps\n",
             device.str(), threads, model.parameters().size(),
             static_cast<double>(mlagpt::model::count_parameters(config).total) / 1e6, steps);
  for (const auto& [name, seconds] : results) {
    fmt::print("  {:<9} {:8.2f} ms  ({:.2f}x libtorch's time)\n", name, seconds * 1e3, seconds / results[0].second);
  }
  return 0;
}
