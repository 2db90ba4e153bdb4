#include "model/model_config.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <array>
#include <type_traits>
#include <utility>

#include "launch/error.h"
#include "model/config_value.h"

namespace mlagpt::model {
namespace {

template <typename Enum, size_t N>
using EnumNames = std::array<std::pair<Enum, std::string_view>, N>;

constexpr EnumNames<AttentionKind, 4> kAttentionNames{{{AttentionKind::kMha, "mha"},
                                                       {AttentionKind::kGqa, "gqa"},
                                                       {AttentionKind::kMqa, "mqa"},
                                                       {AttentionKind::kMla, "mla"}}};
constexpr EnumNames<NormKind, 2> kNormNames{{{NormKind::kLayerNorm, "layernorm"}, {NormKind::kRmsNorm, "rmsnorm"}}};
constexpr EnumNames<MlpKind, 2> kMlpNames{{{MlpKind::kGelu, "gelu"}, {MlpKind::kSwiglu, "swiglu"}}};
constexpr EnumNames<PositionKind, 2> kPositionNames{
    {{PositionKind::kLearned, "learned"}, {PositionKind::kRope, "rope"}}};

template <typename Enum, size_t N>
std::string_view name_of(const EnumNames<Enum, N>& names, Enum value) {
  for (const auto& [v, name] : names) {
    if (v == value) {
      return name;
    }
  }
  return "?";
}

template <typename Enum, size_t N>
void parse_with(const EnumNames<Enum, N>& names, std::string_view field, std::string_view text, Enum& out) {
  std::string accepted;
  for (const auto& [v, name] : names) {
    if (name == text) {
      out = v;
      return;
    }
    accepted += fmt::format("{}{}", accepted.empty() ? "" : ", ", name);
  }
  throw ConfigError(fmt::format("{}: '{}' is not one of {}", field, text, accepted));
}

void require(bool ok, const std::string& message) {
  if (!ok) {
    throw ConfigError("model config: " + message);
  }
}

}  // namespace

std::string_view to_string(AttentionKind kind) {
  return name_of(kAttentionNames, kind);
}
std::string_view to_string(NormKind kind) {
  return name_of(kNormNames, kind);
}
std::string_view to_string(MlpKind kind) {
  return name_of(kMlpNames, kind);
}
std::string_view to_string(PositionKind kind) {
  return name_of(kPositionNames, kind);
}
void parse_enum(std::string_view f, std::string_view t, AttentionKind& out) {
  parse_with(kAttentionNames, f, t, out);
}
void parse_enum(std::string_view f, std::string_view t, NormKind& out) {
  parse_with(kNormNames, f, t, out);
}
void parse_enum(std::string_view f, std::string_view t, MlpKind& out) {
  parse_with(kMlpNames, f, t, out);
}
void parse_enum(std::string_view f, std::string_view t, PositionKind& out) {
  parse_with(kPositionNames, f, t, out);
}

int64_t ModelConfig::qk_head_dim() const {
  return attention == AttentionKind::kMla ? qk_nope_head_dim + qk_rope_head_dim : head_dim();
}

int64_t ModelConfig::v_dim() const {
  return attention == AttentionKind::kMla ? v_head_dim : head_dim();
}

void ModelConfig::resolve() {
  switch (attention) {
    case AttentionKind::kMha:
    case AttentionKind::kMla: n_kv_head = n_head; break;
    case AttentionKind::kMqa: n_kv_head = 1; break;
    case AttentionKind::kGqa: n_kv_head = n_kv_head == 0 ? n_head : n_kv_head; break;
  }
  if (mlp_hidden == 0) {
    mlp_hidden = mlp == MlpKind::kGelu ? 4 * n_embd : ((8 * n_embd / 3 + 7) / 8) * 8;
  }
  validate();
}

void ModelConfig::validate() const {
  parse_low_rank(low_rank);
  require(vocab_size >= 0, fmt::format("vocab_size must be >= 0 (0 = not set: the dataset's), got {}", vocab_size));
  for (const auto& [name, value] : {std::pair<const char*, int64_t>{"block_size", block_size},
                                    {"n_layer", n_layer},
                                    {"n_embd", n_embd},
                                    {"n_head", n_head},
                                    {"mlp_hidden", mlp_hidden}}) {
    require(value > 0, fmt::format("{} must be positive, got {}", name, value));
  }
  require(norm_eps > 0, fmt::format("norm_eps must be positive, got {}", norm_eps));
  require(dropout >= 0 && dropout < 1, fmt::format("dropout must be in [0, 1), got {}", dropout));
  require(rope_theta > 0, fmt::format("rope_theta must be positive, got {}", rope_theta));
  if (attention != AttentionKind::kMla) {
    require(n_embd % n_head == 0,
            fmt::format("n_embd ({}) must be divisible by n_head ({}) for {}", n_embd, n_head, to_string(attention)));
    require(n_kv_head > 0 && n_head % n_kv_head == 0,
            fmt::format("n_head ({}) must be divisible by n_kv_head ({})", n_head, n_kv_head));
    require(!uses_rope() || head_dim() % 2 == 0,
            fmt::format("RoPE rotates pairs: head_dim = n_embd / n_head = {} / {} = {} must be even", n_embd, n_head,
                        head_dim()));
    return;
  }
  require(kv_lora_rank > 0, fmt::format("mla needs kv_lora_rank > 0, got {}", kv_lora_rank));
  require(q_lora_rank >= 0, fmt::format("q_lora_rank must be >= 0 (0 = no query compression), got {}", q_lora_rank));
  require(qk_nope_head_dim > 0, fmt::format("mla needs qk_nope_head_dim > 0, got {}", qk_nope_head_dim));
  require(v_head_dim > 0, fmt::format("mla needs v_head_dim > 0, got {}", v_head_dim));
  require(qk_rope_head_dim >= 0, fmt::format("qk_rope_head_dim must be >= 0, got {}", qk_rope_head_dim));
  require(qk_rope_head_dim % 2 == 0,
          fmt::format("RoPE rotates pairs: qk_rope_head_dim ({}) must be even", qk_rope_head_dim));
  require(!uses_rope() || qk_rope_head_dim > 0,
          "positions = rope needs qk_rope_head_dim > 0 for mla (a ropeless mla uses positions = learned)");
}

void ModelConfig::validate_tensor_parallel(int64_t tp) const {
  if (tp < 1) {
    throw ConfigError(fmt::format("parallel.tp must be >= 1, got {}", tp));
  }
  const auto divides = [tp](const char* field, int64_t value, const char* what) {
    if (value % tp != 0) {
      throw ConfigError(
          fmt::format("parallel.tp = {} does not divide model.{} = {}: {} are split over the {} "
                      "tensor-parallel ranks",
                      tp, field, value, what, tp));
    }
  };
  divides("n_head", n_head, "attention heads");
  divides("mlp_hidden", mlp_hidden, "the MLP's hidden units");
  if (vocab_size > 0) {
    divides("vocab_size", vocab_size, "the embedding's and output head's vocabulary rows (after padding)");
  }
}

nlohmann::json to_json(const ModelConfig& config) {
  nlohmann::json json = nlohmann::json::object();
  config.visit_fields([&json](std::string_view name, const auto& value) {
    using T = std::decay_t<decltype(value)>;
    if constexpr (std::is_enum_v<T>) {
      json[std::string(name)] = std::string(to_string(value));
    } else {
      json[std::string(name)] = value;
    }
  });
  return json;
}

ModelConfig model_config_from_json(const nlohmann::json& json, std::string_view source) {
  if (!json.is_object()) {
    throw ConfigError(fmt::format("{}: the model config must be a JSON object", source));
  }
  // The same typed assignment as TOML files and command-line overrides (config_value.h).
  ModelConfig config;
  for (const auto& [key, value] : json.items()) {
    const std::string where = fmt::format("{}: {}", source, key);
    apply_value(ConfigValue{"model", key, config_scalar_from_json(value, where), where}, config);
  }
  config.resolve();
  return config;
}

LowRankMap parse_low_rank(std::string_view text) {
  LowRankMap ranks;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = std::min(text.find(',', start), text.size());
    const std::string_view entry = text.substr(start, end - start);
    const size_t eq = entry.find('=');
    const std::string_view path = eq == std::string_view::npos ? std::string_view() : entry.substr(0, eq);
    const std::optional<int64_t> rank =
        eq == std::string_view::npos ? std::nullopt : parse_integer(entry.substr(eq + 1));
    if (path.empty() || !rank || *rank < 1) {
      throw ConfigError(fmt::format(
          "model config: low_rank entry '{}' is not path=rank with a rank >= 1 (e.g. blocks.0.mlp.fc=32)", entry));
    }
    if (!ranks.emplace(std::string(path), *rank).second) {
      throw ConfigError(fmt::format("model config: low_rank names {} twice", path));
    }
    start = end + 1;
  }
  return ranks;
}

std::string format_low_rank(const LowRankMap& ranks) {
  std::string text;
  for (const auto& [path, rank] : ranks) {
    text += fmt::format("{}{}={}", text.empty() ? "" : ",", path, rank);
  }
  return text;
}

std::string describe_differences(const ModelConfig& a, const ModelConfig& b) {
  const nlohmann::json ja = to_json(a);
  const nlohmann::json jb = to_json(b);
  std::string text;
  for (const auto& [key, value] : ja.items()) {
    if (jb.at(key) != value) {
      text += fmt::format("{}{}: {} != {}", text.empty() ? "" : "; ", key, value.dump(), jb.at(key).dump());
    }
  }
  return text;
}

}  // namespace mlagpt::model
