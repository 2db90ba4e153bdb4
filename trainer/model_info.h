// Reading a ModelConfig from the `[model]` table of a TOML config file, and the `mlagpt model-info` report built on
// it. The same file format is what `mlagpt train --config` reads; its other tables are ignored here.
//
//   [model]                 # keys are ModelConfig's field names (ModelConfig::visit_fields)
//   attention = "mla"
//   n_layer = 12
//
// The file is tokenized by CLI11's TOML reader (no TOML parser of our own); values are converted here with one
// type check per field: integer fields take decimal integers (TOML's `_` digit separators allowed), float fields
// any number, bools exactly true or false, enums one of their names. CLI11 strips the quotes before we see a
// value, so `n_layer = "12"` is accepted like `n_layer = 12`.
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
// block_size) in `dtype`. A context past block_size is planned for RoPE models (with a note saying the model is
// trained at block_size); with learned positions it is a ConfigError, as they end at block_size.
std::string model_info_report(const std::filesystem::path& file, int64_t context_length, std::string_view dtype);

}  // namespace mlagpt::trainer
