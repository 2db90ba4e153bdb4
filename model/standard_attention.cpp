// MHA / GQA / MQA: one implementation, Hkv = n_kv_head key/value heads shared by groups of query heads.
#include <ATen/ops/dropout.h>

#include <cmath>

#include "model/attention.h"
#include "model/attention_core.h"
#include "model/rope.h"

namespace mlagpt::model {

StandardAttention::StandardAttention(const ModelConfig& config) : Attention(config) {
  const int64_t d = config.n_embd;
  const int64_t kv_width = config.n_kv_head * config.head_dim();
  add_projection("q_proj", d, config.n_head * config.head_dim());
  add_projection("k_proj", d, kv_width);
  add_projection("v_proj", d, kv_width);
  add_projection("o_proj", config.n_head * config.head_dim(), d);
}

at::Tensor StandardAttention::forward(const at::Tensor& x, int64_t start_pos, LayerCache* cache,
                                      MlaDecodeMode /*mode*/) {
  const int64_t B = x.size(0);
  const int64_t T = x.size(1);
  const int64_t H = config_.n_head;
  const int64_t Hkv = config_.n_kv_head;
  const int64_t Dh = config_.head_dim();
  at::Tensor q = projection("q_proj")->forward(x).view({B, T, H, Dh});    // [B, T, H, Dh]
  at::Tensor k = projection("k_proj")->forward(x).view({B, T, Hkv, Dh});  // [B, T, Hkv, Dh]
  at::Tensor v = projection("v_proj")->forward(x).view({B, T, Hkv, Dh});  // [B, T, Hkv, Dh]
  if (config_.uses_rope()) {
    q = rope_apply_interleaved(q, start_pos, config_.rope_theta);
    k = rope_apply_interleaved(k, start_pos, config_.rope_theta);
  }
  if (cache != nullptr) {
    auto& layer = static_cast<StandardLayerCache&>(*cache);
    layer.write(start_pos, k, v);
    k = layer.keys(start_pos + T);  // [B, S, Hkv, Dh]
    v = layer.values(start_pos + T);
  }
  const double dropout = is_training() ? config_.dropout : 0.0;
  const at::Tensor o = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                        1.0 / std::sqrt(static_cast<double>(Dh)), dropout);  // [B, H, T, Dh]
  const at::Tensor out = projection("o_proj")->forward(o.transpose(1, 2).reshape({B, T, H * Dh}));
  return at::dropout(out, dropout, is_training());
}

std::unique_ptr<LayerCache> StandardAttention::make_cache(int64_t batch, int64_t max_len,
                                                          const at::TensorOptions& options) const {
  return std::make_unique<StandardLayerCache>(batch, max_len, config_.n_kv_head, config_.head_dim(), options);
}

}  // namespace mlagpt::model
