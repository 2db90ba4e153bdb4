// Attention layers. The variants differ only in their projections and in what they cache; the attention itself is
// causal_attention() in attention_core.h for all of them.
//
// StandardAttention covers MHA (Hkv = H), GQA (1 < Hkv < H) and MQA (Hkv = 1): q/k/v/o projections, RoPE on q and
// k per head (positions = rope), K/V cached at Hkv heads. LatentAttention is DeepSeek-V2's MLA (docs/mla.md):
// optional query compression, a normalized KV latent and one shared decoupled RoPE key, with naive or absorbed
// decoding. Every projection is a Projection, so compression can swap in a LowRankLinear.
//
// Over a tensor-parallel group each rank holds H / tp query heads (docs/design.md, "Tensor parallelism"): the
// input passes copy_to_tensor_parallel_region once, the per-head projections are column-parallel, o_proj is
// row-parallel (its output is the one sum of the forward pass). K/V projections are split by heads when tp divides
// Hkv and replicated otherwise (each rank then keeps the KV heads its query heads read); MLA's down-projections
// and latent norms are replicated. Replicated parameters that only part of the heads use on a rank are marked
// sum_gradient in splits(). Dropout of the attention probabilities (this rank's heads) draws inside a
// ShardedRngScope.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/kv_cache.h"
#include "model/model_config.h"
#include "model/norm.h"
#include "model/projection.h"
#include "model/rope.h"
#include "model/tensor_parallel.h"

namespace mlagpt::model {

class Attention : public torch::nn::Module {
 public:
  // x: [B, T, d] at positions start_pos .. start_pos + T - 1 -> [B, T, d]. With a cache, this call's keys are
  // written to it at those positions and the queries attend to positions [0, start_pos + T).
  virtual at::Tensor forward(const at::Tensor& x, int64_t start_pos, LayerCache* cache, MlaDecodeMode mode) = 0;
  virtual std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t max_len,
                                                 const at::TensorOptions& options) const = 0;
  // Replaces the named projection (e.g. "o_proj") with another of the same (this rank's) shape, keeping its
  // tensor-parallel layout; splits() then describes the replacement's parameters (compression).
  void replace_projection(const std::string& name, std::shared_ptr<Projection> projection);
  std::shared_ptr<Projection> projection(const std::string& name) const;
  TpLayout layout(const std::string& name) const;
  std::vector<std::string> projection_names() const;  // in name order
  // This layer's parameters (names relative to it, "q_proj.weight") that are split or need their gradient summed;
  // the others are replicated with the whole gradient on every rank.
  const std::map<std::string, ParameterSplit, std::less<>>& splits() const { return splits_; }

 protected:
  Attention(const ModelConfig& config, const TensorParallel& group)
      : config_(config), group_(group), heads_(config.n_head / group.size()) {}
  // A projection of this rank's shape [out, in] laid out as `layout` over the group.
  std::shared_ptr<Projection> add_projection(const std::string& name, int64_t in, int64_t out, TpLayout layout);
  // Draws attention-probability dropout from the group's sharded generator (the heads differ per rank).
  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale, double dropout);
  const ModelConfig config_;
  const TensorParallel& group_;
  const int64_t heads_;  // query heads on this rank: H / tp
  std::map<std::string, ParameterSplit, std::less<>> splits_;
  std::optional<RotaryTable> rope_;  // positions = rope (and, for MLA, Dr > 0)

 private:
  std::map<std::string, std::shared_ptr<Projection>, std::less<>> projections_;
  std::map<std::string, TpLayout, std::less<>> layouts_;
};

class StandardAttention final : public Attention {
 public:
  StandardAttention(const ModelConfig& config, const TensorParallel& group);
  at::Tensor forward(const at::Tensor& x, int64_t start_pos, LayerCache* cache, MlaDecodeMode mode) override;
  std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t max_len,
                                         const at::TensorOptions& options) const override;

 private:
  // [B, T, kv_heads_projected_, Dh] -> the KV heads this rank's query heads read, [B, T, kv_heads_, Dh].
  at::Tensor local_kv_heads(const at::Tensor& kv) const;
  bool split_kv_;               // tp divides Hkv
  int64_t kv_heads_projected_;  // Hkv / tp when split, Hkv when replicated
  int64_t kv_heads_;            // what attention sees
  int64_t kv_first_ = 0;        // replicated KV: the first KV head read here ...
  at::Tensor kv_index_;         // ... or, when the local query heads do not map onto KV heads evenly, which ones
};

class LatentAttention final : public Attention {
 public:
  LatentAttention(const ModelConfig& config, const TensorParallel& group);
  at::Tensor forward(const at::Tensor& x, int64_t start_pos, LayerCache* cache, MlaDecodeMode mode) override;
  std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t max_len,
                                         const at::TensorOptions& options) const override;

 private:
  // Attention over the full (expanded) keys and values: training, prefill, and naive decoding. q: the queries
  // [B, T, H, Dn + Dr] (nope, then the rotated rope part).
  at::Tensor attend_expanded(const at::Tensor& q, const at::Tensor& latent, const at::Tensor& rope_key);
  // Attention over the cached latent with the up-projections folded in: absorbed decoding. keys: the cache's
  // [B, S, Dc + Dr] rows (latent, rope key).
  at::Tensor attend_absorbed(const at::Tensor& q, const at::Tensor& keys);
  std::shared_ptr<Norm> q_norm_;
  std::shared_ptr<Norm> kv_norm_;
  std::optional<RotaryTable> query_rope_;  // [nope | rope] queries, the nope part unrotated (Dn even)
};

std::shared_ptr<Attention> make_attention(const ModelConfig& config, const TensorParallel& group);

}  // namespace mlagpt::model
