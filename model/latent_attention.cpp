// Multi-head Latent Attention (DeepSeek-V2; docs/mla.md, "Multi-head Latent Attention"). Letters: H heads,
// Dn = qk_nope_head_dim, Dr = qk_rope_head_dim, Dv = v_head_dim, Dc = kv_lora_rank, Dq = q_lora_rank.
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/einsum.h>
#include <ATen/ops/scaled_dot_product_attention.h>

#include <cmath>

#include "model/attention.h"
#include "model/attention_core.h"

namespace mlagpt::model {
namespace {

// Whether attention over the latent (absorbed) costs fewer multiply-adds than over expanded keys and values (naive)
// for T queries over S cached positions, per sequence and head:
//   naive:    S Dc (Dn + Dv) to expand K and V, then T S (Dn + Dr + Dv) for the scores and the weighted values;
//   absorbed: T Dn Dc to fold W_UK into the queries, T S (2 Dc + Dr) over the latent, T Dc Dv to apply W_UV.
// A decoding step (T = 1, S large) is absorbed; a prefill (T = S) is naive, since 2 Dc + Dr >= Dn + Dr + Dv in
// every config that compresses (Dc >= Dn, Dv), so absorbed is never cheaper there.
bool absorbed_is_cheaper(int64_t T, int64_t S, const ModelConfig& c) {
  const int64_t Dn = c.qk_nope_head_dim;
  const int64_t Dr = c.qk_rope_head_dim;
  const int64_t Dv = c.v_head_dim;
  const int64_t Dc = c.kv_lora_rank;
  const int64_t naive = S * Dc * (Dn + Dv) + T * S * (Dn + Dr + Dv);
  const int64_t absorbed = T * Dn * Dc + T * S * (2 * Dc + Dr) + T * Dc * Dv;
  return absorbed < naive;
}

}  // namespace

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
  if (config.uses_rope() && config.qk_rope_head_dim > 0) {
    rope_.emplace(config.qk_rope_head_dim, config.block_size, config.rope_theta);
    if (config.qk_nope_head_dim % 2 == 0) {
      query_rope_.emplace(config.qk_rope_head_dim, config.block_size, config.rope_theta, config.qk_nope_head_dim);
    }
  }
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
  at::Tensor q = q_flat.view({B, T, H, Dn + Dr});           // [B, T, H, Dn + Dr]: nope, rope
  const at::Tensor kv = projection("kv_down")->forward(x);  // [B, T, Dc + Dr]
  at::Tensor latent = kv.narrow(-1, 0, Dc);                 // [B, T, Dc]
  if (kv_norm_) {
    latent = kv_norm_->forward(latent);
  }
  at::Tensor rope_key = kv.narrow(-1, Dc, Dr);  // [B, T, Dr], one key shared by all heads
  if (rope_) {
    // The queries' rope part rotated in place (query_rope_: the nope part unrotated), or, for an odd Dn, split off,
    // rotated and put back.
    q = query_rope_ ? query_rope_->apply(q, start_pos)
                    : at::cat({q.narrow(-1, 0, Dn), rope_->apply(q.narrow(-1, Dn, Dr), start_pos)}, -1);
    rope_key = rope_->apply(rope_key, start_pos);
  }
  at::Tensor o;  // [B, T, H * Dv]
  if (cache != nullptr) {
    auto& layer = static_cast<LatentLayerCache&>(*cache);
    layer.write(start_pos, latent, rope_key);
    const int64_t S = start_pos + T;
    o = mode == MlaDecodeMode::kAbsorbed && absorbed_is_cheaper(T, S, config_)
            ? attend_absorbed(q, layer.keys(S))
            : attend_expanded(q, layer.latent(S), layer.rope_key(S));
  } else {
    o = attend_expanded(q, latent, rope_key);
  }
  const double dropout = is_training() ? config_.dropout : 0.0;
  return at::dropout(row_parallel_forward(*projection("o_proj"), o, group_), dropout, is_training());
}

at::Tensor LatentAttention::attend_expanded(const at::Tensor& query, const at::Tensor& latent,
                                            const at::Tensor& rope_key) {
  const int64_t B = query.size(0);
  const int64_t T = query.size(1);
  const int64_t S = latent.size(1);
  const int64_t H = heads_;
  const int64_t Dn = config_.qk_nope_head_dim;
  const int64_t Dr = config_.qk_rope_head_dim;
  const int64_t Dv = config_.v_head_dim;
  const at::Tensor kv = projection("kv_up")->forward(latent).view({B, S, H, Dn + Dv});  // [B, S, H, Dn + Dv]
  const at::Tensor k = at::cat({kv.narrow(-1, 0, Dn), rope_key.unsqueeze(2).expand({B, S, H, Dr})}, -1);
  const at::Tensor v = kv.narrow(-1, Dn, Dv);  // [B, S, H, Dv]
  const double dropout = is_training() ? config_.dropout : 0.0;
  const at::Tensor o = attend(query.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                              1.0 / std::sqrt(static_cast<double>(Dn + Dr)), dropout);  // [B, H, T, Dv]
  return o.transpose(1, 2).reshape({B, T, H * Dv});
}

at::Tensor LatentAttention::attend_absorbed(const at::Tensor& q, const at::Tensor& keys) {
  const int64_t B = q.size(0);
  const int64_t T = q.size(1);
  const int64_t S = keys.size(1);
  const int64_t H = heads_;
  const int64_t Dn = config_.qk_nope_head_dim;
  const int64_t Dv = config_.v_head_dim;
  const int64_t Dc = config_.kv_lora_rank;
  const at::Tensor q_nope = q.narrow(-1, 0, Dn);                         // [B, T, H, Dn]
  const at::Tensor q_rope = q.narrow(-1, Dn, config_.qk_rope_head_dim);  // [B, T, H, Dr]
  const auto up = projection("kv_up");
  const at::Tensor w = up->effective_weight().view({H, Dn + Dv, Dc});  // [H, Dn + Dv, Dc]
  const at::Tensor w_key = w.narrow(1, 0, Dn);                         // [H, Dn, Dc]
  const at::Tensor w_value = w.narrow(1, Dn, Dv);                      // [H, Dv, Dc]
  // q_nope . (W_UK c + b_k) = (W_UK^T q_nope) . c + q_nope . b_k; the second term is the same for every key of a
  // query, so the softmax cancels it and the key bias can be dropped here.
  const at::Tensor q_latent = at::einsum("bthn,hnc->bthc", {q_nope, w_key});  // [B, T, H, Dc]
  // Every head reads the same keys (the cache's [latent | rope key] rows, in place) and values (their latent part),
  // so the heads are folded into the query positions: one head of H T queries, row h T + t, a matrix product over
  // the cache instead of H of them. A chunk's causal mask is the same for every head.
  const at::Tensor query = at::cat({q_latent, q_rope}, -1).transpose(1, 2).reshape({B, 1, H * T, keys.size(-1)});
  const at::Tensor key = keys.unsqueeze(1);        // [B, 1, S, Dc + Dr]
  const at::Tensor value = key.narrow(-1, 0, Dc);  // [B, 1, S, Dc]
  const double scale = 1.0 / std::sqrt(static_cast<double>(Dn + config_.qk_rope_head_dim));
  at::Tensor o_latent;
  if (T == 1) {
    o_latent = at::scaled_dot_product_attention(query, key, value, {}, 0.0, /*is_causal=*/false, scale);
  } else {
    const at::Tensor mask = chunk_causal_mask(T, S, query.options()).repeat({H, 1});  // row h T + t: query t's
    o_latent = at::scaled_dot_product_attention(query, key, value, mask, 0.0, /*is_causal=*/false, scale);
  }
  o_latent = o_latent.reshape({B, H, T, Dc});                        // [B, H, T, Dc]
  at::Tensor o = at::einsum("bhtc,hvc->bthv", {o_latent, w_value});  // [B, T, H, Dv]
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
