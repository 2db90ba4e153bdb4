// Checkpoints in the layout of docs/design.md ("File formats", "Checkpoint"), format version 4:
//
//   CKPT/step_00001000/rank_<w>.h5     written by world rank w (= dp_rank * tp + tp_rank of the dp x tp mesh): its
//                                      shard of every bucket of the optimizer's flat buffers
//                                      (FlatAdamW::written_slices(), the same in replicated and ZeRO-1 mode) of the
//                                      parameters it writes, as 1-D float32 pieces /params/<name>/<begin> and
//                                      /optim/<name>/<begin>/{exp_avg,exp_avg_sq}, where [begin, end) is the range
//                                      of its tensor-parallel-local parameter, flattened; world rank 0 also writes
//                                      /rng/cpu (and /rng/cuda on a GPU)
//   CKPT/step_00001000/metadata.json   written last, by world rank 0: step, tokens seen, loader position, the mesh
//                                      (dp, tp), the full config, the dataset's tokenizer, the optimizer's step
//                                      count, and for every tensor its full shape, dtype, split (the dimension cut
//                                      into `parts` equal contiguous chunks, or -1 and 1 part: not split) and pieces
//                                      (part, file, flat range within that part, dataset, SHA-256 of its bytes),
//                                      which together cover every part exactly once
//   CKPT/latest                        the name of the newest complete step directory
//
// Every element is written once, by one rank; no rank writes the whole model. A parameter split over the
// tensor-parallel group (ParameterSplit::dim >= 0) is written by every rank, each its chunk (part = tp rank), each
// data-parallel rank its shard of it; a replicated one (bitwise the same on every tp rank, moments included) only by
// the ranks of tp rank 0. All ranks write at once, each to a temporary name, fsynced and renamed; then they agree
// (every world rank's error, gathered over the tp group and then over the dp group) on whether every file was
// written, every rank's piece table is gathered to world rank 0, and it writes metadata.json. A save that fails on
// any rank is an IoError naming the file on every rank (none is left waiting), and leaves no partial files.
//
// A step directory counts only once its metadata.json exists (written to a temporary name, fsynced, renamed, and
// the directory fsynced), so a process killed at any point leaves nothing that `--resume auto` would pick. Saving a
// step whose directory exists without metadata (a crashed attempt) replaces it; a complete one is replaced only once
// the new one is whole. A save that fails leaves every earlier checkpoint and `latest` as they were. After a save of
// step S the newest `keep` complete checkpoints up to S are kept; later steps (from a run resumed further back) stay
// until a save replaces them.
//
// Loading reshards: the split and the pieces say where every element of the full tensor is, so a checkpoint loads
// on any dp' x tp' mesh, with or without ZeRO-1, whatever mesh wrote it, and a parameter split along one dimension
// when saved may be split along another, or replicated, when loaded (and vice versa). Every rank builds its own
// chunk of every parameter (for its tp rank and size, from the current splits; the whole tensor when replicated)
// and, of the optimizer's moments, only the ranges it holds under the current mesh (FlatAdamW::held_slices()),
// reading only the pieces that hold any element of them. A piece is always read whole, even when only part of it
// is needed, because its checksum covers all of it. Loading verifies before it restores: metadata.json must parse,
// the pieces must cover every part of each tensor, every piece read must be in its file with the recorded shape
// and SHA-256 (RNG states too), every tensor's full shape must be the model's, and the stored model config and
// tokenizer must match the current ones; only then is anything copied into the parameters, the optimizer or the
// generators, so a bad checkpoint never leaves a half-loaded model. A damaged checkpoint is an IoError
// (unreadable, missing file, pieces that do not cover a part) or DataError (bytes that do not match their checksum)
// naming the file; a mismatch is a ConfigError listing the differences. All ranks of the world agree on the outcome
// (their errors, gathered as on save): they all restore it, or all throw the worst error any rank met (ConfigError,
// then IoError, then DataError), naming the world rank and file. `--resume auto` (resume()) skips a damaged
// checkpoint with a warning naming it and the reason and takes the one before; it never starts from scratch over
// checkpoints it cannot load.
//
// Older formats still load: version 3 (data-parallel ranks only: every tensor one part) as version 4 with every
// tensor unsplit; version 2 (rank 0 wrote every tensor whole into rank_00000.h5, one optimizer step count per
// parameter) as one piece per tensor; version 1 (no checksums) the same way, unverified, with a warning.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
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

// How each parameter is laid out over the tensor-parallel group, by name (Gpt::parameter_splits()); a name absent
// from it is replicated.
using ParameterSplits = std::map<std::string, model::ParameterSplit, std::less<>>;

struct LoadReport {
  double seconds = 0;
  int64_t bytes = 0;  // of the datasets this rank read
};

class Checkpointer {
 public:
  // `dp` is the data-parallel group, the optimizer's communicator; `tp` the tensor-parallel group (launch/
  // process_mesh.h: this rank is world rank dp.rank() * tp.size() + tp.rank()), `splits` how the parameters are
  // laid out over it. Both groups must outlive the checkpointer.
  Checkpointer(std::filesystem::path dir, int64_t keep, launch::Communicator& dp, launch::Communicator& tp,
               ParameterSplits splits);
  // Without tensor parallelism: a tensor-parallel group of one, every parameter whole.
  Checkpointer(std::filesystem::path dir, int64_t keep, launch::Communicator& dp);

  // Writes the checkpoint of `state.step`. Collective: every rank of the dp x tp mesh calls it. Throws IoError
  // naming the file when any rank could not write (on every rank).
  SaveReport save(const TrainingState& state, FlatAdamW& optimizer, const TrainConfig& config,
                  const DatasetIdentity& dataset);

  // "auto": the newest complete checkpoint in the directory (candidates().front()), or nullopt when there is none.
  // A path: that checkpoint, which must be complete (else IoError naming it). Reads no tensors.
  std::optional<std::filesystem::path> find(const std::string& resume) const;

  // The complete checkpoints of the directory in the order `--resume auto` tries them: the one `latest` names, then
  // the others, newest step first. Empty when there are none (or no directory).
  std::vector<std::filesystem::path> candidates() const;

  // Restores the parameters (this rank's chunks), the optimizer's state (what it holds under the current mesh) and
  // RNG from `checkpoint` and returns the training state, after verifying all of it. Throws ConfigError listing the
  // differences when the checkpoint's model config or tokenizer does not match `config` / `dataset`, or a tensor's
  // full shape is not the model's, IoError or
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
  // Only the model's parameters, whole, from all rank files, whatever mesh wrote them (for eval and sample: one
  // process, a model without tensor parallelism); the model must have the stored full shapes (else ConfigError).
  // Verifies the pieces' checksums before it copies any.
  static void load_weights(const std::filesystem::path& checkpoint, model::Gpt& model);
  // The same into any set of whole parameters, by name.
  static void load_weights(const std::filesystem::path& checkpoint, const std::vector<NamedParameter>& parameters);
  // Reads metadata.json and every piece of every parameter of `checkpoint` and checks them against their checksums,
  // without a model (for eval and sample to pick a checkpoint that loads); IoError or DataError naming the file
  // otherwise.
  static void verify_weights(const std::filesystem::path& checkpoint);

 private:
  std::filesystem::path dir_;
  int64_t keep_;
  std::unique_ptr<launch::Communicator> own_tp_;  // the group of one, when constructed without a tp group
  launch::Communicator& dp_;
  launch::Communicator& tp_;
  ParameterSplits splits_;
};

}  // namespace mlagpt::trainer
