// Reading model configs from TOML: every shipped config in launch/configs resolves; unknown keys, mistyped values,
// repeated keys and missing files fail with a ConfigError naming the file and the key; and `mlagpt model-info`
// prints the KV-cache numbers.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "launch/error.h"
#include "model/accounting.h"
#include "support/temp_dir.h"
#include "trainer/model_info.h"

namespace mlagpt::trainer {
namespace {

using model::AttentionKind;

const std::filesystem::path kConfigs = std::filesystem::path(MLAGPT_SOURCE_DIR) / "launch" / "configs";

class ModelInfoToml : public ::testing::Test {
 protected:
  std::filesystem::path write(const std::string& name, const std::string& text) {
    const std::filesystem::path path = dir_ / name;
    std::ofstream(path) << text;
    return path;
  }
  // The message of the ConfigError that reading `path` throws, or "" (with a failure) when it throws none.
  static std::string read_error(const std::filesystem::path& path) {
    try {
      read_model_config(path);
    } catch (const ConfigError& e) {
      return e.what();
    } catch (const IoError& e) {  // a missing file
      return e.what();
    }
    ADD_FAILURE() << path << " was read without an error";
    return "";
  }
  testing::TempDir dir_;
};

TEST_F(ModelInfoToml, EveryShippedConfigResolves) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(kConfigs)) {
    if (entry.path().extension() == ".toml") {
      names.push_back(entry.path().filename().string());
      SCOPED_TRACE(entry.path().string());
      EXPECT_NO_THROW(read_model_config(entry.path()));
    }
  }
  for (const char* name : {"tiny_mha.toml", "tiny_gqa.toml", "tiny_mqa.toml", "tiny_mla.toml", "gpt2_small_mha.toml",
                           "gpt2_small_gqa.toml", "gpt2_small_mqa.toml", "gpt2_small_mla.toml"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name << " missing from " << kConfigs;
  }
}

TEST_F(ModelInfoToml, ComparisonConfigsDifferOnlyInAttention) {
  for (const std::string family : {"tiny", "gpt2_small"}) {
    const model::ModelConfig mha = read_model_config(kConfigs / (family + "_mha.toml"));
    EXPECT_EQ(mha.attention, AttentionKind::kMha);
    for (const std::string kind : {"gqa", "mqa", "mla"}) {
      SCOPED_TRACE(family + "_" + kind);
      model::ModelConfig other = read_model_config(kConfigs / (family + "_" + kind + ".toml"));
      EXPECT_LT(model::kv_cache_ratio_vs_mha(other), 1.0);
      // Put back the attention fields; whatever differs then is a difference beyond attention.
      other.attention = mha.attention;
      other.n_kv_head = mha.n_kv_head;
      other.q_lora_rank = mha.q_lora_rank;
      other.kv_lora_rank = mha.kv_lora_rank;
      other.qk_nope_head_dim = mha.qk_nope_head_dim;
      other.qk_rope_head_dim = mha.qk_rope_head_dim;
      other.v_head_dim = mha.v_head_dim;
      EXPECT_EQ(model::describe_differences(mha, other), "");
    }
  }
}

TEST_F(ModelInfoToml, ReadsValuesOfEveryTypeAndIgnoresOtherTables) {
  const auto path = write("ok.toml", R"(# a comment
seed = 7
[data]
n_layer = "not ours"
[model]
attention = "gqa"   # trailing comment
n_kv_head = 2
n_layer = 3
vocab_size = 1_024
norm_eps = 1e-6
rope_theta = 500000
bias = true
tie_embeddings = false
[train]
lr = 3e-4
)");
  const model::ModelConfig c = read_model_config(path);
  EXPECT_EQ(c.attention, AttentionKind::kGqa);
  EXPECT_EQ(c.n_kv_head, 2);
  EXPECT_EQ(c.n_layer, 3);
  EXPECT_EQ(c.vocab_size, 1024);
  EXPECT_DOUBLE_EQ(c.norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_TRUE(c.bias);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_GT(c.mlp_hidden, 0) << "read_model_config resolves";
}

// The tiny configs leave vocab_size to the dataset; model-info has none, and says what it counts instead.
TEST_F(ModelInfoToml, ConfigWithoutVocabSizeSaysWhatItCounts) {
  const std::string report = model_info_report(kConfigs / "tiny_mla.toml", 0, "bfloat16");
  EXPECT_NE(report.find("vocab_size is not set in"), std::string::npos) << report;
  EXPECT_NE(report.find("vocab 320,"), std::string::npos) << report;
  EXPECT_EQ(read_model_config(kConfigs / "tiny_mla.toml").vocab_size, 0);
  EXPECT_EQ(model_info_report(kConfigs / "gpt2_small_mla.toml", 0, "bfloat16").find("not set"), std::string::npos);
}

TEST_F(ModelInfoToml, ErrorsNameTheFileAndTheKey) {
  struct Case {
    std::string body;
    std::string key;
  };
  const std::vector<Case> cases{
      {"[model]\nn_layers = 4\n", "n_layers"},                         // unknown key
      {"[model]\nn_layer = 1.5\n", "n_layer"},                         // float for an integer
      {"[model]\nn_layer = 4x\n", "n_layer"},                          // trailing garbage
      {"[model]\nbias = yes\n", "bias"},                               // not a TOML bool
      {"[model]\nnorm_eps = small\n", "norm_eps"},                     // not a number
      {"[model]\nattention = \"mlx\"\n", "attention"},                 // not an enum name
      {"[model]\nn_layer = 4\nn_head = 2\nn_layer = 5\n", "n_layer"},  // repeated
      {"[model]\nn_layer = [4, 5]\n", "n_layer"},                      // array
      {"[model.extra]\nx = 1\n", "[model.extra]"},                     // nested table
      {"[model]\nn_head = 0\n", "n_head"},                             // resolve()'s rule, with the file in front
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string name = "bad_" + std::to_string(i) + ".toml";
    const std::string message = read_error(write(name, cases[i].body));
    SCOPED_TRACE(cases[i].body);
    EXPECT_NE(message.find(name), std::string::npos) << message;
    EXPECT_NE(message.find(cases[i].key), std::string::npos) << message;
  }
}

TEST_F(ModelInfoToml, MissingFileOrTableIsAnError) {
  const std::string missing = read_error(dir_ / "absent.toml");
  EXPECT_NE(missing.find("absent.toml"), std::string::npos) << missing;
  const std::string no_table = read_error(write("train_only.toml", "[train]\nlr = 1e-3\n"));
  EXPECT_NE(no_table.find("[model]"), std::string::npos) << no_table;
  // A table header with a comment after it files the keys under that table, not the previous one.
  EXPECT_EQ(read_model_config(write("header.toml", "[data]\nn_layer = 1\n[model] # the model\nn_layer = 2\n")).n_layer,
            2);
}

TEST_F(ModelInfoToml, ContextBeyondBlockSizeOnlyWithRope) {
  // tiny_mla has RoPE positions and block_size 256: a longer context is planned, with its cache, and a note.
  model::ModelConfig mla = read_model_config(kConfigs / "tiny_mla.toml");
  mla.vocab_size = kAssumedVocabSize;  // the tiny configs leave it to the dataset
  ASSERT_TRUE(mla.uses_rope());
  ASSERT_EQ(mla.block_size, 256);
  EXPECT_NE(model_info_report(kConfigs / "tiny_mla.toml", 0, "bfloat16").find("256 tokens"), std::string::npos);
  const std::string longer = model_info_report(kConfigs / "tiny_mla.toml", 1000, "bfloat16");
  EXPECT_NE(longer.find(model::format_model_info(mla, 1000, "bfloat16")), std::string::npos) << longer;
  EXPECT_NE(longer.find("past block_size 256"), std::string::npos) << longer;
  // Learned positions end at block_size.
  const std::filesystem::path learned =
      write("learned.toml", "[model]\nattention = \"mha\"\npositions = \"learned\"\nblock_size = 64\n");
  try {
    model_info_report(learned, 65, "bfloat16");
    ADD_FAILURE() << "a context past block_size with learned positions was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("learned positions"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("learned.toml"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(model_info_report(learned, 64, "bfloat16"));
}

TEST(ModelInfoCommand, PrintsKvCacheNumbers) {
  int status = -1;
  const std::string config = (kConfigs / "gpt2_small_mla.toml").string();
  const std::string out = mlagpt::testing::run_command(
      std::string(MLAGPT_EXECUTABLE) + " model-info --config " + config + " 2>&1", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("KV cache (bfloat16"), std::string::npos) << out;
  // The defaults are the config's block_size and bfloat16, and the command prints the library's report unchanged.
  const model::ModelConfig mla = read_model_config(config);
  EXPECT_NE(out.find(model::format_model_info(mla, mla.block_size, "bfloat16")), std::string::npos) << out;
}

TEST(ModelInfoCommand, BadConfigFailsWithItsName) {
  int status = 0;
  const std::string out = mlagpt::testing::run_command(
      std::string(MLAGPT_EXECUTABLE) + " model-info --config /nonexistent/model.toml 2>&1", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("/nonexistent/model.toml"), std::string::npos) << out;
}

}  // namespace
}  // namespace mlagpt::trainer
