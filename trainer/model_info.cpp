#include "trainer/model_info.h"

#include <fmt/format.h>

#include "launch/error.h"
#include "model/accounting.h"
#include "trainer/config_file.h"

namespace mlagpt::trainer {

model::ModelConfig read_model_config(const std::filesystem::path& path) {
  model::ModelConfig config;
  bool has_model_table = false;
  for (const ConfigValue& value : read_config_values(path)) {
    if (value.section != "model") {
      continue;  // other tables belong to TrainConfig
    }
    has_model_table = true;
    apply_value(value, config);
  }
  if (!has_model_table) {
    throw ConfigError(fmt::format("{}: no [model] table", path.string()));
  }
  try {
    config.resolve();
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("{}: {}", path.string(), e.what()));
  }
  return config;
}

std::string model_info_report(const std::filesystem::path& file, int64_t context_length, std::string_view dtype) {
  model::ModelConfig config = read_model_config(file);
  std::string note;
  if (config.vocab_size == 0) {
    config.vocab_size = kAssumedVocabSize;
    note = fmt::format(
        "vocab_size is not set in {} (training takes the dataset's, rounded up to a multiple of 64): counting {}, "
        "the byte tokenizer's 257 rounded up\n",
        file.string(), kAssumedVocabSize);
  }
  const int64_t context = context_length == 0 ? config.block_size : context_length;
  if (context <= config.block_size) {
    return note + model::format_model_info(config, context, dtype);
  }
  // RoPE has no table of positions, so a cache can be planned for contexts the model was not trained at; learned
  // positions end at block_size.
  if (!config.uses_rope()) {
    throw ConfigError(fmt::format(
        "context length {} exceeds block_size {} of {}, and the model has learned positions (model.positions = "
        "\"learned\"), which end at block_size; only a RoPE model can plan a longer context",
        context, config.block_size, file.string()));
  }
  return note + model::format_model_info(config, context, dtype) +
         fmt::format(
             "note: context {} is past block_size {}: RoPE positions allow it, but the model is trained at "
             "{} tokens\n",
             context, config.block_size, config.block_size);
}

}  // namespace mlagpt::trainer
