// ModelConfig: every size and choice of the GPT, typed, with defaults resolved and rules checked in validate().
//
// A config is filled from a TOML file (trainer), from the JSON stored in checkpoints and reference fixtures
// (from_json), or in code, every source through the typed assignment of config_value.h. visit_fields() lists every
// field once, by name, so that readers, writers and the comparison of two configs never list them again. Letters
// (model/README.md): d = n_embd, H = n_head, Hkv = n_kv_head, Dh = head_dim, Dq = q_lora_rank, Dc = kv_lora_rank,
// Dn/Dr/Dv = qk_nope/qk_rope/v head dims.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace mlagpt::model {

enum class AttentionKind { kMha, kGqa, kMqa, kMla };
enum class NormKind { kLayerNorm, kRmsNorm };
enum class MlpKind { kGelu, kSwiglu };
enum class PositionKind { kLearned, kRope };

std::string_view to_string(AttentionKind kind);
std::string_view to_string(NormKind kind);
std::string_view to_string(MlpKind kind);
std::string_view to_string(PositionKind kind);
// Each throws ConfigError naming `field`, the value and the accepted values.
void parse_enum(std::string_view field, std::string_view text, AttentionKind& out);
void parse_enum(std::string_view field, std::string_view text, NormKind& out);
void parse_enum(std::string_view field, std::string_view text, MlpKind& out);
void parse_enum(std::string_view field, std::string_view text, PositionKind& out);

struct ModelConfig {
  int64_t vocab_size = 0;  // 0 = not set: the trainer takes the dataset's, rounded up to a multiple of 64
  int64_t block_size = 256;
  int64_t n_layer = 4;
  int64_t n_embd = 128;
  int64_t n_head = 4;
  AttentionKind attention = AttentionKind::kMla;
  int64_t n_kv_head = 0;  // gqa; 0 = n_head. mha/mla resolve to n_head, mqa to 1.
  NormKind norm = NormKind::kRmsNorm;
  double norm_eps = 1e-5;
  MlpKind mlp = MlpKind::kSwiglu;
  int64_t mlp_hidden = 0;  // 0 = 4d (gelu) or 8d/3 rounded up to a multiple of 8 (swiglu)
  PositionKind positions = PositionKind::kRope;
  double rope_theta = 10000.0;
  bool bias = false;
  double dropout = 0.0;
  bool tie_embeddings = true;
  // MLA only (DeepSeek-V2 names); the defaults make the default config (128 wide, 4 heads) a valid MLA model.
  int64_t q_lora_rank = 0;  // 0 = no query compression
  int64_t kv_lora_rank = 64;
  int64_t qk_nope_head_dim = 32;
  int64_t qk_rope_head_dim = 16;
  int64_t v_head_dim = 32;
  // MLA: the RMSNorm of the KV latent (DeepSeek-V2). false: the latent is used as kv_down makes it, which keeps a
  // model converted from MHA (trainer/compression/convert.h) equal to it: a norm of the latent is not linear.
  bool kv_norm = true;
  // Projections held as low-rank factors W = B A (model/projection.h), as "path=rank" pairs separated by commas in
  // name order: "blocks.0.mlp.fc=32,blocks.1.attn.kv_up=16". Written by compression (trainer/compression/), stored
  // in checkpoints, so that resume, eval and sample build the compressed structure; "" = every projection dense.
  std::string low_rank;

  // Fills the 0 = "derived" fields (n_kv_head, mlp_hidden) and checks every rule; throws ConfigError that names
  // the rule and the values. Idempotent. vocab_size may stay 0 (not set) here; Gpt refuses to be built so.
  void resolve();
  // The checks alone, on a resolved config.
  void validate() const;
  // The rules for splitting this (resolved) model over `tp` tensor-parallel ranks: tp divides n_head, the MLP
  // hidden width and vocab_size (once set). ConfigError naming the fields and values otherwise. Every tp is
  // accepted for n_kv_head: KV heads are split when tp divides them and replicated otherwise.
  void validate_tensor_parallel(int64_t tp) const;

  int64_t head_dim() const { return n_embd / n_head; }  // Dh, mha/gqa/mqa
  int64_t qk_head_dim() const;                          // width of q.k per head
  int64_t v_dim() const;                                // width of v per head
  bool uses_rope() const { return positions == PositionKind::kRope; }

  template <typename Visitor>
  void visit_fields(Visitor&& visit) {
    visit("vocab_size", vocab_size);
    visit("block_size", block_size);
    visit("n_layer", n_layer);
    visit("n_embd", n_embd);
    visit("n_head", n_head);
    visit("attention", attention);
    visit("n_kv_head", n_kv_head);
    visit("norm", norm);
    visit("norm_eps", norm_eps);
    visit("mlp", mlp);
    visit("mlp_hidden", mlp_hidden);
    visit("positions", positions);
    visit("rope_theta", rope_theta);
    visit("bias", bias);
    visit("dropout", dropout);
    visit("tie_embeddings", tie_embeddings);
    visit("q_lora_rank", q_lora_rank);
    visit("kv_lora_rank", kv_lora_rank);
    visit("qk_nope_head_dim", qk_nope_head_dim);
    visit("qk_rope_head_dim", qk_rope_head_dim);
    visit("v_head_dim", v_head_dim);
    visit("kv_norm", kv_norm);
    visit("low_rank", low_rank);
  }
  template <typename Visitor>
  void visit_fields(Visitor&& visit) const {
    const_cast<ModelConfig*>(this)->visit_fields(
        [&visit](std::string_view name, const auto& value) { visit(name, value); });
  }
};

// ModelConfig::low_rank as a map, path -> rank, and back. parse_low_rank throws ConfigError naming model.low_rank and
// the entry for a malformed pair, a rank < 1 or a path given twice.
using LowRankMap = std::map<std::string, int64_t, std::less<>>;
LowRankMap parse_low_rank(std::string_view text);
std::string format_low_rank(const LowRankMap& ranks);

// JSON object with every field; enums as their names.
nlohmann::json to_json(const ModelConfig& config);
// Reads the fields present (others keep their defaults) through assign_field(), rejects unknown keys and wrong
// types naming them, then resolves. `source` names the document in messages.
ModelConfig model_config_from_json(const nlohmann::json& json, std::string_view source);

// "n_head: 12 != 16; attention: mla != gqa", or "" when equal. For refusing incompatible checkpoints.
std::string describe_differences(const ModelConfig& a, const ModelConfig& b);

}  // namespace mlagpt::model
