// Closed-form accounting of a GPT configuration: parameters by component, KV-cache size, and training FLOPs per
// token. These are the numbers attention variants are compared by (docs/mla.md, "Parameter and FLOP accounting";
// DeepSeek-V2 table 1 and the MLA experiment repositories report the same ones), so they are computed from the
// config alone, without building a model; tests/model/accounting_test.cpp checks them against the tensors the model
// actually registers.
//
// Every function takes a ModelConfig and resolves a copy first (resolve() is idempotent and checks the rules), so
// derived fields (n_kv_head, mlp_hidden) never silently count as 0. Counts are numbers of values, not bytes,
// unless the name says bytes. Nothing here allocates a tensor or touches a device.
//
// The MHA baseline of the ratios is multi-head attention with H heads whose q/k/v width H * Dh equals n_embd (the
// GPT-2 layout), at the same n_layer and bias. That is exactly "the same config with attention = mha" whenever
// n_head divides n_embd, and it stays defined for an MLA config whose n_head does not.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "model/model_config.h"

namespace mlagpt::model {

// Parameters by component, in values. Layout (`[out, in]` weights; Linear biases iff config.bias; LayerNorm has a
// bias iff config.bias, RMSNorm never):
//   embedding: wte [V, d], plus wpe [block_size, d] with learned positions;
//   attention: MHA/GQA/MQA q_proj [H Dh, d], k_proj and v_proj [Hkv Dh, d], o_proj [d, H Dh];
//              MLA q_proj [H (Dn + Dr), d] or (q_down [Dq, d], q_norm [Dq], q_up [H (Dn + Dr), Dq]),
//              kv_down [Dc + Dr, d], kv_norm [Dc] (unless kv_norm = false), kv_up [H (Dn + Dv), Dc], o_proj [d, H Dv];
//   mlp:       gelu fc [hidden, d], proj [d, hidden]; swiglu adds gate [hidden, d];
//   norms:     norm1 and norm2 of every block, and norm_f;
//   lm_head:   [V, d] when the embeddings are untied, else 0 (the head is wte).
// A projection that config.low_rank holds at rank r counts r (out + in) instead of out in (its factors, which are
// also its matmul FLOPs); the *_per_layer figures are block 0's.
struct ParameterCounts {
  int64_t embedding = 0;
  int64_t attention = 0;  // all layers; MLA's q_norm and kv_norm included
  int64_t mlp = 0;        // all layers
  int64_t norms = 0;      // all blocks' norm1 and norm2, and norm_f
  int64_t lm_head = 0;
  int64_t total = 0;
  int64_t attention_per_layer = 0;
  int64_t mlp_per_layer = 0;
};

ParameterCounts count_parameters(const ModelConfig& config);

// Attention parameters of `config` over those of its MHA baseline (see above): 1 for mha, < 1 for gqa and mqa.
double attention_ratio_vs_mha(const ModelConfig& config);

// Values every cached token occupies across all layers: 2 Hkv Dh L for mha/gqa/mqa (Hkv = H, 1 < Hkv < H, 1), and
// (Dc + Dr) L for mla, which caches the normalized latent and the one shared RoPE key (whichever decode mode).
int64_t kv_cache_values_per_token(const ModelConfig& config);

// Bytes of the KV cache of one sequence of `context_length` tokens, at `bytes_per_value` bytes per value; it is
// what Gpt::make_cache(1, context_length, ...) allocates.
int64_t kv_cache_bytes(const ModelConfig& config, int64_t context_length, int64_t bytes_per_value);

// kv_cache_values_per_token over that of the MHA baseline (2 d L): 1 for mha; its inverse is the saving factor.
double kv_cache_ratio_vs_mha(const ModelConfig& config);

// N of the 6N term below: every parameter except the tables that are only looked up, never multiplied: wpe, and
// wte when the head is untied (lm_head is then the matmul). A tied wte is counted once, as the output head.
//
// Why this convention: the output head is a [V, d] matmul on every token and is the largest single matrix of a
// small model, so leaving it out (as a "non-embedding" count does) undercounts GPT-2 small by about 30%; a
// lookup, on the other hand, costs no FLOPs. Norm weights and biases are kept rather than carved out: they are
// under 0.1% of N, and "all parameters but the lookup tables" is a number anyone can reproduce from a parameter
// listing. For a tied model it is nanoGPT's get_num_params() (which subtracts only wpe).
int64_t flops_parameter_count(const ModelConfig& config);

// Training (forward + backward) FLOPs per token at `context_length` tokens of context, PaLM appendix B's
// 6N + 12 L H Dh T generalized to unequal q.k and v widths as docs/mla.md ("Parameter and FLOP accounting")
// writes it: 6N + 6 L H T (Dqk + Dv), with N = flops_parameter_count, Dqk = config.qk_head_dim() and
// Dv = config.v_dim(). For mha that is 6N + 12 L d T; gqa and mqa share K and V between heads but still compute H
// score and value products, so their attention term equals mha's. Like PaLM and nanoGPT, the term counts the full
// T x T score matrix, not the causal half; MFU computed with it is comparable with theirs.
double training_flops_per_token(const ModelConfig& config, int64_t context_length);

// 4 for "float32", 2 for "bfloat16" and "float16"; throws ConfigError naming the text and the accepted names.
int64_t bytes_per_value(std::string_view dtype);

// A human-readable report of all of the above (several lines, ending in a newline): parameters by component,
// attention parameters vs MHA, KV-cache per token and for `context_length` tokens in `dtype` with the saving vs
// MHA, and training FLOPs per token. Throws ConfigError for a bad dtype or a context_length < 1.
std::string format_model_info(const ModelConfig& config, int64_t context_length, std::string_view dtype);

}  // namespace mlagpt::model
