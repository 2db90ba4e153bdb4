// Strict UTF-8 (RFC 3629) decoding and encoding for the char and bpe tokenizers and for `prepare`'s input checks.
//
// Strict means: no overlong forms, no UTF-16 surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no truncated
// sequences. Both tokenizers that work on characters need this to promise decode(encode(text)) == text; the byte
// tokenizer takes any bytes and never calls it. Errors throw DataError naming the byte offset and the bad bytes.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mlagpt::data {

// The code point starting at text[offset] (offset < text.size()); advances `offset` past it. Throws DataError
// "invalid UTF-8 at byte offset N (bytes 0xC3 0x28)" for a malformed sequence.
char32_t next_code_point(std::string_view text, size_t& offset);

// The byte offset of the first malformed sequence, or nullopt when all of `text` is valid UTF-8.
std::optional<size_t> find_invalid_utf8(std::string_view text);

// Throws DataError naming the offset and bytes of the first malformed sequence.
void check_utf8(std::string_view text);

// Appends the UTF-8 encoding of a Unicode scalar value.
void append_utf8(std::string& out, char32_t code_point);

// For messages: "'é' (U+00E9)"; control characters and spaces are shown escaped or named: "'\n' (U+000A)".
std::string describe_code_point(char32_t code_point);

// True for a Unicode scalar value (a code point UTF-8 may encode: not a surrogate, at most U+10FFFF).
bool is_scalar_value(char32_t code_point);

}  // namespace mlagpt::data
