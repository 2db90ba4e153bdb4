#include "trainer/model_info.h"

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <cctype>
#include <charconv>
#include <fstream>
#include <optional>
#include <set>
#include <type_traits>
#include <vector>

#include "launch/error.h"
#include "model/accounting.h"

namespace mlagpt::trainer {
namespace {

constexpr std::string_view kModelTable = "model";

// TOML writes 50_304 and +5; std::from_chars accepts neither, so drop digit separators and a leading plus first.
std::string normalized_number(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const bool between_digits = i > 0 && i + 1 < text.size() && std::isdigit(static_cast<unsigned char>(text[i - 1])) &&
                                std::isdigit(static_cast<unsigned char>(text[i + 1]));
    if (text[i] == '_' && between_digits) {
      continue;
    }
    if (text[i] == '+' && i == 0 && text.size() > 1 && std::isdigit(static_cast<unsigned char>(text[1]))) {
      continue;
    }
    out += text[i];
  }
  return out;
}

template <typename T>
std::optional<T> parse_number(std::string_view text) {
  const std::string number = normalized_number(text);
  T value{};
  const char* end = number.data() + number.size();
  const auto [ptr, ec] = std::from_chars(number.data(), end, value);
  if (number.empty() || ec != std::errc() || ptr != end) {
    return std::nullopt;
  }
  return value;
}

// Converts one [model] value into the field it names; `where` is "FILE: [model] KEY" for messages.
template <typename T>
void assign(const std::string& where, const std::string& text, T& field) {
  if constexpr (std::is_enum_v<T>) {
    model::parse_enum(where, text, field);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (text != "true" && text != "false") {
      throw ConfigError(fmt::format("{} must be true or false, got '{}'", where, text));
    }
    field = text == "true";
  } else if constexpr (std::is_integral_v<T>) {
    const std::optional<T> value = parse_number<T>(text);
    if (!value) {
      throw ConfigError(fmt::format("{} must be an integer, got '{}'", where, text));
    }
    field = *value;
  } else if constexpr (std::is_floating_point_v<T>) {
    const std::optional<T> value = parse_number<T>(text);
    if (!value) {
      throw ConfigError(fmt::format("{} must be a number, got '{}'", where, text));
    }
    field = *value;
  } else {
    static_assert(std::is_same_v<T, std::string>, "a ModelConfig field type the TOML reader does not convert");
    field = text;
  }
}

std::string known_keys() {
  std::string keys;
  model::ModelConfig().visit_fields(
      [&keys](std::string_view name, const auto&) { keys += fmt::format("{}{}", keys.empty() ? "" : ", ", name); });
  return keys;
}

// CLI11 marks the opening and closing of tables with items named "++" and "--"; they carry no value.
bool is_table_marker(const CLI::ConfigItem& item) {
  return item.name == "++" || item.name == "--";
}

}  // namespace

model::ModelConfig read_model_config(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::ifstream input(path);
  if (!input) {
    throw IoError(fmt::format("{}: cannot open the config file", file));
  }
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_config(input);
  } catch (const CLI::Error& e) {
    throw ConfigError(fmt::format("{}: not a TOML file CLI11 can read: {}", file, e.what()));
  }

  model::ModelConfig config;
  bool has_model_table = false;
  std::set<std::string> seen;
  for (const CLI::ConfigItem& item : items) {
    // CLI11 takes `[model]  # comment` for a bare key named "[model] ...", and would then file the table's keys
    // under the previous table; refuse it instead of reading the wrong keys.
    if (!item.name.empty() && item.name.front() == '[') {
      throw ConfigError(
          fmt::format("{}: cannot read the line '{}': a table header must stand alone on its line", file, item.name));
    }
    if (item.parents.empty() || item.parents.front() != kModelTable) {
      continue;  // other tables belong to other readers (TrainConfig)
    }
    has_model_table = true;
    if (is_table_marker(item)) {
      continue;
    }
    // A key of a nested table [model.x] or a dotted key x.y inside [model]: no ModelConfig field has either.
    std::string key = item.name;
    for (size_t i = item.parents.size(); i > 1; --i) {
      key = item.parents[i - 1] + "." + key;
    }
    const std::string where = fmt::format("{}: [model] {}", file, key);
    if (!seen.insert(key).second || item.inputs.size() > 1) {
      // Consecutive repeats are merged by CLI11 into one item with several inputs, like an array is.
      throw ConfigError(fmt::format("{} is given more than once or as an array; it takes one value", where));
    }
    bool known = false;
    config.visit_fields([&](std::string_view name, auto& field) {
      if (item.parents.size() == 1 && name == item.name) {
        known = true;
        assign(where, item.inputs.empty() ? std::string() : item.inputs.front(), field);
      }
    });
    if (!known) {
      throw ConfigError(fmt::format("{}: unknown key '{}' in [model] (known keys: {})", file, key, known_keys()));
    }
  }
  if (!has_model_table) {
    throw ConfigError(fmt::format("{}: no [model] table", file));
  }
  try {
    config.resolve();
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("{}: {}", file, e.what()));
  }
  return config;
}

std::string model_info_report(const std::filesystem::path& file, int64_t context_length, std::string_view dtype) {
  const model::ModelConfig config = read_model_config(file);
  const int64_t context = context_length == 0 ? config.block_size : context_length;
  if (context > config.block_size) {
    throw ConfigError(
        fmt::format("context length {} exceeds block_size {} of {}", context, config.block_size, file.string()));
  }
  return model::format_model_info(config, context, dtype);
}

}  // namespace mlagpt::trainer
