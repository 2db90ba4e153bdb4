// Multi-head Latent Attention (DeepSeek-V2; docs/mla.md, "Multi-head Latent Attention"). Letters: H heads,
// Dn = qk_nope_head_dim, Dr = qk_rope_head_dim, Dv = v_head_dim, Dc = kv_lora_rank, Dq = q_lora_rank.
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/einsum.h>

#include <cmath>

#include "model/attention.h"
#include "model/attention_core.h"
#include "model/rope.h"

namespace mlagpt::model {

LatentAttention::LatentAttention(const ModelConfig& config, const TensorParallel& group) : Attention(config, group) {
  const int64_t d = config.n_embd;
  const int64_t H = heads_;  // this rank's
  const int64_t q_width = H * (config.qk_nope_head_dim + config.qk_rope_head_dim);
  // The down-projections and the latent norms are whole on every rank (each rank's heads read all of the latent)
  // and only this rank's heads contribute to their gradient here: replicated, gradients summed over the group.
  if (config.q_lora_rank == 0) {
    add_projection("q_proj", d, q_width, TpLayout::kColumn);
  } else {
    add_projection("q_down", d, config.q_lora_rank, TpLayout::kReplicated);
    q_norm_ = register_module("q_norm", std::make_shared<RmsNorm>(config.q_lora_rank, config.norm_eps));
    splits_["q_norm.weight"] = {.sum_gradient = true};
    add_projection("q_up", config.q_lora_rank, q_width, TpLayout::kColumn);
  }
  // One down-projection produces the latent (rows 0..Dc-1) and the shared RoPE key (rows Dc..Dc+Dr-1).
  add_projection("kv_down", d, config.kv_lora_rank + config.qk_rope_head_dim, TpLayout::kReplicated);
  if (config.kv_norm) {
    kv_norm_ = register_module("kv_norm", std::make_shared<RmsNorm>(config.kv_lora_rank, config.norm_eps));
    splits_["kv_norm.weight"] = {.sum_gradient = true};
  }
  // One up-projection viewed as [H, Dn + Dv, Dc]: per head the key (first Dn rows) and the value (last Dv).
  add_projection("kv_up", config.kv_lora_rank, H * (config.qk_nope_head_dim + config.v_head_dim), TpLayout::kColumn);
  add_projection("o_proj", H * config.v_head_dim, d, TpLayout::kRow);
}

at::Tensor LatentAttention::forward(const at::Tensor& input, int64_t start_pos, LayerCache* cache, MlaDecodeMode mode) {
  const int64_t B = input.size(0);
  const int64_t T = input.size(1);
  const int64_t H = heads_;
  const int64_t Dn = config_.qk_nope_head_dim;
  const int64_t Dr = config_.qk_rope_head_dim;
  const int64_t Dc = config_.kv_lora_rank;
  const at::Tensor x = copy_to_tensor_parallel_region(input, group_);
  const at::Tensor q_flat = config_.q_lora_rank == 0
                                ? projection("q_proj")->forward(x)
                                : projection("q_up")->forward(q_norm_->forward(projection("q_down")->forward(x)));
  const at::Tensor q = q_flat.view({B, T, H, Dn + Dr});     // [B, T, H, Dn + Dr]
  const at::Tensor q_nope = q.narrow(-1, 0, Dn);            // [B, T, H, Dn]
  at::Tensor q_rope = q.narrow(-1, Dn, Dr);                 // [B, T, H, Dr]
  const at::Tensor kv = projection("kv_down")->forward(x);  // [B, T, Dc + Dr]
  at::Tensor latent = kv.narrow(-1, 0, Dc);                 // [B, T, Dc]
  if (kv_norm_) {
    latent = kv_norm_->forward(latent);
  }
  at::Tensor rope_key = kv.narrow(-1, Dc, Dr);  // [B, T, Dr], one key shared by all heads
  if (config_.uses_rope() && Dr > 0) {
    q_rope = rope_apply_interleaved(q_rope, start_pos, config_.rope_theta);
    rope_key = rope_apply_interleaved(rope_key, start_pos, config_.rope_theta);
  }
  if (cache != nullptr) {
    auto& layer = static_cast<LatentLayerCache&>(*cache);
    layer.write(start_pos, latent, rope_key);
    latent = layer.latent(start_pos + T);      // [B, S, Dc]
    rope_key = layer.rope_key(start_pos + T);  // [B, S, Dr]
  }
  const at::Tensor o = cache != nullptr && mode == MlaDecodeMode::kAbsorbed
                           ? attend_absorbed(q_nope, q_rope, latent, rope_key)
                           : attend_expanded(q_nope, q_rope, latent, rope_key);  // [B, T, H * Dv]
  const double dropout = is_training() ? config_.dropout : 0.0;
  return at::dropout(row_parallel_forward(*projection("o_proj"), o, group_), dropout, is_training());
}

at::Tensor LatentAttention::attend_expanded(const at::Tensor& q_nope, const at::Tensor& q_rope,
                                            const at::Tensor& latent, const at::Tensor& rope_key) {
  const int64_t B = q_nope.size(0);
  const int64_t T = q_nope.size(1);
  const int64_t S = latent.size(1);
  const int64_t H = heads_;
  const int64_t Dn = config_.qk_nope_head_dim;
  const int64_t Dr = config_.qk_rope_head_dim;
  const int64_t Dv = config_.v_head_dim;
  const at::Tensor kv = projection("kv_up")->forward(latent).view({B, S, H, Dn + Dv});  // [B, S, H, Dn + Dv]
  const at::Tensor k = at::cat({kv.narrow(-1, 0, Dn), rope_key.unsqueeze(2).expand({B, S, H, Dr})}, -1);
  const at::Tensor v = kv.narrow(-1, Dn, Dv);              // [B, S, H, Dv]
  const at::Tensor query = at::cat({q_nope, q_rope}, -1);  // [B, T, H, Dn + Dr]
  const double dropout = is_training() ? config_.dropout : 0.0;
  const at::Tensor o = attend(query.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                              1.0 / std::sqrt(static_cast<double>(Dn + Dr)), dropout);  // [B, H, T, Dv]
  return o.transpose(1, 2).reshape({B, T, H * Dv});
}

at::Tensor LatentAttention::attend_absorbed(const at::Tensor& q_nope, const at::Tensor& q_rope,
                                            const at::Tensor& latent, const at::Tensor& rope_key) {
  const int64_t B = q_nope.size(0);
  const int64_t T = q_nope.size(1);
  const int64_t H = heads_;
  const int64_t Dn = config_.qk_nope_head_dim;
  const int64_t Dr = config_.qk_rope_head_dim;
  const int64_t Dv = config_.v_head_dim;
  const int64_t Dc = config_.kv_lora_rank;
  const auto up = projection("kv_up");
  const at::Tensor w = up->effective_weight().view({H, Dn + Dv, Dc});  // [H, Dn + Dv, Dc]
  const at::Tensor w_key = w.narrow(1, 0, Dn);                         // [H, Dn, Dc]
  const at::Tensor w_value = w.narrow(1, Dn, Dv);                      // [H, Dv, Dc]
  // q_nope . (W_UK c + b_k) = (W_UK^T q_nope) . c + q_nope . b_k; the second term is the same for every key of a
  // query, so the softmax cancels it and the key bias can be dropped here.
  const at::Tensor q_latent = at::einsum("bthn,hnc->bthc", {q_nope, w_key});  // [B, T, H, Dc]
  const at::Tensor query = at::cat({q_latent, q_rope}, -1).transpose(1, 2);   // [B, H, T, Dc + Dr]
  const at::Tensor key = at::cat({latent, rope_key}, -1).unsqueeze(1);        // [B, 1, S, Dc + Dr]
  const at::Tensor o_latent = causal_attention(query, key, latent.unsqueeze(1),
                                               1.0 / std::sqrt(static_cast<double>(Dn + Dr)), 0.0);  // [B, H, T, Dc]
  at::Tensor o = at::einsum("bhtc,hvc->bthv", {o_latent, w_value});                                  // [B, T, H, Dv]
  if (up->bias().defined()) {
    // Attention weights sum to one, so the value bias passes through unchanged.
    o = o + up->bias().view({H, Dn + Dv}).narrow(1, Dn, Dv);
  }
  return o.reshape({B, T, H * Dv});
}

std::unique_ptr<LayerCache> LatentAttention::make_cache(int64_t batch, int64_t max_len,
                                                        const at::TensorOptions& options) const {
  return std::make_unique<LatentLayerCache>(batch, max_len, config_.kv_lora_rank, config_.qk_rope_head_dim, options);
}

}  // namespace mlagpt::model
