// The training loader and the validation pass: batches x, y of shape [B, T] (int64, y = x shifted by one token)
// cut from windows of T+1 tokens of HDF5 token shards (data/token_shard.h), in the global order of
// data/sample_order.h.
//
// TokenLoader: one global, seeded, epoch-by-epoch shuffled stream of samples, of which data-parallel rank r of R
// takes B per step (global batch G = B x R). Its state is position(), the global sample counter at the start of the
// next step (the same on every rank): a checkpoint stores it, and seek() on any number of ranks with the same G
// continues the same global stream. A background thread assembles the next `prefetch` batches; the tokens come
// from the shards' memory maps (ShardReader::read), never from per-sample HDF5 calls.
//
// Memory and devices: batches are assembled on the host. For a CUDA target they are assembled in pinned memory
// and next() copies them with non_blocking = true on the calling thread's current CUDA stream, so the copy is
// ordered before the kernels that will use it on that stream and overlaps with host work; the pinned block is kept
// from reuse until the copy is done by LibTorch's caching host allocator. For a CPU target there is no copy: the
// tensors next() returns are the ones the thread assembled.
//
// ValidationPass: every window of the validation shards exactly once, in shard order (no shuffle), split over the
// ranks in the same way. Last-batch rule: every rank takes the same number of steps, ceil(M / G); in the last step
// the windows that are left are dealt to the ranks in rank order, so a rank's last batch may have fewer than B rows,
// or none ([0, T]). Nothing is dropped and nothing is repeated, so a loss summed over rows and all-reduced is the
// exact mean over all validation windows for any R, and every rank runs the same number of steps (its collectives
// stay matched).
//
// Errors (thrown when the object is built): an empty shard list, a shard that cannot be opened or is corrupt
// (from ShardReader), a shard shorter than T+1 tokens, shards that disagree on vocab_size, tokenizer or
// tokenizer_sha256, and inconsistent batch/rank/device settings; each names the file(s), field and values.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "data/prefetcher.h"
#include "data/sample_order.h"
#include "data/token_shard.h"

namespace mlagpt::data {

struct LoaderConfig {
  std::vector<std::filesystem::path> shards;
  int64_t batch_size = 0;  // B: samples per rank per step
  int64_t seq_len = 0;     // T
  int rank = 0;            // data-parallel rank r, 0 <= r < world_size
  int world_size = 1;      // data-parallel ranks R (the global batch is B x R)
  uint64_t seed = 0;       // fixes the order of every epoch (unused by ValidationPass)
  int64_t prefetch = 4;    // batches assembled ahead (unused by ValidationPass)
  c10::Device device = c10::Device(c10::kCPU);
};

struct Batch {
  at::Tensor x;  // [B, T] int64, tokens [s, s+T) of each sample's window
  at::Tensor y;  // [B, T] int64, tokens [s+1, s+T+1): the next token of every position of x
};

// The validated shards of one stream, opened and memory-mapped, with the order of their windows.
class ShardSet;

class TokenLoader {
 public:
  // Validates the config and the shards (see the errors above) and starts prefetching at global sample 0.
  explicit TokenLoader(LoaderConfig config);
  ~TokenLoader();
  TokenLoader(const TokenLoader&) = delete;
  TokenLoader& operator=(const TokenLoader&) = delete;

  // This rank's batch of the step that starts at position(), on the configured device; advances position() by G.
  Batch next();
  // The global sample counter at the start of the next step; what a checkpoint stores.
  int64_t position() const;
  // Continues from global sample `global_sample` (>= 0), normally a position() saved earlier.
  void seek(int64_t global_sample);

  // M, the samples of one epoch; the epoch of the next step is position() / M.
  int64_t samples_per_epoch() const;
  int64_t epoch() const { return position() / samples_per_epoch(); }
  const ShardInfo& info() const;
  const LoaderConfig& config() const { return config_; }

 private:
  LoaderConfig config_;
  std::unique_ptr<ShardSet> shards_;
  std::unique_ptr<Prefetcher<Batch>> prefetcher_;  // declared last: its thread uses shards_
};

struct ValidationBatch {
  Batch batch;        // [b, T] each, 0 <= b <= B (b < B only in the last step)
  bool last = false;  // the final step of the pass (the same step on every rank)
};

class ValidationPass {
 public:
  // Validates as TokenLoader does; `seed` and `prefetch` are not used.
  explicit ValidationPass(LoaderConfig config);
  ~ValidationPass();
  ValidationPass(const ValidationPass&) = delete;
  ValidationPass& operator=(const ValidationPass&) = delete;

  // M, the validation windows of all ranks together.
  int64_t num_windows() const;
  // Steps of one pass, ceil(M / G): the same on every rank.
  int64_t num_steps() const;
  // This rank's batch of the next step. Calling it after the last step throws; reset() starts a new pass.
  ValidationBatch next();
  bool done() const { return step_ == num_steps(); }
  void reset() { step_ = 0; }

 private:
  LoaderConfig config_;
  std::unique_ptr<ShardSet> shards_;
  int64_t step_ = 0;
};

}  // namespace mlagpt::data
