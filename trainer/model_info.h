// Reading a ModelConfig from the `[model]` table of a TOML config file, and the `mlagpt model-info` report built on
// it. The same file format is what `mlagpt train --config` reads; its other tables are ignored here.
//
//   [model]                 # keys are ModelConfig's field names (ModelConfig::visit_fields)
//   attention = "mla"
//   n_layer = 12
//
// The file is read by read_config_values (config_file.h, toml++) and each value assigned through the typed
// assign_field of model/config_value.h, as `mlagpt train` does: `n_layer = "12"` is a string, and an error. A config
// without vocab_size (training takes the dataset's) is reported with an assumed one, which the report says.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "model/model_config.h"

namespace mlagpt::trainer {

// The resolved model config of `file`. Throws IoError when the file cannot be opened, and ConfigError naming the
// file when it cannot be parsed, has no [model] table, or has an unknown, repeated, array-valued or mistyped key in it;
// resolve()'s rule checks come through with the file's name in front.
model::ModelConfig read_model_config(const std::filesystem::path& file);

// What model-info counts for a config without vocab_size: the byte tokenizer's 257 rounded up to a multiple of 64.
constexpr int64_t kAssumedVocabSize = 320;

// The `mlagpt model-info` text for `file`: format_model_info at `context_length` tokens (0 = the config's
// block_size) in `dtype`, after a line saying so when vocab_size is not set and kAssumedVocabSize is counted. A
// context past block_size is planned for RoPE models (with a note saying the model is trained at block_size); with
// learned positions it is a ConfigError, as they end at block_size.
std::string model_info_report(const std::filesystem::path& file, int64_t context_length, std::string_view dtype);

}  // namespace mlagpt::trainer
