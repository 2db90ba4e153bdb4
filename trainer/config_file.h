// Config files and command-line overrides, for every config struct that lists its fields with visit_fields().
//
// A file is TOML, parsed by toml++ (all its use stays in config_file.cpp): one table per config section, keys are
// the section's field names, and values keep the type the file gives them, so `n_layer = "12"` is a string and
// assign_field() (model/config_value.h) refuses it for an integer field. Overrides come from the command line as
// `--section.key=value` (or `--section.key value`) and stay text until the field's type parses it. Every error is
// a ConfigError that names the file with line and column (or "command line"), the section and the key.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "model/config_value.h"

namespace mlagpt::trainer {

using model::apply_value;
using model::assign_field;
using model::CommandLineText;
using model::ConfigScalar;
using model::ConfigValue;

// Every key of a TOML file, in file order (section "" for keys before any table), each with `where` =
// "FILE:LINE:COLUMN: [section] key". Throws IoError for an unreadable file, and ConfigError at FILE:LINE:COLUMN
// for what is not TOML (a key given twice included) and for what no config field takes: arrays, nested tables
// ([model.x] or model.x.y = ...), dates and times. With `sections` given, a table of another name, even an empty
// one, is a ConfigError at its header listing them.
std::vector<ConfigValue> read_config_values(const std::filesystem::path& file,
                                            const std::vector<std::string>& sections = {});

// Parses `--section.key=value` and `--section.key value` arguments into CommandLineText values. Throws ConfigError
// for anything else.
std::vector<ConfigValue> parse_overrides(const std::vector<std::string>& arguments);

}  // namespace mlagpt::trainer
