// The one attention computation every variant uses: causal scaled-dot-product attention through
// at::scaled_dot_product_attention (flash / memory-efficient kernels on CUDA, the fused CPU kernel otherwise).
//
// Queries are the last T of the S key positions (T = S in training and prefill, T = 1 when decoding with a cache),
// so query i may attend to keys 0 .. S - T + i. Key/value heads are shared by groups of H / Hkv query heads
// (query head h reads kv head h / (H / Hkv)): Hkv = H is MHA, 1 is MQA (and MLA's absorbed decoding, whose single
// "head" is the latent). They reach SDPA at Hkv heads (enable_gqa), never copied to H. On a CPU, training and
// prefill with values narrower than the keys (MLA: Dv < Dn + Dr) pad the values with zero columns to the key width,
// which the fused kernel needs, and drop those columns of the output.
#pragma once

#include <ATen/core/Tensor.h>

namespace mlagpt::model {

// q [B, H, T, Dqk], k [B, Hkv, S, Dqk], v [B, Hkv, S, Dv] -> [B, H, T, Dv].
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            double dropout_p);

// [T, S] bool, true where query i (position S - T + i) may attend to key j: the causal mask of a chunk of T queries
// after S - T cached positions (the bottom-right-aligned lower triangle).
at::Tensor chunk_causal_mask(int64_t T, int64_t S, const at::TensorOptions& options);

}  // namespace mlagpt::model
