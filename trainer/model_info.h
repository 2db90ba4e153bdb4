// Reading a ModelConfig from the `[model]` table of a TOML config file, and the `mlagpt model-info` report built on
// it. The same file format is what `mlagpt train --config` reads; its other tables are ignored here.
//
//   [model]                 # keys are ModelConfig's field names (ModelConfig::visit_fields)
//   attention = "mla"
//   n_layer = 12
//
// The file is read by read_config_values (config_file.h, toml++) and each value assigned through the typed
// assign_field of model/config_value.h, as `mlagpt train` does: `n_layer = "12"` is a string, and an error.
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

// The `mlagpt model-info` text for `file`: format_model_info at `context_length` tokens (0 = the config's
// block_size) in `dtype`. Throws ConfigError for a context longer than block_size, which no model can run.
std::string model_info_report(const std::filesystem::path& file, int64_t context_length, std::string_view dtype);

}  // namespace mlagpt::trainer
