// Checkpoints in the layout of docs/design.md ("File formats", "Checkpoint"), format version 3:
//
//   CKPT/step_00001000/rank_<r>.h5     written by data-parallel rank r: its shard of every bucket of the optimizer's
//                                      flat buffers (FlatAdamW::written_slices(), the same in replicated and ZeRO-1
//                                      mode), as 1-D float32 pieces /params/<name>/<begin> and
//                                      /optim/<name>/<begin>/{exp_avg,exp_avg_sq}, where [begin, end) is the range of
//                                      the flattened parameter; rank 0 also writes /rng/cpu (and /rng/cuda on a GPU)
//   CKPT/step_00001000/metadata.json   written last, by rank 0: step, tokens seen, loader position, the mesh, the
//                                      full config, the dataset's tokenizer, the optimizer's step count, and for
//                                      every tensor its global shape, dtype and pieces (file, flat range, dataset,
//                                      SHA-256 of its bytes), which together cover it exactly once
//   CKPT/latest                        the name of the newest complete step directory
//
// Every element is written once, by one rank; no rank writes the whole model. All ranks write at once, each to a
// temporary name, fsynced and renamed; then they agree (every rank's error, gathered) on whether every file was
// written, every rank's piece table is gathered to rank 0, and rank 0 writes metadata.json. A save that fails on any
// rank is an IoError naming the file on every rank (none is left waiting), and leaves no partial files.
//
// A step directory counts only once its metadata.json exists (written to a temporary name, fsynced, renamed, and
// the directory fsynced), so a process killed at any point leaves nothing that `--resume auto` would pick. Saving a
// step whose directory exists without metadata (a crashed attempt) replaces it; a complete one is replaced only once
// the new one is whole. A save that fails leaves every earlier checkpoint and `latest` as they were. After a save of
// step S the newest `keep` complete checkpoints up to S are kept; later steps (from a run resumed further back) stay
// until a save replaces them.
//
// Loading reshards: the pieces say where every flat range is, so a checkpoint loads on any number of data-parallel
// ranks, with or without ZeRO-1, whatever mesh wrote it. Every rank reads the parameters whole (every piece of
// them) and, of the optimizer's moments, only the pieces that overlap the ranges it holds under the current mesh
// (FlatAdamW::held_slices()). A piece is always read whole, even when only part of it is needed, because its
// checksum covers all of it. Loading verifies before it restores: metadata.json must parse, every piece read must be
// in its file with the recorded shape and SHA-256 (RNG states too), the pieces must cover each tensor, and the stored
// model config and tokenizer must match the current ones; only then is anything copied into the parameters, the
// optimizer or the generators, so a bad checkpoint never leaves a half-loaded model. A damaged checkpoint is an
// IoError (unreadable, missing file) or DataError (bytes that do not match their checksum) naming the file; a
// mismatch is a ConfigError listing the differences. The ranks agree on the outcome (their errors, gathered): they
// all restore it, or all throw the worst error any rank met (ConfigError, then IoError, then DataError), naming the
// rank and file. `--resume auto` (resume()) skips a damaged checkpoint with a warning naming it and the reason and
// takes the one before; it never starts from scratch over checkpoints it cannot load.
//
// Older formats still load: version 2 (rank 0 wrote every tensor whole into rank_00000.h5, one optimizer step count
// per parameter) as one piece per tensor; version 1 (no checksums) the same way, unverified, with a warning.
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

// Bytes are those of the HDF5 rank files (metadata.json, a few KiB, is not counted); seconds are wall-clock, from
// the call to its return on this rank.
struct SaveReport {
  std::filesystem::path path;  // the step directory
  double seconds = 0;
  int64_t bytes = 0;            // of this rank's file
  int64_t bytes_all_ranks = 0;  // of all ranks' files
};

struct LoadReport {
  double seconds = 0;
  int64_t bytes = 0;  // of the datasets this rank read
};

class Checkpointer {
 public:
  // `dp` is the data-parallel group, the optimizer's communicator.
  Checkpointer(std::filesystem::path dir, int64_t keep, launch::Communicator& dp);

  // Writes the checkpoint of `state.step`. Collective: every rank of `dp` calls it. Throws IoError naming the file
  // when any rank could not write (on every rank).
  SaveReport save(const TrainingState& state, FlatAdamW& optimizer, const TrainConfig& config,
                  const DatasetIdentity& dataset);

  // "auto": the newest complete checkpoint in the directory (candidates().front()), or nullopt when there is none.
  // A path: that checkpoint, which must be complete (else IoError naming it). Reads no tensors.
  std::optional<std::filesystem::path> find(const std::string& resume) const;

  // The complete checkpoints of the directory in the order `--resume auto` tries them: the one `latest` names, then
  // the others, newest step first. Empty when there are none (or no directory).
  std::vector<std::filesystem::path> candidates() const;

  // Restores the parameters, the optimizer's state (what it holds under the current mesh) and RNG from
  // `checkpoint` and returns the training state, after verifying all of it. Throws ConfigError listing the
  // differences when the checkpoint's model config or tokenizer does not match `config` / `dataset`, IoError or
  // DataError naming the file when the checkpoint is damaged; then nothing has been restored. Collective.
  TrainingState load(const std::filesystem::path& checkpoint, FlatAdamW& optimizer, const TrainConfig& config,
                     const DatasetIdentity& dataset, LoadReport* report = nullptr);

  // `--resume`: "auto" loads the first of candidates() that verifies, warning about each one it skips, and returns
  // nullopt only when there is no complete checkpoint at all; when there are some and none loads it throws IoError
  // listing them and why. A path: load() of that checkpoint (its errors are the caller's). A ConfigError (another
  // model or dataset) is never skipped. Collective. `report` is that of the load that succeeded.
  std::optional<TrainingState> resume(const std::string& resume, FlatAdamW& optimizer, const TrainConfig& config,
                                      const DatasetIdentity& dataset, LoadReport* report = nullptr);

  static bool is_complete(const std::filesystem::path& step_dir);
  // The training config stored in a complete checkpoint (for eval and sample, which take no config file). IoError
  // naming metadata.json when it is unreadable.
  static TrainConfig stored_config(const std::filesystem::path& checkpoint);
  // Only the model's parameters, every piece of them, from all rank files (for eval and sample: one process); the
  // model must have the stored shapes. Verifies the pieces' checksums before it copies any.
  static void load_weights(const std::filesystem::path& checkpoint, model::Gpt& model);
  // Reads metadata.json and every piece of every parameter of `checkpoint` and checks them against their checksums,
  // without a model (for eval and sample to pick a checkpoint that loads); IoError or DataError naming the file
  // otherwise.
  static void verify_weights(const std::filesystem::path& checkpoint);

 private:
  std::filesystem::path dir_;
  int64_t keep_;
  launch::Communicator& comm_;
};

}  // namespace mlagpt::trainer
