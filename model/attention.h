// Attention layers. The variants differ only in their projections and in what they cache; the attention itself is
// causal_attention() in attention_core.h for all of them.
//
// StandardAttention covers MHA (Hkv = H), GQA (1 < Hkv < H) and MQA (Hkv = 1): q/k/v/o projections, RoPE on q and
// k per head (positions = rope), K/V cached at Hkv heads. LatentAttention is DeepSeek-V2's MLA (docs/mla.md):
// optional query compression, a normalized KV latent and one shared decoupled RoPE key, with naive or absorbed
// decoding. Every projection is a Projection, so compression can swap in a LowRankLinear.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <map>
#include <memory>
#include <string>

#include "model/kv_cache.h"
#include "model/model_config.h"
#include "model/norm.h"
#include "model/projection.h"

namespace mlagpt::model {

class Attention : public torch::nn::Module {
 public:
  // x: [B, T, d] at positions start_pos .. start_pos + T - 1 -> [B, T, d]. With a cache, this call's keys are
  // written to it at those positions and the queries attend to positions [0, start_pos + T).
  virtual at::Tensor forward(const at::Tensor& x, int64_t start_pos, LayerCache* cache, MlaDecodeMode mode) = 0;
  virtual std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t max_len,
                                                 const at::TensorOptions& options) const = 0;
  // Replaces the named projection (e.g. "o_proj") with another of the same shape; for compression.
  void replace_projection(const std::string& name, std::shared_ptr<Projection> projection);
  std::shared_ptr<Projection> projection(const std::string& name) const;

 protected:
  explicit Attention(const ModelConfig& config) : config_(config) {}
  std::shared_ptr<Projection> add_projection(const std::string& name, int64_t in, int64_t out);
  const ModelConfig config_;

 private:
  std::map<std::string, std::shared_ptr<Projection>, std::less<>> projections_;
};

class StandardAttention final : public Attention {
 public:
  explicit StandardAttention(const ModelConfig& config);
  at::Tensor forward(const at::Tensor& x, int64_t start_pos, LayerCache* cache, MlaDecodeMode mode) override;
  std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t max_len,
                                         const at::TensorOptions& options) const override;
};

class LatentAttention final : public Attention {
 public:
  explicit LatentAttention(const ModelConfig& config);
  at::Tensor forward(const at::Tensor& x, int64_t start_pos, LayerCache* cache, MlaDecodeMode mode) override;
  std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t max_len,
                                         const at::TensorOptions& options) const override;

 private:
  // Attention over the full (expanded) keys and values: training, prefill, and naive decoding.
  at::Tensor attend_expanded(const at::Tensor& q_nope, const at::Tensor& q_rope, const at::Tensor& latent,
                             const at::Tensor& rope_key);
  // Attention over the latent with the up-projections folded in: absorbed decoding.
  at::Tensor attend_absorbed(const at::Tensor& q_nope, const at::Tensor& q_rope, const at::Tensor& latent,
                             const at::Tensor& rope_key);
  std::shared_ptr<Norm> q_norm_;
  std::shared_ptr<Norm> kv_norm_;
};

std::shared_ptr<Attention> make_attention(const ModelConfig& config);

}  // namespace mlagpt::model
