// mlagpt's half of torch_train_bench.py: trains the model of a bench fixture (written by that script: config,
// optimizer settings, initial parameters, micro-batches) with the trainer's own step (TrainStep over FlatAdamW and
// the GradReducer, as `mlagpt train` runs it on one process) and prints one JSON line with every step's wall time
// and loss. The PyTorch reference trains the same fixture in the same script, so the two are timed on the same
// weights, batches, dtype and thread count.
//
//   train_step_bench --fixture FILE [--threads N] [--device cpu|cuda] [--dtype float32|bfloat16]
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <exception>

#include "data/hdf5_file.h"
#include "launch/error.h"
#include "launch/host_memory.h"
#include "support/model_fixtures.h"
#include "support/train_fixture.h"
#include "trainer/train_step.h"

namespace {

using mlagpt::data::h5::File;

int run(const std::string& path, int threads, const std::string& device_name, const std::string& dtype) {
  const File file = File::open(path);
  if (file.string_attribute("format") != "mlagpt.train_bench") {
    throw mlagpt::Error(fmt::format("{}: not a bench fixture (format '{}')", path, file.string_attribute("format")));
  }
  at::set_num_threads(threads);
  mlagpt::trainer::TrainConfig config = mlagpt::testing::train_config_of(file);
  config.run.device = device_name;
  config.run.dtype = dtype;
  const c10::Device device(device_name);
  mlagpt::model::Gpt model(config.model);
  mlagpt::testing::load_initial_parameters(model, file);
  model.to(device);
  mlagpt::testing::SingleProcessStep process(model, config);

  const at::Tensor x = mlagpt::testing::read_long_tensor(file, "/batches/x").to(device);  // [steps * accum, B, T]
  const at::Tensor y = mlagpt::testing::read_long_tensor(file, "/batches/y").to(device);
  int64_t micro = 0;
  nlohmann::json seconds = nlohmann::json::array();
  nlohmann::json losses = nlohmann::json::array();
  for (int64_t s = 0; s < config.run.max_steps; ++s) {
    const auto start = std::chrono::steady_clock::now();
    const auto report = process.step.run(s, [&] {
      const int64_t i = micro++;
      return mlagpt::trainer::MicroBatch{x[i], y[i]};
    });
    // The host read ends the step (on a GPU it waits for the device); the trainer reads once per logged step.
    const auto result = mlagpt::trainer::read_step_reports({report}).front();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    losses.push_back(result.loss);
  }
  const nlohmann::json line = {{"impl", "mlagpt"}, {"threads", threads}, {"step_seconds", seconds}, {"losses", losses}};
  std::printf("%s\n", line.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlagpt's training step on a torch_train_bench.py fixture"};
  std::string fixture;
  int threads = 1;
  std::string device = "cpu";
  std::string dtype = "float32";
  app.add_option("--fixture", fixture, "bench fixture (HDF5) written by torch_train_bench.py")->required();
  app.add_option("--threads", threads, "intra-op threads")->check(CLI::PositiveNumber);
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", dtype, "float32 or bfloat16 (autocast)")->check(CLI::IsMember({"float32", "bfloat16"}));
  CLI11_PARSE(app, argc, argv);
  mlagpt::launch::keep_freed_host_memory();  // as mlagpt does
  try {
    return run(fixture, threads, device, dtype);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "train_step_bench: %s\n", error.what());
    return 1;
  }
}
