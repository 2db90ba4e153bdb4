#include "data/utf8.h"

#include <fmt/format.h>

#include "launch/error.h"

namespace mlagpt::data {
namespace {

// Decodes the sequence at text[offset]; returns its length, or 0 when it is malformed.
size_t decode_sequence(std::string_view text, size_t offset, char32_t& code_point) {
  const auto lead = static_cast<unsigned char>(text[offset]);
  if (lead < 0x80) {
    code_point = lead;
    return 1;
  }
  size_t length = 0;
  char32_t minimum = 0;  // the smallest value that needs this many bytes; below it the form is overlong
  if ((lead & 0xE0) == 0xC0) {
    length = 2, minimum = 0x80, code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3, minimum = 0x800, code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4, minimum = 0x10000, code_point = lead & 0x07;
  } else {
    return 0;  // a continuation byte or 0xF8..0xFF where a sequence should start
  }
  if (offset + length > text.size()) {
    return 0;
  }
  for (size_t i = 1; i < length; ++i) {
    const auto next = static_cast<unsigned char>(text[offset + i]);
    if ((next & 0xC0) != 0x80) {
      return 0;
    }
    code_point = (code_point << 6) | (next & 0x3F);
  }
  if (code_point < minimum || !is_scalar_value(code_point)) {
    return 0;
  }
  return length;
}

[[noreturn]] void throw_invalid(std::string_view text, size_t offset) {
  std::string bytes;
  for (size_t i = offset; i < text.size() && i < offset + 4; ++i) {
    bytes += fmt::format("{}0x{:02X}", bytes.empty() ? "" : " ", static_cast<unsigned char>(text[i]));
  }
  throw DataError(fmt::format("invalid UTF-8 at byte offset {} (bytes {})", offset, bytes));
}

}  // namespace

bool is_scalar_value(char32_t code_point) {
  return code_point <= 0x10FFFF && (code_point < 0xD800 || code_point > 0xDFFF);
}

char32_t next_code_point(std::string_view text, size_t& offset) {
  char32_t code_point = 0;
  const size_t length = decode_sequence(text, offset, code_point);
  if (length == 0) {
    throw_invalid(text, offset);
  }
  offset += length;
  return code_point;
}

std::optional<size_t> find_invalid_utf8(std::string_view text) {
  size_t offset = 0;
  while (offset < text.size()) {
    // Runs of ASCII, the common case, need no decoding.
    if (static_cast<unsigned char>(text[offset]) < 0x80) {
      ++offset;
      continue;
    }
    char32_t code_point = 0;
    const size_t length = decode_sequence(text, offset, code_point);
    if (length == 0) {
      return offset;
    }
    offset += length;
  }
  return std::nullopt;
}

void check_utf8(std::string_view text) {
  if (const std::optional<size_t> bad = find_invalid_utf8(text)) {
    throw_invalid(text, *bad);
  }
}

void append_utf8(std::string& out, char32_t code_point) {
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else if (code_point < 0x10000) {
    out += static_cast<char>(0xE0 | (code_point >> 12));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code_point >> 18));
    out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  }
}

std::string describe_code_point(char32_t code_point) {
  std::string shown;
  switch (code_point) {
    case '\n': shown = "'\\n'"; break;
    case '\r': shown = "'\\r'"; break;
    case '\t': shown = "'\\t'"; break;
    case ' ': shown = "' '"; break;
    default:
      // Other C0/C1 controls would garble a terminal; name them by number only.
      if (!is_scalar_value(code_point)) {
        shown = "not a Unicode scalar value";
      } else if (code_point < 0x20 || (code_point >= 0x7F && code_point < 0xA0)) {
        shown = "a control character";
      } else {
        shown = "'";
        append_utf8(shown, code_point);
        shown += "'";
      }
  }
  return fmt::format("{} (U+{:04X})", shown, static_cast<uint32_t>(code_point));
}

}  // namespace mlagpt::data
