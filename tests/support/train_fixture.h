// A training run written by Python (tests/reference/train_reference.py, tests/bench/torch_train_bench.py) for the
// C++ trainer to repeat: the TrainConfig of its `config` (ModelConfig JSON) and `optim` attributes (OptimConfig and
// ScheduleConfig fields plus `steps`), its initial parameters, and the trainer's step on one process to repeat it with.
#pragma once

#include <c10/core/GradMode.h>
#include <nlohmann/json.hpp>

#include <string>

#include "data/hdf5_file.h"
#include "launch/communicator.h"
#include "model/gpt.h"
#include "support/model_fixtures.h"
#include "trainer/optimizer.h"
#include "trainer/train_config.h"
#include "trainer/train_step.h"

namespace mlagpt::testing {

inline trainer::TrainConfig train_config_of(const data::h5::File& file) {
  const auto optim = nlohmann::json::parse(file.string_attribute("optim"));
  trainer::TrainConfig config;
  config.model = model::model_config_from_json(nlohmann::json::parse(file.string_attribute("config")), file.path());
  config.optim.lr = optim.at("lr");
  config.optim.weight_decay = optim.at("weight_decay");
  config.optim.beta1 = optim.at("beta1");
  config.optim.beta2 = optim.at("beta2");
  config.optim.eps = optim.at("eps");
  config.optim.grad_clip = optim.at("grad_clip");
  config.optim.grad_accum = optim.at("grad_accum");
  config.schedule.warmup_steps = optim.at("warmup_steps");
  config.schedule.decay_steps = optim.at("decay_steps");
  config.schedule.min_lr = optim.at("min_lr");
  config.run.max_steps = optim.at("steps");
  config.run.device = "cpu";
  config.data.dir = "unused";
  return config;
}

// Copies /params_init/<name> into every parameter of `model`.
inline void load_initial_parameters(model::Gpt& model, const data::h5::File& file) {
  const c10::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    item.value().copy_(read_float_tensor(file, "/params_init/" + item.key()));
  }
}

// The training step of one process as `mlagpt train` wires it: FlatAdamW over the model's parameters, the GradReducer
// (overlapped with backward), TrainStep. The model must stay where it is (its device) from here on.
struct SingleProcessStep {
  SingleProcessStep(model::Gpt& model, const trainer::TrainConfig& config)
      : optimizer(trainer::adamw_parameters(model), trainer::adamw_settings(config.optim), trainer::FlatOptions{},
                  local),
        reducer(optimizer, /*overlap=*/true),
        step(model, optimizer, reducer, config, local) {}
  launch::LocalCommunicator local;
  trainer::FlatAdamW optimizer;
  trainer::GradReducer reducer;
  trainer::TrainStep step;
};

}  // namespace mlagpt::testing
