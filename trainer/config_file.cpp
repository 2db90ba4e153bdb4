#include "trainer/config_file.h"

#include <fmt/ranges.h>
#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "launch/error.h"

namespace mlagpt::trainer {
namespace {

std::string position(const std::string& file, const toml::source_region& region) {
  return fmt::format("{}:{}:{}", file, region.begin.line, region.begin.column);
}

// The value of one key, typed as the file has it; `where` names the key in messages.
ConfigScalar scalar_of(const toml::node& node, const std::string& where) {
  switch (node.type()) {
    case toml::node_type::boolean: return node.as_boolean()->get();
    case toml::node_type::integer: return node.as_integer()->get();
    case toml::node_type::floating_point: return node.as_floating_point()->get();
    case toml::node_type::string: return node.as_string()->get();
    case toml::node_type::array:
      throw ConfigError(fmt::format("{} is an array; a config field takes one value", where));
    case toml::node_type::table:
      throw ConfigError(fmt::format("{} is a table; a config section holds only keys with plain values", where));
    default:
      throw ConfigError(
          fmt::format("{} is a date or time; a config field takes a boolean, a number or a string", where));
  }
}

// Line `line` (from 1) of `text`, for messages about a file that is not TOML.
std::string_view line_of(std::string_view text, size_t line) {
  for (size_t i = 1; i < line && !text.empty(); ++i) {
    const size_t end = text.find('\n');
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
  }
  const std::string_view found = text.substr(0, text.find('\n'));
  return found.substr(0, found.find_last_not_of("\r") + 1);
}

struct Located {
  toml::source_position at;
  ConfigValue value;
};

}  // namespace

std::vector<ConfigValue> read_config_values(const std::filesystem::path& path,
                                            const std::vector<std::string>& sections) {
  const std::string file = path.string();
  std::ifstream input(path, std::ios::binary);
  if (!input) {
    throw IoError(fmt::format("{}: cannot open the config file", file));
  }
  std::ostringstream buffer;
  buffer << input.rdbuf();
  const std::string text = buffer.str();
  toml::table root;
  try {
    root = toml::parse(text, file);
  } catch (const toml::parse_error& e) {
    throw ConfigError(fmt::format("{}: {} (the line: {})", position(file, e.source()), e.description(),
                                  line_of(text, e.source().begin.line)));
  }
  std::vector<Located> values;
  const auto add = [&](const std::string& section, const toml::key& key, const toml::node& node) {
    const toml::source_region& at = key.source().begin.line != 0 ? key.source() : node.source();
    const std::string name = section.empty() ? std::string(key.str()) : fmt::format("[{}] {}", section, key.str());
    const std::string where = fmt::format("{}: {}", position(file, at), name);
    values.push_back({at.begin, ConfigValue{section, std::string(key.str()), scalar_of(node, where), where}});
  };
  for (const auto& [name, node] : root) {
    if (node.is_array_of_tables()) {
      throw ConfigError(fmt::format("{}: [[{}]] is an array of tables; config sections are plain [tables]",
                                    position(file, node.source()), name.str()));
    }
    const toml::table* section = node.as_table();
    if (section == nullptr) {
      add("", name, node);  // a key before any table; the caller decides whether it may be there
      continue;
    }
    if (!sections.empty() && std::find(sections.begin(), sections.end(), name.str()) == sections.end()) {
      throw ConfigError(fmt::format("{}: unknown section [{}] (sections: {})", position(file, node.source()),
                                    name.str(), fmt::join(sections, ", ")));
    }
    for (const auto& [key, value] : *section) {
      if (value.is_table()) {
        throw ConfigError(
            fmt::format("{}: [{}.{}] is a nested table; a config section holds only keys with plain "
                        "values",
                        position(file, value.source()), name.str(), key.str()));
      }
      add(std::string(name.str()), key, value);
    }
  }
  // toml++ keeps a table's keys sorted by name; give them back in the order of the file.
  std::stable_sort(values.begin(), values.end(), [](const Located& a, const Located& b) {
    return a.at.line != b.at.line ? a.at.line < b.at.line : a.at.column < b.at.column;
  });
  std::vector<ConfigValue> ordered;
  ordered.reserve(values.size());
  for (Located& v : values) {
    ordered.push_back(std::move(v.value));
  }
  return ordered;
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
    values.push_back({name.substr(0, section_end), name.substr(section_end + 1), CommandLineText{value},
                      fmt::format("command line: --{}", name)});
  }
  return values;
}

}  // namespace mlagpt::trainer
