// Checkpoints in the layout of docs/design.md ("File formats", "Checkpoint"):
//
//   CKPT/step_00001000/rank_00000.h5   this writing rank's tensors: /params/<name>, /optim/<name>/{exp_avg,
//                                      exp_avg_sq} with attribute step, /rng/cpu (and /rng/cuda on a GPU)
//   CKPT/step_00001000/metadata.json   written last: step, tokens seen, loader position, the mesh, the full config,
//                                      the dataset's tokenizer, and for every tensor its global shape, dtype and
//                                      which file holds which slice
//   CKPT/latest                        the name of the newest complete step directory
//
// A step directory counts only once its metadata.json exists (written to a temporary name, fsynced, renamed, and
// the directory fsynced), so a process killed at any point leaves nothing that `--resume auto` would pick and fail
// to load: auto takes `latest` if it is complete, else the newest complete step. Saving a step whose directory
// exists without metadata (a crashed attempt) replaces it; the last `keep` complete checkpoints are kept.
// Loading checks the stored model config and tokenizer against the current ones and refuses a mismatch with the
// list of differences. Data parallel replicas are identical, so rank 0 writes them all (one file); the metadata's
// slice table is what later sharded writers (ZeRO, tensor parallel) fill in per rank.
#pragma once

#include <torch/optim/adamw.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "launch/communicator.h"
#include "model/gpt.h"
#include "trainer/train_config.h"

namespace mlagpt::trainer {

// Where training stands; everything besides tensors that a resumed run needs.
struct TrainingState {
  int64_t step = 0;             // optimizer steps completed
  int64_t tokens_seen = 0;      // global
  int64_t loader_position = 0;  // global sample counter of the next batch
};

// What identifies the data a model was trained on, compared on resume.
struct DatasetIdentity {
  std::string tokenizer;
  std::string tokenizer_sha256;
  int64_t vocab_size = 0;
};

class Checkpointer {
 public:
  Checkpointer(std::filesystem::path dir, int64_t keep, launch::Communicator& comm);

  // Writes the checkpoint of `state.step` and returns its directory. Collective: every rank calls it.
  std::filesystem::path save(const TrainingState& state, model::Gpt& model, torch::optim::AdamW& optimizer,
                             const TrainConfig& config, const DatasetIdentity& dataset);

  // "auto": the newest complete checkpoint in the directory, or nullopt when there is none. A path: that
  // checkpoint, which must be complete (else IoError naming it).
  std::optional<std::filesystem::path> find(const std::string& resume) const;

  // Restores model, optimizer and RNG from `checkpoint` and returns the training state. Throws ConfigError listing
  // the differences when the checkpoint's model config or tokenizer does not match `config` / `dataset`.
  TrainingState load(const std::filesystem::path& checkpoint, model::Gpt& model, torch::optim::AdamW& optimizer,
                     const TrainConfig& config, const DatasetIdentity& dataset);

  static bool is_complete(const std::filesystem::path& step_dir);
  // The training config stored in a complete checkpoint (for eval and sample, which take no config file).
  static TrainConfig stored_config(const std::filesystem::path& checkpoint);
  // Only the model's parameters (for eval and sample); the model must have the stored shapes.
  static void load_weights(const std::filesystem::path& checkpoint, model::Gpt& model);

 private:
  std::filesystem::path dir_;
  int64_t keep_;
  launch::Communicator& comm_;
};

}  // namespace mlagpt::trainer
