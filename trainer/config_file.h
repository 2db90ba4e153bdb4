// Config files and command-line overrides, for every config struct that lists its fields with visit_fields().
//
// A file is TOML, tokenized by CLI11's reader (no TOML parser of our own): one table per config section, keys are
// the section's field names. Overrides come from the command line as `--section.key=value` (or `--section.key
// value`). Values are converted with one type check per field: integer fields take decimal integers (TOML's `_`
// digit separators allowed), float fields any number, bools exactly true or false, enums one of their names,
// strings anything. CLI11 strips quotes before we see a value, so `n_layer = "12"` reads like `n_layer = 12`.
// Every error is a ConfigError naming the file (or "command line"), the section and the key.
#pragma once

#include <charconv>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "launch/error.h"
#include "model/model_config.h"

namespace mlagpt::trainer {

// One `key = value` of a section; `where` is "FILE: [section] key" or "command line: --section.key" for messages.
struct ConfigValue {
  std::string section;
  std::string key;
  std::string value;
  std::string where;
};

// Every key of a TOML file, in file order (section "" for keys before any table). Throws IoError for an unreadable
// file and ConfigError for a key given twice or as an array.
std::vector<ConfigValue> read_config_values(const std::filesystem::path& file);

// Parses `--section.key=value` and `--section.key value` arguments. Throws ConfigError for anything else.
std::vector<ConfigValue> parse_overrides(const std::vector<std::string>& arguments);

// "1e-3" -> 0.001 etc.; nullopt when `text` is not entirely a number of type T (TOML `_` separators allowed).
std::optional<int64_t> parse_integer(std::string_view text);
std::optional<double> parse_float(std::string_view text);

// Converts `value.value` into `field`, throwing ConfigError naming value.where.
template <typename T>
void assign_field(const ConfigValue& value, T& field) {
  const std::string& text = value.value;
  if constexpr (std::is_enum_v<T>) {
    model::parse_enum(value.where, text, field);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (text != "true" && text != "false") {
      throw ConfigError(fmt::format("{} must be true or false, got '{}'", value.where, text));
    }
    field = text == "true";
  } else if constexpr (std::is_integral_v<T>) {
    const std::optional<int64_t> parsed = parse_integer(text);
    if (!parsed) {
      throw ConfigError(fmt::format("{} must be an integer, got '{}'", value.where, text));
    }
    field = static_cast<T>(*parsed);
  } else if constexpr (std::is_floating_point_v<T>) {
    const std::optional<double> parsed = parse_float(text);
    if (!parsed) {
      throw ConfigError(fmt::format("{} must be a number, got '{}'", value.where, text));
    }
    field = static_cast<T>(*parsed);
  } else {
    static_assert(std::is_same_v<T, std::string>, "a config field type the reader does not convert");
    field = text;
  }
}

// Applies `value` to the field of `section` (a struct with visit_fields) named value.key; throws ConfigError
// naming the key and listing the known ones when there is no such field.
template <typename Section>
void apply_value(const ConfigValue& value, Section& section) {
  bool known = false;
  std::string keys;
  section.visit_fields([&](std::string_view name, auto& field) {
    keys += fmt::format("{}{}", keys.empty() ? "" : ", ", name);
    if (name == value.key) {
      known = true;
      assign_field(value, field);
    }
  });
  if (!known) {
    throw ConfigError(
        fmt::format("{}: unknown key '{}' in [{}] (known keys: {})", value.where, value.key, value.section, keys));
  }
}

}  // namespace mlagpt::trainer
