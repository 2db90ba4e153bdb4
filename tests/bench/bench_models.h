// The model the training benchmarks time: MLA, `layers` x `width`, the tiny configs' proportions scaled up (4 heads,
// latent and head widths width / 4, a 16-wide RoPE key), vocabulary 320 (the byte tokenizer's, padded).
#pragma once

#include <cstdint>

#include "model/model_config.h"

namespace mlagpt::bench {

inline model::ModelConfig scaled_mla_config(int64_t layers, int64_t width, int64_t block_size) {
  model::ModelConfig config;
  config.attention = model::AttentionKind::kMla;
  config.vocab_size = 320;
  config.block_size = block_size;
  config.n_layer = layers;
  config.n_embd = width;
  config.n_head = 4;
  config.kv_lora_rank = width / 4;
  config.qk_nope_head_dim = width / 4;
  config.qk_rope_head_dim = 16;
  config.v_head_dim = width / 4;
  config.resolve();
  return config;
}

}  // namespace mlagpt::bench
