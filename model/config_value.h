// One typed path from a config value to a config field, for every config struct that lists its fields with
// visit_fields() (ModelConfig here, the trainer's sections in trainer/train_config.h).
//
// A value arrives typed by its source: a TOML file (trainer/config_file.cpp) and the JSON stored in checkpoints and
// fixtures give a boolean, an integer, a float or a string; the command line gives text (`--optim.lr=3e-4`), which
// the field's type then parses. assign_field() is the only conversion: integer fields take integers (text: decimal
// digits, TOML's `_` separators allowed), float fields integers or floats, bools true or false, enums one of their
// names, strings strings (text as it is, no quotes needed). Anything else, `n_layer = "12"` or `n_layer = 4.0`
// included, is a ConfigError that names where the value came from, the key, the wanted type and the given one.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include <fmt/format.h>

#include "launch/error.h"

namespace mlagpt::model {

// A command-line value: untyped until a field's type parses it.
struct CommandLineText {
  std::string text;
};

using ConfigScalar = std::variant<bool, int64_t, double, std::string, CommandLineText>;

// One `key = value` of a section. `where` names it in messages, by source:
//   "train.toml:4:1: [model] n_layer", "command line: --model.n_layer", "ckpt/metadata.json: [model] n_layer".
struct ConfigValue {
  std::string section;  // "" for a key outside any section
  std::string key;
  ConfigScalar value;
  std::string where;
};

// "the string \"12\"", "the integer 12", "the float 4.5", "the boolean true", or the command-line text as 'text'.
std::string describe(const ConfigScalar& value);

// A JSON scalar as a config value; ConfigError naming `where` for null, arrays, objects and integers beyond int64.
ConfigScalar config_scalar_from_json(const nlohmann::json& json, std::string_view where);

// Text -> number for command-line values: nullopt unless all of `text` is one (TOML `_` separators, a leading +).
std::optional<int64_t> parse_integer(std::string_view text);
std::optional<double> parse_float(std::string_view text);

namespace detail {
[[noreturn]] void throw_wrong_type(const ConfigValue& value, std::string_view wanted);
bool parse_bool_text(const ConfigValue& value);
int64_t parse_integer_text(const ConfigValue& value);
double parse_float_text(const ConfigValue& value);
}  // namespace detail

// Converts `value.value` into `field`, or throws ConfigError naming value.where and both types.
template <typename T>
void assign_field(const ConfigValue& value, T& field) {
  const ConfigScalar& v = value.value;
  const auto* text = std::get_if<CommandLineText>(&v);
  if constexpr (std::is_enum_v<T>) {
    // parse_enum(field, text, Enum&) is found next to the enum (model_config.h) by argument-dependent lookup.
    if (const auto* s = std::get_if<std::string>(&v)) {
      parse_enum(value.where, *s, field);
    } else if (text != nullptr) {
      parse_enum(value.where, text->text, field);
    } else {
      detail::throw_wrong_type(value, "a string");
    }
  } else if constexpr (std::is_same_v<T, bool>) {
    if (const auto* b = std::get_if<bool>(&v)) {
      field = *b;
    } else if (text != nullptr) {
      field = detail::parse_bool_text(value);
    } else {
      detail::throw_wrong_type(value, "true or false");
    }
  } else if constexpr (std::is_integral_v<T>) {
    static_assert(std::is_same_v<T, int64_t>, "integer config fields are int64_t");
    if (const auto* i = std::get_if<int64_t>(&v)) {
      field = *i;
    } else if (text != nullptr) {
      field = detail::parse_integer_text(value);
    } else {
      detail::throw_wrong_type(value, "an integer");
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    if (const auto* d = std::get_if<double>(&v)) {
      field = static_cast<T>(*d);
    } else if (const auto* i = std::get_if<int64_t>(&v)) {
      field = static_cast<T>(*i);  // `lr = 1` means 1.0, as in TOML-reading Python
    } else if (text != nullptr) {
      field = static_cast<T>(detail::parse_float_text(value));
    } else {
      detail::throw_wrong_type(value, "a number");
    }
  } else {
    static_assert(std::is_same_v<T, std::string>, "a config field type that assign_field does not convert");
    if (const auto* s = std::get_if<std::string>(&v)) {
      field = *s;
    } else if (text != nullptr) {
      field = text->text;
    } else {
      detail::throw_wrong_type(value, "a string");
    }
  }
}

// Assigns `value` to the field of `section` (a struct with visit_fields) named value.key; throws ConfigError naming
// value.where and listing the known keys when there is no such field.
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

}  // namespace mlagpt::model
