// Gpt: token embedding, n_layer pre-norm blocks (x += attn(norm1(x)); x += mlp(norm2(x))), final norm, and the
// output head (tied to the token embedding unless tie_embeddings = false).
//
// The model never asks for a rank or a communicator; tensor parallelism reaches it as a TensorParallel group
// (model/tensor_parallel.h; single_device() by default), from which every layer builds its local shapes: attention
// heads, MLP hidden units and the vocabulary are split over the group (Megatron-LM's layout, docs/design.md
// "Tensor parallelism"), parameter_splits() says how each parameter is, and parameter names are the same at every
// TP size.
// Parameter names (checkpoints and tests/reference use them): wte.weight, wpe.weight (learned positions),
// blocks.N.{norm1,attn,norm2,mlp}.*, norm_f.*, lm_head.weight (untied). GPT-2 initialization: N(0, 0.02) for
// weights and embeddings, residual output projections (attn.o_proj, mlp.proj) N(0, 0.02 / sqrt(2 n_layer)),
// zero biases, unit norm weights. A projection that config.low_rank lists is built as W = B A (LowRankLinear):
// A [r, in] ~ N(0, 1 / sqrt(r)) and B [out, r] ~ N(0, std), so that W's entries have the dense layer's std.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <array>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "model/attention.h"
#include "model/kv_cache.h"
#include "model/mlp.h"
#include "model/model_config.h"
#include "model/norm.h"
#include "model/tensor_parallel.h"

namespace mlagpt::model {

// The label of a target position that does not count in the loss.
constexpr int64_t kIgnoreIndex = -1;

class Block final : public torch::nn::Module {
 public:
  Block(const ModelConfig& config, const TensorParallel& group);
  at::Tensor forward(const at::Tensor& x, int64_t start_pos, LayerCache* cache, MlaDecodeMode mode);
  Attention& attention() { return *attn_; }
  Mlp& mlp() { return *mlp_; }

 private:
  std::shared_ptr<Norm> norm1_;
  std::shared_ptr<Attention> attn_;
  std::shared_ptr<Norm> norm2_;
  std::shared_ptr<Mlp> mlp_;
};

class Gpt final : public torch::nn::Module {
 public:
  // `config` is resolved (and so validated, with config.validate_tensor_parallel(group.size())) here. The group
  // must outlive the model.
  explicit Gpt(ModelConfig config, const TensorParallel& group = single_device());

  // idx: [B, T] int64 token ids -> logits [B, T, V / tp]: this rank's slice of the vocabulary (all of it on one
  // device). With a cache, idx continues the cached sequence: positions start at cache->length(), and the cache
  // advances by T.
  at::Tensor forward(const at::Tensor& idx, KvCache* cache = nullptr);

  // The mean cross entropy of the model's prediction of `targets` [B, T] from `idx` [B, T], skipping targets equal
  // to kIgnoreIndex; float32 (float64 for a float64 model). Over a tensor-parallel group the vocabulary-parallel
  // cross entropy (Megatron's): no rank materializes the logits of the whole vocabulary; every rank gets the loss.
  at::Tensor loss(const at::Tensor& idx, const at::Tensor& targets);

  // A cache for `batch` sequences of up to `max_len` (<= block_size) tokens, in `options`' dtype and device.
  KvCache make_cache(int64_t batch, int64_t max_len, const at::TensorOptions& options,
                     MlaDecodeMode mode = MlaDecodeMode::kAbsorbed) const;

  // Re-draws every parameter with the GPT-2 scheme from the current global torch seed.
  void init_weights();

  const ModelConfig& config() const { return config_; }
  const TensorParallel& tensor_parallel() const { return group_; }
  // Every parameter by name: split over the tensor-parallel group along which dimension, or replicated.
  const std::map<std::string, ParameterSplit, std::less<>>& parameter_splits() const { return splits_; }
  Block& block(int64_t i) { return *blocks_[static_cast<size_t>(i)]; }

  // Projections by path, "blocks.0.attn.kv_up" or "blocks.3.mlp.fc": projection_paths() lists every one the blocks
  // hold, block by block. Error naming the path for one the model does not have.
  std::vector<std::string> projection_paths() const;
  std::shared_ptr<Projection> projection(std::string_view path) const;
  TpLayout projection_layout(std::string_view path) const;
  // [out, in] of the whole projection (all tensor-parallel ranks' shards together).
  std::array<int64_t, 2> full_shape(std::string_view path) const;
  // Replaces the projection at `path` (dense or low rank) by a LowRankLinear of `rank` with zero factors of this
  // rank's shapes and the old bias, updates parameter_splits() and records it in config().low_rank; the caller
  // fills the factors. ConfigError naming the path when rank is not in [1, min(out, in)] of the whole projection.
  // The parameters change: an optimizer built over the old ones must be rebuilt.
  std::shared_ptr<LowRankLinear> factorize(const std::string& path, int64_t rank);

 private:
  struct ProjectionSlot {
    Block* block;
    bool attention;    // in attn, else in mlp
    std::string name;  // within it
  };
  ProjectionSlot slot(std::string_view path) const;
  ModelConfig config_;
  const TensorParallel& group_;
  std::map<std::string, ParameterSplit, std::less<>> splits_;
  at::Tensor wte_;
  at::Tensor wpe_;
  std::vector<std::shared_ptr<Block>> blocks_;
  std::shared_ptr<Norm> norm_f_;
  at::Tensor lm_head_;
};

// Mean cross entropy of logits [B, T, V] against targets [B, T], skipping targets equal to kIgnoreIndex.
at::Tensor cross_entropy_loss(const at::Tensor& logits, const at::Tensor& targets);

}  // namespace mlagpt::model
