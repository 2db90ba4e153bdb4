// TrainConfig: TOML file plus command-line overrides, typed and validated with messages naming field and values,
// and a JSON round trip (what checkpoints store).
#include "trainer/train_config.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "launch/error.h"
#include "support/temp_dir.h"

using mlagpt::ConfigError;
using mlagpt::trainer::read_train_config;
using mlagpt::trainer::TrainConfig;

class TrainConfigFile : public testing::Test {
 protected:
  std::filesystem::path write(const std::string& body) {
    const auto path = dir_ / "train.toml";
    std::ofstream(path) << body;
    return path;
  }
  std::string error_of(const std::string& body, const std::vector<std::string>& overrides = {}) {
    try {
      read_train_config(write(body), overrides);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "no error";
  }
  mlagpt::testing::TempDir dir_;
};

TEST_F(TrainConfigFile, FileThenOverridesInOrder) {
  const auto path = write(R"([run]
max_steps = 200
[model]
attention = "mla"
kv_lora_rank = 16
qk_nope_head_dim = 16
qk_rope_head_dim = 8
v_head_dim = 16
[data]
dir = "data/fortunes"
[optim]
lr = 1e-3
)");
  const TrainConfig c = read_train_config(
      path, {"--optim.lr=3e-4", "--run.max_steps", "50", "--eval.every=10", "--schedule.warmup_steps=5"});
  EXPECT_DOUBLE_EQ(c.optim.lr, 3e-4);
  EXPECT_EQ(c.run.max_steps, 50);
  EXPECT_EQ(c.eval.every, 10);
  EXPECT_EQ(c.data.dir, "data/fortunes");
  EXPECT_EQ(c.model.kv_lora_rank, 16);
  EXPECT_EQ(c.seq_len(), c.model.block_size);
  EXPECT_EQ(c.decay_steps(), 50);
  EXPECT_EQ(c.checkpoint_dir(), std::filesystem::path("runs/mlagpt/checkpoints"));
}

TEST_F(TrainConfigFile, ErrorsNameTheFieldAndTheValues) {
  const std::string data = "[data]\ndir = \"d\"\n";
  EXPECT_NE(error_of(data + "[optim]\nlearning_rate = 1\n").find("unknown key 'learning_rate' in [optim]"),
            std::string::npos);
  EXPECT_NE(error_of(data + "[optimizer]\nlr = 1\n").find("unknown section [optimizer]"), std::string::npos);
  EXPECT_NE(error_of(data + "[run]\nmax_steps = \"many\"\n").find("[run] max_steps must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of(data, {"--optim.lr=fast"}).find("command line: --optim.lr must be a number, got 'fast'"),
            std::string::npos);
  EXPECT_NE(error_of(data, {"--optim.lr"}).find("--optim.lr needs a value"), std::string::npos);
  EXPECT_NE(error_of(data, {"--schedule.min_lr=1"}).find("schedule.min_lr (1) must be in [0, optim.lr (0.0006)]"),
            std::string::npos);
  EXPECT_NE(error_of("[run]\nmax_steps = 5\n").find("data.dir is required"), std::string::npos);
  EXPECT_NE(error_of(data + "[run]\ndevice = \"tpu\"\n").find("run.device = 'tpu' is not one of"), std::string::npos);
  EXPECT_NE(error_of(data + "[model]\nattention = \"mha\"\nn_embd = 30\n")
                .find("n_embd (30) must be divisible by n_head (4)"),
            std::string::npos);
  EXPECT_NE(error_of(data, {"--data.seq_len=100000"}).find("data.seq_len (100000) must be in [0, model.block_size"),
            std::string::npos);
  EXPECT_NE(error_of(data).find("no error"), std::string::npos);
  try {
    read_train_config(dir_ / "absent.toml", {});
    FAIL();
  } catch (const mlagpt::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("absent.toml"), std::string::npos);
  }
}

TEST_F(TrainConfigFile, JsonRoundTripKeepsEveryField) {
  const TrainConfig c = read_train_config(write("[data]\ndir = \"x\"\n[model]\nattention = \"gqa\"\nn_kv_head = 2\n"),
                                          {"--optim.lr=0.00031", "--eval.sample_prompt=Once upon", "--run.seed=7"});
  const nlohmann::json json = mlagpt::trainer::to_json(c);
  const TrainConfig back = mlagpt::trainer::train_config_from_json(json, "metadata.json");
  EXPECT_EQ(mlagpt::trainer::to_json(back), json);
  EXPECT_EQ(back.eval.sample_prompt, "Once upon");
  EXPECT_EQ(json["model"]["attention"], "gqa");
}

TEST(TrainConfigExamples, EveryTrainingConfigInLaunchConfigsResolves) {
  int training_configs = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::filesystem::path(MLAGPT_SOURCE_DIR) / "launch" / "configs")) {
    std::ifstream in(entry.path());
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.find("[data]") == std::string::npos) {
      continue;  // a model-only config, for model-info
    }
    ++training_configs;
    EXPECT_NO_THROW(read_train_config(entry.path(), {})) << entry.path();
  }
  EXPECT_GE(training_configs, 5);
}
