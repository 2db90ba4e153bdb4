// Checkpoints in the layout of docs/design.md ("File formats", "Checkpoint"):
//
//   CKPT/step_00001000/rank_00000.h5   this writing rank's tensors: /params/<name>, /optim/<name>/{exp_avg,
//                                      exp_avg_sq} with attribute step, /rng/cpu (and /rng/cuda on a GPU)
//   CKPT/step_00001000/metadata.json   written last: step, tokens seen, loader position, the mesh, the full config,
//                                      the dataset's tokenizer, every optimizer step count, and for every tensor its
//                                      global shape, dtype, which file holds which slice and the SHA-256 of its bytes
//   CKPT/latest                        the name of the newest complete step directory
//
// A step directory counts only once its metadata.json exists (written to a temporary name, fsynced, renamed, and
// the directory fsynced), so a process killed at any point leaves nothing that `--resume auto` would pick. Saving a
// step whose directory exists without metadata (a crashed attempt) replaces it; a complete one is replaced only once
// the new one is whole. A save that fails leaves every earlier checkpoint and `latest` as they were. After a save of
// step S the newest `keep` complete checkpoints up to S are kept; later steps (from a run resumed further back) stay
// until a save replaces them.
//
// Loading verifies before it restores: metadata.json must parse, every tensor must be in its file with the recorded
// shape and SHA-256 (parameters, optimizer moments and RNG states alike), and the stored model config and tokenizer
// must match the current ones; only then is anything copied into the model, optimizer or generators, so a bad
// checkpoint never leaves a half-loaded model. A damaged checkpoint is an IoError (unreadable) or DataError (bytes
// that do not match their checksum) naming the file; a mismatch is a ConfigError listing the differences.
// `--resume auto` (resume()) skips a damaged checkpoint with a warning naming it and the reason and takes the one
// before; it never starts from scratch over checkpoints it cannot load.
//
// Data parallel replicas are identical, so rank 0 writes them all (one file); the metadata's slice table is what
// later sharded writers (ZeRO, tensor parallel) fill in per rank. Every rank reads the checkpoint itself, and the
// ranks agree (one all-reduce) on whether it loaded, so they all restore the same one or all fail.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "launch/communicator.h"
#include "model/gpt.h"
#include "trainer/parallel/flat_adamw.h"
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
  std::filesystem::path save(const TrainingState& state, model::Gpt& model, FlatAdamW& optimizer,
                             const TrainConfig& config, const DatasetIdentity& dataset);

  // "auto": the newest complete checkpoint in the directory (candidates().front()), or nullopt when there is none.
  // A path: that checkpoint, which must be complete (else IoError naming it). Reads no tensors.
  std::optional<std::filesystem::path> find(const std::string& resume) const;

  // The complete checkpoints of the directory in the order `--resume auto` tries them: the one `latest` names, then
  // the others, newest step first. Empty when there are none (or no directory).
  std::vector<std::filesystem::path> candidates() const;

  // Restores model, optimizer and RNG from `checkpoint` and returns the training state, after verifying all of it.
  // Throws ConfigError listing the differences when the checkpoint's model config or tokenizer does not match
  // `config` / `dataset`, IoError or DataError naming the file when the checkpoint is damaged; then nothing has been
  // restored. Collective: every rank calls it.
  TrainingState load(const std::filesystem::path& checkpoint, model::Gpt& model, FlatAdamW& optimizer,
                     const TrainConfig& config, const DatasetIdentity& dataset);

  // `--resume`: "auto" loads the first of candidates() that verifies, warning about each one it skips, and returns
  // nullopt only when there is no complete checkpoint at all; when there are some and none loads it throws IoError
  // listing them and why. A path: load() of that checkpoint (its errors are the caller's). A ConfigError (another
  // model or dataset) is never skipped. Collective.
  std::optional<TrainingState> resume(const std::string& resume, model::Gpt& model, FlatAdamW& optimizer,
                                      const TrainConfig& config, const DatasetIdentity& dataset);

  static bool is_complete(const std::filesystem::path& step_dir);
  // The training config stored in a complete checkpoint (for eval and sample, which take no config file). IoError
  // naming metadata.json when it is unreadable.
  static TrainConfig stored_config(const std::filesystem::path& checkpoint);
  // Only the model's parameters (for eval and sample); the model must have the stored shapes. Verifies the
  // parameters' checksums (not the optimizer's, which it does not read) before it copies any.
  static void load_weights(const std::filesystem::path& checkpoint, model::Gpt& model);
  // Reads metadata.json and every parameter of `checkpoint` and checks them against their checksums, without a
  // model (for eval and sample to pick a checkpoint that loads); IoError or DataError naming the file otherwise.
  static void verify_weights(const std::filesystem::path& checkpoint);

 private:
  std::filesystem::path dir_;
  int64_t keep_;
  launch::Communicator& comm_;
};

}  // namespace mlagpt::trainer
