#include "trainer/config_file.h"

#include <CLI/CLI.hpp>

#include <cctype>
#include <fstream>
#include <set>

namespace mlagpt::trainer {
namespace {

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

// CLI11 marks the opening and closing of tables with items named "++" and "--"; they carry no value.
bool is_table_marker(const CLI::ConfigItem& item) {
  return item.name == "++" || item.name == "--";
}

}  // namespace

std::optional<int64_t> parse_integer(std::string_view text) {
  return parse_number<int64_t>(text);
}
std::optional<double> parse_float(std::string_view text) {
  return parse_number<double>(text);
}

std::vector<ConfigValue> read_config_values(const std::filesystem::path& path) {
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
  std::vector<ConfigValue> values;
  std::set<std::string> seen;
  for (const CLI::ConfigItem& item : items) {
    // CLI11 takes `[model]  # comment` for a bare key named "[model] ...", and would then file the table's keys
    // under the previous table; refuse it instead of reading the wrong keys.
    if (!item.name.empty() && item.name.front() == '[') {
      throw ConfigError(
          fmt::format("{}: cannot read the line '{}': a table header must stand alone on its line", file, item.name));
    }
    if (is_table_marker(item)) {
      continue;
    }
    // A key of a nested table [model.x] or a dotted key x.y: no config section has either.
    std::string key = item.name;
    for (size_t i = item.parents.size(); i > 1; --i) {
      key = item.parents[i - 1] + "." + key;
    }
    const std::string section = item.parents.empty() ? std::string() : item.parents.front();
    ConfigValue value{
        section, key, item.inputs.empty() ? std::string() : item.inputs.front(),
        section.empty() ? fmt::format("{}: {}", file, key) : fmt::format("{}: [{}] {}", file, section, key)};
    if (!seen.insert(value.section + "." + key).second || item.inputs.size() > 1) {
      // Consecutive repeats are merged by CLI11 into one item with several inputs, like an array is.
      throw ConfigError(fmt::format("{} is given more than once or as an array; it takes one value", value.where));
    }
    values.push_back(std::move(value));
  }
  return values;
}

std::vector<ConfigValue> parse_overrides(const std::vector<std::string>& arguments) {
  std::vector<ConfigValue> values;
  for (size_t i = 0; i < arguments.size(); ++i) {
    const std::string& argument = arguments[i];
    const auto dot = argument.find('.');
    if (argument.rfind("--", 0) != 0 || dot == std::string::npos) {
      throw ConfigError(
          fmt::format("command line: '{}' is not an option; overrides look like --optim.lr=3e-4", argument));
    }
    std::string name = argument.substr(2);
    std::string value;
    const auto equals = name.find('=');
    if (equals != std::string::npos) {
      value = name.substr(equals + 1);
      name.resize(equals);
    } else if (i + 1 < arguments.size()) {
      value = arguments[++i];
    } else {
      throw ConfigError(fmt::format("command line: --{} needs a value", name));
    }
    const auto section_end = name.find('.');
    values.push_back(
        {name.substr(0, section_end), name.substr(section_end + 1), value, fmt::format("command line: --{}", name)});
  }
  return values;
}

}  // namespace mlagpt::trainer
