// The closed-form accounting of model/accounting.h against the model itself: parameter counts by component against
// the tensors Gpt registers (every attention kind, with and without biases, tied and untied, learned and rotary
// positions, query compression on and off, GELU and SwiGLU, both norms), KV-cache sizes against docs/mla.md's
// formulas and the caches Gpt allocates, and training FLOPs against 6N + 12 L d T for MHA.
#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "launch/error.h"
#include "model/accounting.h"
#include "model/gpt.h"
#include "model/model_config.h"

namespace mlagpt::model {
namespace {

// A model small enough to build a couple of hundred times in a second: 2 layers, 4 heads of 8.
ModelConfig tiny(AttentionKind attention, int64_t q_lora_rank = 0) {
  ModelConfig c;
  c.vocab_size = 50;
  c.block_size = 16;
  c.n_layer = 2;
  c.n_embd = 32;
  c.n_head = 4;
  c.attention = attention;
  c.n_kv_head = attention == AttentionKind::kGqa ? 2 : 0;
  if (attention == AttentionKind::kMla) {
    c.q_lora_rank = q_lora_rank;
    c.kv_lora_rank = 12;
    c.qk_nope_head_dim = 6;
    c.qk_rope_head_dim = 4;
    c.v_head_dim = 10;
  }
  return c;
}

ModelConfig gpt2_small(AttentionKind attention) {
  ModelConfig c;
  c.vocab_size = 50304;
  c.block_size = 1024;
  c.n_layer = 12;
  c.n_embd = 768;
  c.n_head = 12;
  c.attention = attention;
  c.n_kv_head = attention == AttentionKind::kGqa ? 4 : 0;
  if (attention == AttentionKind::kMla) {
    c.q_lora_rank = 384;
    c.kv_lora_rank = 256;
    c.qk_nope_head_dim = 64;
    c.qk_rope_head_dim = 32;
    c.v_head_dim = 64;
  }
  c.resolve();
  return c;
}

// Every combination of the choices that change the parameter layout.
std::vector<ModelConfig> layout_variants() {
  std::vector<ModelConfig> base{tiny(AttentionKind::kMha), tiny(AttentionKind::kGqa), tiny(AttentionKind::kMqa),
                                tiny(AttentionKind::kMla, 0), tiny(AttentionKind::kMla, 8)};
  // MLA does not need n_head to divide n_embd; the MHA baseline of the ratios must still be defined then.
  ModelConfig uneven = tiny(AttentionKind::kMla, 8);
  uneven.n_embd = 30;
  base.push_back(uneven);
  std::vector<ModelConfig> variants;
  for (const ModelConfig& b : base) {
    for (int bits = 0; bits < 32; ++bits) {
      ModelConfig c = b;
      c.bias = (bits & 1) != 0;
      c.tie_embeddings = (bits & 2) != 0;
      c.positions = (bits & 4) != 0 ? PositionKind::kRope : PositionKind::kLearned;
      c.mlp = (bits & 8) != 0 ? MlpKind::kSwiglu : MlpKind::kGelu;
      c.norm = (bits & 16) != 0 ? NormKind::kRmsNorm : NormKind::kLayerNorm;
      c.resolve();
      variants.push_back(c);
    }
  }
  return variants;
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.rfind(prefix, 0) == 0;
}

// Parameters of a built model, summed by the component their name puts them in.
struct TensorCounts {
  ParameterCounts by_component;
  int64_t lookup_only = 0;  // wpe, and wte when untied
};

TensorCounts count_tensors(Gpt& model) {
  TensorCounts t;
  ParameterCounts& c = t.by_component;
  const ModelConfig& config = model.config();
  for (const auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    const int64_t n = item.value().numel();
    c.total += n;
    if (starts_with(name, "wte.") || starts_with(name, "wpe.")) {
      c.embedding += n;
      if (starts_with(name, "wpe.") || !config.tie_embeddings) {
        t.lookup_only += n;
      }
    } else if (starts_with(name, "lm_head.")) {
      c.lm_head += n;
    } else if (starts_with(name, "norm_f.")) {
      c.norms += n;
    } else if (starts_with(name, "blocks.")) {
      const size_t dot = name.find('.', 7);
      const std::string layer = name.substr(7, dot - 7);
      const std::string rest = name.substr(dot + 1);
      if (starts_with(rest, "attn.")) {
        c.attention += n;
        c.attention_per_layer += layer == "0" ? n : 0;
      } else if (starts_with(rest, "mlp.")) {
        c.mlp += n;
        c.mlp_per_layer += layer == "0" ? n : 0;
      } else if (starts_with(rest, "norm1.") || starts_with(rest, "norm2.")) {
        c.norms += n;
      } else {
        ADD_FAILURE() << "parameter in no component: " << name;
      }
    } else {
      ADD_FAILURE() << "parameter in no component: " << name;
    }
  }
  return t;
}

TEST(Accounting, ParameterCountsMatchTheModelsTensors) {
  for (const ModelConfig& config : layout_variants()) {
    SCOPED_TRACE(to_json(config).dump());
    Gpt model(config);
    const TensorCounts tensors = count_tensors(model);
    const ParameterCounts& expected = tensors.by_component;
    const ParameterCounts counted = count_parameters(config);
    EXPECT_EQ(counted.embedding, expected.embedding);
    EXPECT_EQ(counted.attention, expected.attention);
    EXPECT_EQ(counted.attention_per_layer, expected.attention_per_layer);
    EXPECT_EQ(counted.mlp, expected.mlp);
    EXPECT_EQ(counted.mlp_per_layer, expected.mlp_per_layer);
    EXPECT_EQ(counted.norms, expected.norms);
    EXPECT_EQ(counted.lm_head, expected.lm_head);
    EXPECT_EQ(counted.total, expected.total);
    EXPECT_EQ(flops_parameter_count(config), expected.total - tensors.lookup_only);
  }
}

TEST(Accounting, LowRankProjectionsCountTheirFactors) {
  for (const auto kind : {AttentionKind::kMha, AttentionKind::kGqa, AttentionKind::kMla}) {
    ModelConfig config;
    config.vocab_size = 97;
    config.n_layer = 3;
    config.attention = kind;
    config.n_kv_head = kind == AttentionKind::kGqa ? 2 : 0;
    config.q_lora_rank = kind == AttentionKind::kMla ? 24 : 0;
    config.low_rank = kind == AttentionKind::kMla
                          ? "blocks.0.attn.kv_up=5,blocks.0.attn.q_up=7,blocks.2.mlp.proj=9,blocks.1.attn.kv_down=3"
                          : "blocks.0.attn.k_proj=5,blocks.0.attn.o_proj=7,blocks.2.mlp.gate=9,blocks.1.attn.q_proj=3";
    config.resolve();
    SCOPED_TRACE(to_json(config).dump());
    Gpt model(config);
    const TensorCounts tensors = count_tensors(model);
    const ParameterCounts counted = count_parameters(config);
    EXPECT_EQ(counted.attention, tensors.by_component.attention);
    EXPECT_EQ(counted.attention_per_layer, tensors.by_component.attention_per_layer);
    EXPECT_EQ(counted.mlp, tensors.by_component.mlp);
    EXPECT_EQ(counted.total, tensors.by_component.total);
    EXPECT_EQ(flops_parameter_count(config), tensors.by_component.total - tensors.lookup_only);
  }
  ModelConfig bad;
  bad.attention = AttentionKind::kMla;
  bad.low_rank = "blocks.0.attn.k_proj=4";
  EXPECT_THROW(count_parameters(bad), ConfigError);
}

TEST(Accounting, ResolvesDerivedFieldsItself) {
  const ModelConfig unresolved = tiny(AttentionKind::kGqa);  // mlp_hidden = 0 until resolved
  ModelConfig resolved = unresolved;
  resolved.resolve();
  EXPECT_EQ(count_parameters(unresolved).total, count_parameters(resolved).total);
  ModelConfig broken = unresolved;
  broken.n_kv_head = 3;  // does not divide n_head = 4
  EXPECT_THROW(count_parameters(broken), ConfigError);
}

// docs/mla.md ("What the KV cache holds"): per token and layer, MHA caches 2 H Dh values, GQA 2 Hkv Dh, MQA 2 Dh,
// MLA Dc + Dr.
int64_t kv_values_from_mla_md(const ModelConfig& c) {
  const int64_t Dh = c.n_embd / c.n_head;
  switch (c.attention) {
    case AttentionKind::kMha: return 2 * c.n_head * Dh * c.n_layer;
    case AttentionKind::kGqa: return 2 * c.n_kv_head * Dh * c.n_layer;
    case AttentionKind::kMqa: return 2 * Dh * c.n_layer;
    case AttentionKind::kMla: return (c.kv_lora_rank + c.qk_rope_head_dim) * c.n_layer;
  }
  return -1;
}

TEST(Accounting, KvCacheFollowsMlaMdAndWhatTheModelAllocates) {
  for (const ModelConfig& unresolved : {tiny(AttentionKind::kMha), tiny(AttentionKind::kGqa), tiny(AttentionKind::kMqa),
                                        tiny(AttentionKind::kMla, 0), tiny(AttentionKind::kMla, 8)}) {
    ModelConfig config = unresolved;
    config.resolve();
    SCOPED_TRACE(to_json(config).dump());
    const int64_t values = kv_values_from_mla_md(config);
    EXPECT_EQ(kv_cache_values_per_token(config), values);
    EXPECT_DOUBLE_EQ(kv_cache_ratio_vs_mha(config),
                     static_cast<double>(values) / static_cast<double>(2 * config.n_embd * config.n_layer));
    const int64_t context = config.block_size;
    EXPECT_EQ(kv_cache_bytes(config, context, 2), values * context * 2);
    EXPECT_EQ(kv_cache_bytes(config, context, 4), values * context * 4);
    Gpt model(config);
    for (const auto dtype : {at::kBFloat16, at::kFloat}) {
      const KvCache cache = model.make_cache(1, context, at::TensorOptions().dtype(dtype));
      EXPECT_EQ(kv_cache_bytes(config, context, at::elementSize(dtype)), cache.bytes());
    }
  }
  EXPECT_THROW(kv_cache_bytes(tiny(AttentionKind::kMla), 0, 2), ConfigError);
}

TEST(Accounting, Gpt2SmallRatiosAgainstMha) {
  const ModelConfig mha = gpt2_small(AttentionKind::kMha);
  EXPECT_DOUBLE_EQ(attention_ratio_vs_mha(mha), 1.0);
  EXPECT_DOUBLE_EQ(kv_cache_ratio_vs_mha(mha), 1.0);
  EXPECT_EQ(count_parameters(mha).attention_per_layer, 4 * mha.n_embd * mha.n_embd);
  for (const AttentionKind kind : {AttentionKind::kGqa, AttentionKind::kMqa, AttentionKind::kMla}) {
    const ModelConfig config = gpt2_small(kind);
    SCOPED_TRACE(std::string(to_string(kind)));
    EXPECT_LT(attention_ratio_vs_mha(config), 1.0);
    EXPECT_DOUBLE_EQ(attention_ratio_vs_mha(config), static_cast<double>(count_parameters(config).attention) /
                                                         static_cast<double>(count_parameters(mha).attention));
    EXPECT_LT(kv_cache_ratio_vs_mha(config), 1.0);
    EXPECT_DOUBLE_EQ(kv_cache_ratio_vs_mha(config), static_cast<double>(kv_values_from_mla_md(config)) /
                                                        static_cast<double>(kv_values_from_mla_md(mha)));
  }
}

TEST(Accounting, MhaTrainingFlopsArePalms6NPlus12LdT) {
  for (const bool tied : {true, false}) {
    for (const PositionKind positions : {PositionKind::kLearned, PositionKind::kRope}) {
      ModelConfig config = tiny(AttentionKind::kMha);
      config.tie_embeddings = tied;
      config.positions = positions;
      config.resolve();
      SCOPED_TRACE(to_json(config).dump());
      Gpt model(config);
      const TensorCounts tensors = count_tensors(model);
      const double N = static_cast<double>(tensors.by_component.total - tensors.lookup_only);
      for (const int64_t T : {int64_t{1}, int64_t{7}, config.block_size}) {
        const double L = static_cast<double>(config.n_layer);
        const double d = static_cast<double>(config.n_embd);
        EXPECT_DOUBLE_EQ(training_flops_per_token(config, T), 6 * N + 12 * L * d * static_cast<double>(T));
      }
    }
  }
  const ModelConfig gpt2 = gpt2_small(AttentionKind::kMha);
  // wpe is absent (rope) and wte is tied, so N is every parameter.
  EXPECT_EQ(flops_parameter_count(gpt2), count_parameters(gpt2).total);
  EXPECT_DOUBLE_EQ(training_flops_per_token(gpt2, 1024),
                   6.0 * static_cast<double>(count_parameters(gpt2).total) + 12.0 * 12 * 768 * 1024);
}

TEST(Accounting, MlaTrainingFlopsUseTheQkAndVWidths) {
  const ModelConfig mla = gpt2_small(AttentionKind::kMla);
  const double N = static_cast<double>(flops_parameter_count(mla));
  const double T = 1024;
  EXPECT_DOUBLE_EQ(training_flops_per_token(mla, 1024), 6 * N + 6.0 * 12 * 12 * T * (64 + 32 + 64));
  EXPECT_THROW(training_flops_per_token(mla, 0), ConfigError);
}

TEST(Accounting, BytesPerValueOfEachDtype) {
  EXPECT_EQ(bytes_per_value("float32"), 4);
  EXPECT_EQ(bytes_per_value("bfloat16"), 2);
  EXPECT_EQ(bytes_per_value("float16"), 2);
  try {
    bytes_per_value("int8");
    ADD_FAILURE() << "int8 accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("int8"), std::string::npos) << e.what();
  }
}

TEST(Accounting, ModelInfoReportsEverySection) {
  const ModelConfig mla = gpt2_small(AttentionKind::kMla);
  const std::string report = format_model_info(mla, 1024, "bfloat16");
  for (const char* part : {"parameters", "attention vs MHA", "KV cache (bfloat16", "per token", "1024 tokens",
                           "smaller", "training FLOPs"}) {
    EXPECT_NE(report.find(part), std::string::npos) << "no '" << part << "' in:\n" << report;
  }
  EXPECT_THROW(format_model_info(mla, 1024, "int8"), ConfigError);
  EXPECT_THROW(format_model_info(mla, 0, "bfloat16"), ConfigError);
}

}  // namespace
}  // namespace mlagpt::model
