// What a run logged to its metrics.jsonl, step by step: the tests that compare one run of `mlagpt train` with
// another (data-parallel, tensor-parallel, resumed) read it through this one reader.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace mlagpt::testing {

struct TrainingCurve {
  std::vector<double> train;                 // loss of every step, in order
  std::vector<double> grad_norm;             // global gradient norm of every step, before clipping
  std::vector<double> lr;                    // learning rate of every step
  std::vector<double> eval;                  // validation loss of every evaluation
  std::vector<nlohmann::json> compressions;  // every compression pass's record, in order
};

// The curve of the run whose out_dir is `run_dir` (empty when it has logged nothing).
inline TrainingCurve read_training_curve(const std::filesystem::path& run_dir) {
  TrainingCurve out;
  std::ifstream in(run_dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto json = nlohmann::json::parse(line);
    if (json["kind"] == "train") {
      out.train.push_back(json["loss"].get<double>());
      out.grad_norm.push_back(json["grad_norm"].get<double>());
      out.lr.push_back(json["lr"].get<double>());
    } else if (json["kind"] == "eval") {
      out.eval.push_back(json["val_loss"].get<double>());
    } else if (json["kind"] == "compression") {
      out.compressions.push_back(json);
    }
  }
  return out;
}

}  // namespace mlagpt::testing
