// MHA / GQA / MQA: one implementation, Hkv = n_kv_head key/value heads shared by groups of query heads.
#include <ATen/ops/arange.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/floor_divide.h>

#include <cmath>

#include "model/attention.h"

namespace mlagpt::model {

StandardAttention::StandardAttention(const ModelConfig& config, const TensorParallel& group)
    : Attention(config, group) {
  const int64_t d = config.n_embd;
  const int64_t Dh = config.head_dim();
  const int64_t tp = group.size();
  const int64_t Hkv = config.n_kv_head;
  split_kv_ = Hkv % tp == 0;
  kv_heads_projected_ = split_kv_ ? Hkv / tp : Hkv;
  const TpLayout kv_layout = split_kv_ ? TpLayout::kColumn : TpLayout::kReplicated;
  add_projection("q_proj", d, heads_ * Dh, TpLayout::kColumn);
  add_projection("k_proj", d, kv_heads_projected_ * Dh, kv_layout);
  add_projection("v_proj", d, kv_heads_projected_ * Dh, kv_layout);
  add_projection("o_proj", heads_ * Dh, d, TpLayout::kRow);
  kv_heads_ = kv_heads_projected_;
  if (config.uses_rope()) {
    rope_.emplace(Dh, config.block_size, config.rope_theta);
  }
  if (!split_kv_) {
    // Query head h reads KV head h / g (g = H / Hkv). This rank's heads h0 .. h0 + heads_ - 1 read one KV head
    // when g is a multiple of heads_ (MQA always), and otherwise an uneven run of them, gathered per query head.
    const int64_t g = config.n_head / Hkv;
    const int64_t h0 = group.rank() * heads_;
    kv_first_ = h0 / g;
    if (g % heads_ == 0) {
      kv_heads_ = 1;
    } else {
      kv_index_ = at::floor_divide(at::arange(h0, h0 + heads_, at::kLong), g);  // [heads_]
      kv_heads_ = heads_;
    }
  }
}

at::Tensor StandardAttention::local_kv_heads(const at::Tensor& kv) const {
  if (split_kv_) {
    return kv;
  }
  if (!kv_index_.defined()) {
    return kv.narrow(2, kv_first_, kv_heads_);
  }
  return kv.index_select(2, kv_index_.to(kv.device()));
}

at::Tensor StandardAttention::forward(const at::Tensor& input, int64_t start_pos, LayerCache* cache,
                                      MlaDecodeMode /*mode*/) {
  const int64_t B = input.size(0);
  const int64_t T = input.size(1);
  const int64_t H = heads_;
  const int64_t Hkv = kv_heads_projected_;
  const int64_t Dh = config_.head_dim();
  const at::Tensor x = copy_to_tensor_parallel_region(input, group_);
  at::Tensor q = projection("q_proj")->forward(x).view({B, T, H, Dh});                    // [B, T, H, Dh]
  at::Tensor k = local_kv_heads(projection("k_proj")->forward(x).view({B, T, Hkv, Dh}));  // [B, T, Hk, Dh]
  at::Tensor v = local_kv_heads(projection("v_proj")->forward(x).view({B, T, Hkv, Dh}));  // [B, T, Hk, Dh]
  if (config_.uses_rope()) {
    q = rope_->apply(q, start_pos);
    k = rope_->apply(k, start_pos);
  }
  if (cache != nullptr) {
    auto& layer = static_cast<StandardLayerCache&>(*cache);
    layer.write(start_pos, k, v);
    k = layer.keys(start_pos + T);  // [B, S, Hk, Dh]
    v = layer.values(start_pos + T);
  }
  const double dropout = is_training() ? config_.dropout : 0.0;
  const at::Tensor o = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                              1.0 / std::sqrt(static_cast<double>(Dh)), dropout);  // [B, H, T, Dh]
  const at::Tensor out = row_parallel_forward(*projection("o_proj"), o.transpose(1, 2).reshape({B, T, H * Dh}), group_);
  return at::dropout(out, dropout, is_training());
}

std::unique_ptr<LayerCache> StandardAttention::make_cache(int64_t batch, int64_t max_len,
                                                          const at::TensorOptions& options) const {
  return std::make_unique<StandardLayerCache>(batch, max_len, kv_heads_, config_.head_dim(), options);
}

}  // namespace mlagpt::model
