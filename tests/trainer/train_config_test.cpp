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
  EXPECT_NE(error_of(data, {"--eval.sample_tokens=20", "--parallel.tp=2"})
                .find("eval.sample_tokens = 20 samples with the whole model in one process, and parallel.tp = 2"),
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

// A TOML value keeps its type: a quoted number is a string, and an integer field refuses it at its line and column.
TEST_F(TrainConfigFile, StringForAnIntegerIsAnErrorAtItsLineAndColumn) {
  const std::string message = error_of("[data]\ndir = \"d\"\n[model]\nn_layer = \"12\"\n");
  EXPECT_NE(message.find("train.toml:4:1: [model] n_layer must be an integer, got the string \"12\""),
            std::string::npos)
      << message;
}

TEST_F(TrainConfigFile, FloatForAnIntegerIsAnErrorAndIntegerForAFloatIsNot) {
  const std::string message = error_of("[data]\ndir = \"d\"\n[model]\nn_layer = 4.0\n");
  EXPECT_NE(message.find("train.toml:4:1: [model] n_layer must be an integer, got the float 4"), std::string::npos)
      << message;
  const std::string as_text = error_of("[data]\ndir = \"d\"\n[run]\nout_dir = 5\n");
  EXPECT_NE(as_text.find("train.toml:4:1: [run] out_dir must be a string, got the integer 5"), std::string::npos)
      << as_text;
  const std::string as_bool = error_of("[data]\ndir = \"d\"\n[monitoring]\njsonl = \"false\"\n");
  EXPECT_NE(as_bool.find("train.toml:4:1: [monitoring] jsonl must be true or false, got the string \"false\""),
            std::string::npos)
      << as_bool;
  const TrainConfig c =
      read_train_config(write("[data]\ndir = \"d\"\n[optim]\nlr = 1\n[model]\nrope_theta = 500000\n"), {});
  EXPECT_DOUBLE_EQ(c.optim.lr, 1.0);
  EXPECT_DOUBLE_EQ(c.model.rope_theta, 500000.0);
}

TEST_F(TrainConfigFile, UnknownKeysAndSectionsAreErrorsAtTheirLineListingTheKnownOnes) {
  const std::string key = error_of("[data]\ndir = \"d\"\n[optim]\n  learning_rate = 1\n");
  EXPECT_NE(key.find("train.toml:4:3: [optim] learning_rate: unknown key 'learning_rate' in [optim] (known keys: lr, "
                     "weight_decay, beta1, beta2, eps, grad_clip, grad_accum)"),
            std::string::npos)
      << key;
  const std::string section = error_of("[data]\ndir = \"d\"\n[optimizer]\nlr = 1\n");
  EXPECT_NE(section.find("train.toml:3:1: unknown section [optimizer] (sections: run, model, data, optim, schedule, "
                         "eval, checkpoint, monitoring, parallel, compress)"),
            std::string::npos)
      << section;
  const std::string empty = error_of("[data]\ndir = \"d\"\n\n[optimizer]\n");
  EXPECT_NE(empty.find("train.toml:4:1: unknown section [optimizer] (sections: run, model, data, optim, schedule, "
                       "eval, checkpoint, monitoring, parallel, compress)"),
            std::string::npos)
      << empty;
  const std::string outside = error_of("seed = 3\n[data]\ndir = \"d\"\n");
  EXPECT_NE(outside.find("train.toml:1:1: seed: a key outside any [section]"), std::string::npos) << outside;
}

TEST_F(TrainConfigFile, NestedTablesArraysDatesAndSyntaxErrorsAreErrorsAtTheirLine) {
  const std::string data = "[data]\ndir = \"d\"\n";
  const std::vector<std::pair<std::string, std::string>> cases{
      {data + "[model.extra]\nx = 1\n", "train.toml:3:1: [model.extra] is a nested table"},
      {data + "[model]\nextra.x = 1\n", "train.toml:4:1: [model.extra] is a nested table"},
      {data + "[model]\nn_layer = { a = 1 }\n", "train.toml:4:11: [model.n_layer] is a nested table"},
      {data + "[model]\nn_layer = [4, 5]\n", "train.toml:4:1: [model] n_layer is an array"},
      {data + "[[model]]\nn_layer = 4\n", "[[model]] is an array of tables"},
      {data + "[run]\nout_dir = 1979-05-27\n", "train.toml:4:1: [run] out_dir is a date or time"},
      {data + "[model]\nn_layer = 4x\n", "train.toml:4:"},
      {data + "[model]\nn_layer = 4\nn_layer = 5\n", "train.toml:5:"},
  };
  for (const auto& [body, expected] : cases) {
    const std::string message = error_of(body);
    EXPECT_NE(message.find(expected), std::string::npos) << body << "\n -> " << message;
  }
}

TEST_F(TrainConfigFile, CommentAfterATableHeader) {
  const TrainConfig c =
      read_train_config(write("[data]   # where the tokens are\ndir = \"d\"\n[model]  # tiny\nn_layer = 2\n"), {});
  EXPECT_EQ(c.model.n_layer, 2);
  EXPECT_EQ(c.data.dir, "d");
}

// The file, the command line and a checkpoint's stored JSON reach the fields through one typed assignment.
TEST_F(TrainConfigFile, FileOverridesAndStoredJsonGiveTheSameConfig) {
  const TrainConfig from_file = read_train_config(write(R"([run]
seed = 7
threads = 2
[model]
attention = "gqa"
n_kv_head = 2
bias = true
rope_theta = 500_000
[data]
dir = "data/with space"
[optim]
lr = 3e-4
[monitoring]
jsonl = false
)"),
                                                  {});
  const TrainConfig from_overrides = read_train_config(
      "", {"--run.seed=7", "--run.threads", "2", "--model.attention=gqa", "--model.n_kv_head=2", "--model.bias=true",
           "--model.rope_theta=500000", "--data.dir=data/with space", "--optim.lr=3e-4", "--monitoring.jsonl=false"});
  const TrainConfig from_json =
      mlagpt::trainer::train_config_from_json(nlohmann::json::parse(R"({"run": {"seed": 7, "threads": 2},
                                "model": {"attention": "gqa", "n_kv_head": 2, "bias": true, "rope_theta": 500000},
                                "data": {"dir": "data/with space"}, "optim": {"lr": 3e-4},
                                "monitoring": {"jsonl": false}})"),
                                              "metadata.json");
  const nlohmann::json expected = mlagpt::trainer::to_json(from_file);
  EXPECT_EQ(mlagpt::trainer::to_json(from_overrides), expected);
  EXPECT_EQ(mlagpt::trainer::to_json(from_json), expected);
  EXPECT_EQ(from_file.model.n_kv_head, 2);
  EXPECT_EQ(from_file.data.dir, "data/with space");
  EXPECT_FALSE(from_file.monitoring.jsonl);
}

TEST(TrainConfigJson, StoredConfigErrorsNameTheCheckpointFileAndKey) {
  const auto error_of = [](const std::string& model) {
    try {
      mlagpt::trainer::train_config_from_json(
          nlohmann::json::parse(R"({"data": {"dir": "d"}, "model": )" + model + "}"),
          "ckpt/step_00000010/metadata.json");
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string quoted = error_of(R"({"n_layer": "12"})");
  EXPECT_NE(quoted.find("ckpt/step_00000010/metadata.json: [model] n_layer must be an integer, got the string \"12\""),
            std::string::npos)
      << quoted;
  const std::string array = error_of(R"({"n_layer": [12]})");
  EXPECT_NE(array.find("ckpt/step_00000010/metadata.json: [model] n_layer must be a single value"), std::string::npos)
      << array;
  const std::string unknown = error_of(R"({"n_layers": 12})");
  EXPECT_NE(unknown.find("ckpt/step_00000010/metadata.json: [model] n_layers: unknown key 'n_layers' in [model]"),
            std::string::npos)
      << unknown;
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

TEST_F(TrainConfigFile, TheMetricsJobIsTheRunDirectorysNameUnlessGiven) {
  const auto path = write("[data]\ndir = \"data/fortunes\"\n");
  EXPECT_EQ(read_train_config(path, {}).monitoring.job, "mlagpt");  // run.out_dir = runs/mlagpt
  EXPECT_EQ(read_train_config(path, {"--run.out_dir=runs/tiny_mla_dp2/"}).monitoring.job, "tiny_mla_dp2");
  EXPECT_EQ(read_train_config(path, {"--run.out_dir=/abs/runs/x", "--monitoring.job=sweep-3"}).monitoring.job,
            "sweep-3");
  EXPECT_EQ(read_train_config(path, {"--run.out_dir=."}).monitoring.job, "mlagpt");
  EXPECT_TRUE(read_train_config(path, {}).monitoring.targets_file.empty());
}
