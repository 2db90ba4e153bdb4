#include "model/accounting.h"

#include <fmt/format.h>

#include <array>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "launch/error.h"

namespace mlagpt::model {
namespace {

ModelConfig resolved(const ModelConfig& config) {
  ModelConfig copy = config;
  copy.resolve();
  return copy;
}

int64_t linear(int64_t in, int64_t out, bool bias) {
  return in * out + (bias ? out : 0);
}

int64_t norm(NormKind kind, int64_t dim, bool bias) {
  return kind == NormKind::kLayerNorm && bias ? 2 * dim : dim;
}

// q/k/v/o of one standard attention layer with query width q_width and key/value width kv_width.
int64_t standard_attention(int64_t d, int64_t q_width, int64_t kv_width, bool bias) {
  return linear(d, q_width, bias) + 2 * linear(d, kv_width, bias) + linear(q_width, d, bias);
}

int64_t latent_attention(const ModelConfig& c) {
  const int64_t d = c.n_embd;
  const int64_t H = c.n_head;
  const int64_t q_width = H * (c.qk_nope_head_dim + c.qk_rope_head_dim);
  // q_norm and kv_norm are RMSNorms whatever config.norm says (DeepSeek-V2), so they never have a bias.
  const int64_t query = c.q_lora_rank == 0
                            ? linear(d, q_width, c.bias)
                            : linear(d, c.q_lora_rank, c.bias) + c.q_lora_rank + linear(c.q_lora_rank, q_width, c.bias);
  return query + linear(d, c.kv_lora_rank + c.qk_rope_head_dim, c.bias) + (c.kv_norm ? c.kv_lora_rank : 0) +
         linear(c.kv_lora_rank, H * (c.qk_nope_head_dim + c.v_head_dim), c.bias) + linear(H * c.v_head_dim, d, c.bias);
}

int64_t attention_per_layer(const ModelConfig& c) {
  if (c.attention == AttentionKind::kMla) {
    return latent_attention(c);
  }
  return standard_attention(c.n_embd, c.n_head * c.head_dim(), c.n_kv_head * c.head_dim(), c.bias);
}

// The baseline of the *_vs_mha ratios (accounting.h): H heads with H * Dh = d.
int64_t mha_attention_per_layer(const ModelConfig& c) {
  return standard_attention(c.n_embd, c.n_embd, c.n_embd, c.bias);
}
int64_t mha_kv_values_per_token(const ModelConfig& c) {
  return 2 * c.n_embd * c.n_layer;
}

// [out, in] of the projection `name` of a block's attention (`attention`) or MLP, as the model builds it.
std::pair<int64_t, int64_t> projection_shape(const ModelConfig& c, bool attention, std::string_view name) {
  const int64_t d = c.n_embd;
  const int64_t H = c.n_head;
  if (!attention) {
    if (name == "gate" || name == "fc") {
      return {c.mlp_hidden, d};
    }
    if (name == "proj") {
      return {d, c.mlp_hidden};
    }
  } else if (c.attention == AttentionKind::kMla) {
    const int64_t q_width = H * (c.qk_nope_head_dim + c.qk_rope_head_dim);
    if (name == "q_proj") {
      return {q_width, d};
    }
    if (name == "q_down") {
      return {c.q_lora_rank, d};
    }
    if (name == "q_up") {
      return {q_width, c.q_lora_rank};
    }
    if (name == "kv_down") {
      return {c.kv_lora_rank + c.qk_rope_head_dim, d};
    }
    if (name == "kv_up") {
      return {H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank};
    }
    if (name == "o_proj") {
      return {d, H * c.v_head_dim};
    }
  } else {
    if (name == "q_proj") {
      return {H * c.head_dim(), d};
    }
    if (name == "k_proj" || name == "v_proj") {
      return {c.n_kv_head * c.head_dim(), d};
    }
    if (name == "o_proj") {
      return {d, H * c.head_dim()};
    }
  }
  throw ConfigError(fmt::format("model config: low_rank names {} projection '{}', which a {} model does not have",
                                attention ? "an attention" : "an MLP", name, to_string(c.attention)));
}

// What config.low_rank saves: weights of the dense projections minus those of their factors, per block and kind.
struct LowRankSavings {
  std::vector<int64_t> attention;  // per block
  std::vector<int64_t> mlp;
};

LowRankSavings low_rank_savings(const ModelConfig& c) {
  LowRankSavings savings{std::vector<int64_t>(static_cast<size_t>(c.n_layer), 0),
                         std::vector<int64_t>(static_cast<size_t>(c.n_layer), 0)};
  for (const auto& [path, rank] : parse_low_rank(c.low_rank)) {
    // blocks.<i>.<attn|mlp>.<name>
    const size_t first = path.find('.');
    const size_t second = path.find('.', first + 1);
    const size_t third = path.find('.', second + 1);
    const std::string kind = third == std::string::npos ? "" : path.substr(second + 1, third - second - 1);
    int64_t block = -1;
    if (path.rfind("blocks.", 0) == 0 && second != std::string::npos) {
      try {
        block = std::stoll(path.substr(first + 1, second - first - 1));
      } catch (const std::exception&) {
        block = -1;
      }
    }
    if (block < 0 || block >= c.n_layer || (kind != "attn" && kind != "mlp")) {
      throw ConfigError(fmt::format("model config: low_rank names '{}', not blocks.<0..{}>.<attn|mlp>.<projection>",
                                    path, c.n_layer - 1));
    }
    const auto [out, in] = projection_shape(c, kind == "attn", path.substr(third + 1));
    (kind == "attn" ? savings.attention : savings.mlp)[static_cast<size_t>(block)] += out * in - rank * (out + in);
  }
  return savings;
}

void require_context(int64_t context_length) {
  if (context_length < 1) {
    throw ConfigError(fmt::format("context_length must be at least 1, got {}", context_length));
  }
}

// 123456789 -> "123,456,789": parameter counts are compared digit by digit, so keep them exact and readable.
std::string grouped(int64_t value) {
  const std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) {
      out += ',';
    }
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

// 123456789 -> "123.46M": the magnitude at a glance, next to the exact figure.
std::string short_count(double value) {
  constexpr std::array<std::pair<double, const char*>, 4> kUnits{{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "K"}}};
  for (const auto& [scale, suffix] : kUnits) {
    if (value >= scale) {
      return fmt::format("{:.2f}{}", value / scale, suffix);
    }
  }
  return fmt::format("{:.0f}", value);
}

// Memory sizes in binary units, as allocators and nvidia-smi report them.
std::string short_bytes(int64_t bytes) {
  constexpr std::array<std::pair<double, const char*>, 3> kUnits{
      {{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}}};
  for (const auto& [scale, suffix] : kUnits) {
    if (static_cast<double>(bytes) >= scale) {
      return fmt::format("{:.2f} {}", static_cast<double>(bytes) / scale, suffix);
    }
  }
  return fmt::format("{} B", bytes);
}

// One report line: a label (indented under its section unless `indent` is false), a right-aligned figure, a note.
std::string row(std::string_view label, std::string_view figure, std::string_view note = "", bool indent = true) {
  std::string line = fmt::format("{:<24}{:>12}  {}", fmt::format("{}{}", indent ? "  " : "", label), figure, note);
  line.erase(line.find_last_not_of(' ') + 1);
  return line + "\n";
}

// "5.33x smaller" / "1.20x larger" / "" for a ratio against MHA of 1.
std::string size_change(double ratio) {
  if (ratio < 1.0) {
    return fmt::format("{:.2f}x smaller", 1.0 / ratio);
  }
  return ratio > 1.0 ? fmt::format("{:.2f}x larger", ratio) : "";
}

}  // namespace

ParameterCounts count_parameters(const ModelConfig& config) {
  const ModelConfig c = resolved(config);
  const int64_t d = c.n_embd;
  const int64_t L = c.n_layer;
  ParameterCounts counts;
  counts.embedding = c.vocab_size * d + (c.positions == PositionKind::kLearned ? c.block_size * d : 0);
  const LowRankSavings savings = low_rank_savings(c);
  const int64_t up_projections = c.mlp == MlpKind::kSwiglu ? 2 : 1;  // swiglu's gate and fc, or gelu's fc
  const int64_t dense_mlp = up_projections * linear(d, c.mlp_hidden, c.bias) + linear(c.mlp_hidden, d, c.bias);
  for (int64_t i = 0; i < L; ++i) {
    counts.attention += attention_per_layer(c) - savings.attention[static_cast<size_t>(i)];
    counts.mlp += dense_mlp - savings.mlp[static_cast<size_t>(i)];
  }
  counts.attention_per_layer = attention_per_layer(c) - savings.attention[0];
  counts.mlp_per_layer = dense_mlp - savings.mlp[0];
  counts.norms = (2 * L + 1) * norm(c.norm, d, c.bias);
  counts.lm_head = c.tie_embeddings ? 0 : c.vocab_size * d;
  counts.total = counts.embedding + counts.attention + counts.mlp + counts.norms + counts.lm_head;
  return counts;
}

double attention_ratio_vs_mha(const ModelConfig& config) {
  const ModelConfig c = resolved(config);
  return static_cast<double>(attention_per_layer(c)) / static_cast<double>(mha_attention_per_layer(c));
}

int64_t kv_cache_values_per_token(const ModelConfig& config) {
  const ModelConfig c = resolved(config);
  const int64_t per_layer =
      c.attention == AttentionKind::kMla ? c.kv_lora_rank + c.qk_rope_head_dim : 2 * c.n_kv_head * c.head_dim();
  return per_layer * c.n_layer;
}

int64_t kv_cache_bytes(const ModelConfig& config, int64_t context_length, int64_t bytes_per_value) {
  require_context(context_length);
  return kv_cache_values_per_token(config) * context_length * bytes_per_value;
}

double kv_cache_ratio_vs_mha(const ModelConfig& config) {
  const ModelConfig c = resolved(config);
  return static_cast<double>(kv_cache_values_per_token(c)) / static_cast<double>(mha_kv_values_per_token(c));
}

int64_t flops_parameter_count(const ModelConfig& config) {
  const ModelConfig c = resolved(config);
  const ParameterCounts counts = count_parameters(c);
  const int64_t lookup_only = (c.positions == PositionKind::kLearned ? c.block_size * c.n_embd : 0) +
                              (c.tie_embeddings ? 0 : c.vocab_size * c.n_embd);
  return counts.total - lookup_only;
}

double training_flops_per_token(const ModelConfig& config, int64_t context_length) {
  require_context(context_length);
  const ModelConfig c = resolved(config);
  const double N = static_cast<double>(flops_parameter_count(c));
  const double attention = 6.0 * static_cast<double>(c.n_layer * c.n_head * context_length) *
                           static_cast<double>(c.qk_head_dim() + c.v_dim());
  return 6.0 * N + attention;
}

int64_t bytes_per_value(std::string_view dtype) {
  if (dtype == "float32") {
    return 4;
  }
  if (dtype == "bfloat16" || dtype == "float16") {
    return 2;
  }
  throw ConfigError(fmt::format("dtype: '{}' is not one of bfloat16, float16, float32", dtype));
}

std::string format_model_info(const ModelConfig& config, int64_t context_length, std::string_view dtype) {
  require_context(context_length);
  const int64_t value_bytes = bytes_per_value(dtype);
  const ModelConfig c = resolved(config);
  const ParameterCounts p = count_parameters(c);
  std::string out;

  // What the model is, in the config's own words, so a report can be matched to its file.
  out += fmt::format("model: {} attention, {} layers, n_embd {}, {} heads", to_string(c.attention), c.n_layer, c.n_embd,
                     c.n_head);
  if (c.attention == AttentionKind::kGqa) {
    out += fmt::format(" ({} kv heads)", c.n_kv_head);
  }
  out += fmt::format(", vocab {}, block {}\n", c.vocab_size, c.block_size);
  if (c.attention == AttentionKind::kMla) {
    out += fmt::format("  kv_lora_rank {}, q_lora_rank {}, qk_nope_head_dim {}, qk_rope_head_dim {}, v_head_dim {}\n",
                       c.kv_lora_rank, c.q_lora_rank, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim);
  } else {
    out += fmt::format("  head_dim {}\n", c.head_dim());
  }
  out += fmt::format("  {}, {} mlp (hidden {}), {} positions, {}, {} embeddings\n\n", to_string(c.norm),
                     to_string(c.mlp), c.mlp_hidden, to_string(c.positions), c.bias ? "biases" : "no biases",
                     c.tie_embeddings ? "tied" : "untied");

  out += row("parameters", short_count(static_cast<double>(p.total)), grouped(p.total), /*indent=*/false);
  out += row("embedding", short_count(static_cast<double>(p.embedding)),
             c.positions == PositionKind::kLearned ? "wte + wpe" : "wte");
  out += row("attention", short_count(static_cast<double>(p.attention)),
             fmt::format("{} per layer", grouped(p.attention_per_layer)));
  out += row("mlp", short_count(static_cast<double>(p.mlp)), fmt::format("{} per layer", grouped(p.mlp_per_layer)));
  out += row("norms", short_count(static_cast<double>(p.norms)));
  out += row("lm_head", short_count(static_cast<double>(p.lm_head)), c.tie_embeddings ? "tied to wte" : "");
  out += row("attention vs MHA", fmt::format("{:.3f}x", attention_ratio_vs_mha(c)),
             fmt::format("{} vs {} per layer", grouped(p.attention_per_layer), grouped(mha_attention_per_layer(c))));
  out += "\n";

  const int64_t values = kv_cache_values_per_token(c);
  const int64_t mha_values = mha_kv_values_per_token(c);
  const double kv_ratio = kv_cache_ratio_vs_mha(c);
  out += fmt::format("KV cache ({}, {} bytes per value, all {} layers, one sequence)\n", dtype, value_bytes, c.n_layer);
  out += row("per token", fmt::format("{} B", grouped(values * value_bytes)),
             fmt::format("{} values (MHA: {} B)", grouped(values), grouped(mha_values * value_bytes)));
  out += row(fmt::format("{} tokens", context_length), short_bytes(kv_cache_bytes(c, context_length, value_bytes)),
             fmt::format("MHA: {}", short_bytes(mha_values * context_length * value_bytes)));
  out += row("vs MHA", fmt::format("{:.3f}x", kv_ratio), size_change(kv_ratio));
  out += "\n";

  const double flops = training_flops_per_token(c, context_length);
  const double six_n = 6.0 * static_cast<double>(flops_parameter_count(c));
  out += fmt::format("training FLOPs per token at context {}\n", context_length);
  out += row("total", short_count(flops), fmt::format("{:.4e}", flops));
  out += row("6N", short_count(six_n),
             fmt::format("N = {} (all but lookup-only tables)", grouped(flops_parameter_count(c))));
  out += row("attention", short_count(flops - six_n), "6 L H T (Dqk + Dv)");
  return out;
}

}  // namespace mlagpt::model
