#include "model/config_value.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <charconv>
#include <limits>

namespace mlagpt::model {
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

}  // namespace

std::optional<int64_t> parse_integer(std::string_view text) {
  return parse_number<int64_t>(text);
}
std::optional<double> parse_float(std::string_view text) {
  return parse_number<double>(text);
}

std::string describe(const ConfigScalar& value) {
  struct Describe {
    std::string operator()(bool b) const { return fmt::format("the boolean {}", b); }
    std::string operator()(int64_t i) const { return fmt::format("the integer {}", i); }
    std::string operator()(double d) const { return fmt::format("the float {}", d); }
    std::string operator()(const std::string& s) const { return fmt::format("the string \"{}\"", s); }
    std::string operator()(const CommandLineText& t) const { return fmt::format("'{}'", t.text); }
  };
  return std::visit(Describe{}, value);
}

ConfigScalar config_scalar_from_json(const nlohmann::json& json, std::string_view where) {
  switch (json.type()) {
    case nlohmann::json::value_t::boolean: return json.get<bool>();
    case nlohmann::json::value_t::number_integer: return json.get<int64_t>();
    case nlohmann::json::value_t::number_unsigned:
      if (json.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        throw ConfigError(fmt::format("{}: {} does not fit a 64-bit integer", where, json.dump()));
      }
      return json.get<int64_t>();
    case nlohmann::json::value_t::number_float: return json.get<double>();
    case nlohmann::json::value_t::string: return json.get<std::string>();
    default:
      throw ConfigError(
          fmt::format("{} must be a single value (boolean, number or string), got {}", where, json.dump()));
  }
}

namespace detail {

void throw_wrong_type(const ConfigValue& value, std::string_view wanted) {
  throw ConfigError(fmt::format("{} must be {}, got {}", value.where, wanted, describe(value.value)));
}

bool parse_bool_text(const ConfigValue& value) {
  const std::string& text = std::get<CommandLineText>(value.value).text;
  if (text != "true" && text != "false") {
    throw ConfigError(fmt::format("{} must be true or false, got '{}'", value.where, text));
  }
  return text == "true";
}

int64_t parse_integer_text(const ConfigValue& value) {
  const std::string& text = std::get<CommandLineText>(value.value).text;
  const std::optional<int64_t> parsed = parse_integer(text);
  if (!parsed) {
    throw ConfigError(fmt::format("{} must be an integer, got '{}'", value.where, text));
  }
  return *parsed;
}

double parse_float_text(const ConfigValue& value) {
  const std::string& text = std::get<CommandLineText>(value.value).text;
  const std::optional<double> parsed = parse_float(text);
  if (!parsed) {
    throw ConfigError(fmt::format("{} must be a number, got '{}'", value.where, text));
  }
  return *parsed;
}

}  // namespace detail
}  // namespace mlagpt::model
