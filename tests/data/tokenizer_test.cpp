// Tokenizers: byte, char and bpe round-trip text exactly (ASCII, multi-byte UTF-8, emoji, CJK, newlines, runs of
// spaces); end-of-text is never produced from text; bad text and bad ids are refused with the problem named;
// save/load reproduces the encodings and the SHA-256; BPE training is deterministic and honours the vocabulary
// size, and refuses sizes that do not fit the corpus.
#include "data/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "data/bpe_tokenizer.h"
#include "data/byte_tokenizer.h"
#include "data/char_tokenizer.h"
#include "data/file_io.h"
#include "data/sha256.h"
#include "data/utf8.h"
#include "launch/error.h"
#include "support/temp_dir.h"

using mlagpt::ConfigError;
using mlagpt::DataError;
using mlagpt::IoError;
using mlagpt::data::Tokenizer;
using mlagpt::testing::TempDir;
using ::testing::HasSubstr;

namespace {

// Text that exercises what tokenizers get wrong: 2-, 3- and 4-byte UTF-8, CJK, emoji, tabs, CR LF, blank lines,
// leading, trailing and repeated spaces, SentencePiece's own space symbol U+2581, and the end-of-text text.
const std::vector<std::string> kHardTexts = {
    "Hello, world!",
    "  leading and trailing spaces  ",
    "runs    of     spaces\tand\ttabs\r\nand CR LF\n\n\nblank lines\n",
    "caf\xC3\xA9 na\xC3\xAFve \xC3\x9F\xC3\xA6\xC3\xB8 \xCE\xB1\xCE\xB2\xCE\xB3",   // café naïve ßæø αβγ
    "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87\xE7\xAB\xA0",     // 日本語の文章
    "emoji \xF0\x9F\x98\x80\xF0\x9F\x9A\x80 and \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",  // 😀🚀 👍🏽
    "\xE2\x96\x81 literal U+2581 \xE2\x96\x81\xE2\x96\x81 twice",                   // ▁ ... ▁▁
    "the text <|endoftext|> is just text",
    std::string("a\0b", 3),
    "\n",
    " ",
    "",
};

// A deterministic corpus of ~50 KB: words made of random syllables (so that BPE has thousands of merges to learn),
// with accented and CJK words and emoji mixed in, and some indented lines.
std::vector<std::string> make_corpus() {
  const std::vector<std::string> syllables = {"ka",
                                              "to",
                                              "ri",
                                              "men",
                                              "sul",
                                              "da",
                                              "po",
                                              "the",
                                              "qu",
                                              "ick",
                                              "an",
                                              "er",
                                              "ing",
                                              "ion",
                                              "st",
                                              "lo",
                                              "caf\xC3\xA9",
                                              "\xC3\xBC"
                                              "b",
                                              "\xE6\x97\xA5",
                                              "\xE8\xAA\x9E",
                                              "\xF0\x9F\x98\x80",
                                              "(",
                                              ")",
                                              "42"};
  std::mt19937 random(7);  // raw draws only: mt19937's output is fixed by the standard, distributions are not
  std::vector<std::string> documents;
  for (int d = 0; d < 40; ++d) {
    std::string document;
    for (int line = 0; line < 20; ++line) {
      document += std::string(random() % 3 == 0 ? 4 : 0, ' ');
      for (int w = 0; w < 8; ++w) {
        for (uint32_t s = 0, n = 1 + random() % 3; s < n; ++s) {
          document += syllables[random() % syllables.size()];
        }
        document += w < 7 ? " " : "\n";
      }
    }
    documents.push_back(document);
  }
  return documents;
}

std::vector<std::string_view> views(const std::vector<std::string>& texts) {
  return {texts.begin(), texts.end()};
}

void expect_round_trips(const Tokenizer& tokenizer, const std::vector<std::string>& texts) {
  for (const std::string& text : texts) {
    const std::vector<int32_t> ids = tokenizer.encode(text);
    EXPECT_EQ(tokenizer.decode(ids), text) << tokenizer.name() << " on \"" << text << "\"";
    EXPECT_TRUE(std::none_of(ids.begin(), ids.end(), [&](int32_t id) { return id == tokenizer.eot_id(); }))
        << tokenizer.name() << " produced end-of-text from \"" << text << "\"";
    EXPECT_TRUE(
        std::all_of(ids.begin(), ids.end(), [&](int32_t id) { return id >= 0 && id < tokenizer.vocab_size(); }));
  }
}

template <typename Exception>
std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Exception& e) {
    return e.what();
  }
  return "no error";
}

// Saves, loads back, and checks that the copy encodes like the original and has the file's SHA-256.
void expect_save_load_identical(const Tokenizer& tokenizer, const std::vector<std::string>& texts) {
  TempDir dir;
  tokenizer.save(dir.path());
  const auto file = dir / mlagpt::data::tokenizer_file_name(tokenizer.name());
  const std::string bytes = mlagpt::data::read_file(file);
  EXPECT_EQ(bytes, tokenizer.model_bytes());
  EXPECT_EQ(tokenizer.sha256(), mlagpt::data::sha256_file_hex(file));
  const auto loaded = mlagpt::data::load_tokenizer(dir.path(), tokenizer.name());
  EXPECT_EQ(loaded->name(), tokenizer.name());
  EXPECT_EQ(loaded->sha256(), tokenizer.sha256());
  EXPECT_EQ(loaded->vocab_size(), tokenizer.vocab_size());
  EXPECT_EQ(loaded->eot_id(), tokenizer.eot_id());
  for (const std::string& text : texts) {
    EXPECT_EQ(loaded->encode(text), tokenizer.encode(text)) << text;
  }
}

}  // namespace

TEST(Sha256, MatchesTheStandardTestVectors) {
  // FIPS 180-2, appendix B.1, and the empty message.
  EXPECT_EQ(mlagpt::data::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(mlagpt::data::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Utf8, RefusesMalformedSequencesNamingTheOffset) {
  using mlagpt::data::check_utf8;
  EXPECT_NO_THROW(check_utf8("plain \xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF"));  // up to U+10FFFF
  EXPECT_THAT(error_of<DataError>([] { check_utf8("ab\xFF"); }), HasSubstr("byte offset 2 (bytes 0xFF)"));
  EXPECT_THAT(error_of<DataError>([] { check_utf8("\xC0\x80"); }), HasSubstr("byte offset 0"));          // overlong NUL
  EXPECT_THAT(error_of<DataError>([] { check_utf8("x\xED\xA0\x80"); }), HasSubstr("byte offset 1"));     // surrogate
  EXPECT_THAT(error_of<DataError>([] { check_utf8("\xF4\x90\x80\x80"); }), HasSubstr("byte offset 0"));  // > 10FFFF
  EXPECT_THAT(error_of<DataError>([] { check_utf8("abc\xE6\x97"); }), HasSubstr("byte offset 3"));       // truncated
  EXPECT_THAT(error_of<DataError>([] { check_utf8("\x80"); }), HasSubstr("byte offset 0"));  // stray continuation
}

TEST(ByteTokenizer, RoundTripsAnyBytes) {
  const auto tokenizer = mlagpt::data::make_byte_tokenizer();
  EXPECT_EQ(tokenizer->name(), "byte");
  EXPECT_EQ(tokenizer->vocab_size(), 257);
  EXPECT_EQ(tokenizer->eot_id(), 256);
  std::vector<std::string> texts = kHardTexts;
  texts.push_back("not UTF-8: \xFF\xFE\xC0\x80");
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) {
    all_bytes += static_cast<char>(b);
  }
  texts.push_back(all_bytes);
  expect_round_trips(*tokenizer, texts);
  EXPECT_EQ(tokenizer->encode("A\xC3\xA9"), (std::vector<int32_t>{65, 0xC3, 0xA9}));
}

TEST(ByteTokenizer, DecodesEndOfTextAndRefusesIdsOutsideTheVocabulary) {
  const auto tokenizer = mlagpt::data::make_byte_tokenizer();
  const std::vector<int32_t> ids = {'a', 256, 'b'};
  EXPECT_EQ(tokenizer->decode(ids), "a<|endoftext|>b");
  const std::vector<int32_t> bad = {'a', 257};
  EXPECT_THAT(error_of<DataError>([&] { tokenizer->decode(bad); }), HasSubstr("token id 257 at position 1"));
}

TEST(CharTokenizer, VocabularyIsTheSortedCharactersOfTheCorpusPlusEndOfText) {
  const std::vector<std::string> corpus = {"hello", "\xC3\xA9t\xC3\xA9 \xF0\x9F\x98\x80"};  // été 😀
  const auto tokenizer = mlagpt::data::build_char_tokenizer(views(corpus));
  // ' ' e h l o t é 😀
  EXPECT_EQ(tokenizer->vocab_size(), 9);
  EXPECT_EQ(tokenizer->eot_id(), 8);
  EXPECT_EQ(tokenizer->encode(" ehlot"), (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(tokenizer->encode("\xC3\xA9\xF0\x9F\x98\x80"), (std::vector<int32_t>{6, 7}));
  const std::vector<int32_t> with_eot = {2, 1, 8, 7};
  EXPECT_EQ(tokenizer->decode(with_eot), "he<|endoftext|>\xF0\x9F\x98\x80");
}

TEST(CharTokenizer, RoundTripsMultiByteText) {
  const auto tokenizer = mlagpt::data::build_char_tokenizer(views(kHardTexts));
  expect_round_trips(*tokenizer, kHardTexts);
}

TEST(CharTokenizer, NamesAnUnknownCharacterAndInvalidUtf8) {
  const std::vector<std::string> corpus = {"abc def\n"};
  const auto tokenizer = mlagpt::data::build_char_tokenizer(views(corpus));
  EXPECT_THAT(error_of<DataError>([&] { tokenizer->encode("bad caf\xC3\xA9"); }),
              HasSubstr("character '\xC3\xA9' (U+00E9) at byte offset 7 is not in its vocabulary"));
  EXPECT_THAT(error_of<DataError>([&] { tokenizer->encode("a\tb"); }), HasSubstr("'\\t' (U+0009) at byte offset 1"));
  EXPECT_THAT(error_of<DataError>([&] { tokenizer->encode("ab\xFF"); }),
              HasSubstr("invalid UTF-8 at byte offset 2 (bytes 0xFF)"));
  const std::vector<std::string> invalid = {"fine", "also fine", "broken \xC3("};
  EXPECT_THAT(error_of<DataError>([&] { mlagpt::data::build_char_tokenizer(views(invalid)); }),
              HasSubstr("text 2: invalid UTF-8 at byte offset 7 (bytes 0xC3 0x28)"));
  const std::vector<std::string> empty = {"", ""};
  EXPECT_THAT(error_of<DataError>([&] { mlagpt::data::build_char_tokenizer(views(empty)); }),
              HasSubstr("no characters"));
}

TEST(BpeTokenizer, RoundTripsAnyUtf8TextWithTheVocabularySizeAsked) {
  const std::vector<std::string> corpus = make_corpus();
  const auto tokenizer = mlagpt::data::train_bpe_tokenizer(views(corpus), 600);
  EXPECT_EQ(tokenizer->name(), "bpe");
  EXPECT_EQ(tokenizer->vocab_size(), 600);
  expect_round_trips(*tokenizer, kHardTexts);
  expect_round_trips(*tokenizer, corpus);
  // It learned something: the corpus takes well under one token per byte.
  const std::vector<int32_t> ids = tokenizer->encode(corpus[0]);
  EXPECT_LT(ids.size() * 3, corpus[0].size());
  const std::vector<int32_t> with_eot = {ids[0], tokenizer->eot_id(), ids[1]};
  EXPECT_EQ(tokenizer->decode(with_eot), tokenizer->decode(std::vector<int32_t>{ids[0]}) + "<|endoftext|>" +
                                             tokenizer->decode(std::vector<int32_t>{ids[1]}));
  EXPECT_THAT(error_of<DataError>([&] { tokenizer->encode("ok \xFF"); }), HasSubstr("invalid UTF-8 at byte offset 3"));
  const std::vector<int32_t> bad = {600};
  EXPECT_THAT(error_of<DataError>([&] { tokenizer->decode(bad); }), HasSubstr("token id 600 at position 0"));
}

TEST(BpeTokenizer, TrainingIsDeterministic) {
  const std::vector<std::string> corpus = make_corpus();
  const auto first = mlagpt::data::train_bpe_tokenizer(views(corpus), 500);
  const auto second = mlagpt::data::train_bpe_tokenizer(views(corpus), 500);
  EXPECT_EQ(first->sha256(), second->sha256());
  EXPECT_EQ(first->model_bytes(), second->model_bytes());
  const auto other = mlagpt::data::train_bpe_tokenizer(views(corpus), 520);
  EXPECT_NE(first->sha256(), other->sha256());
}

TEST(BpeTokenizer, RefusesVocabularySizesThatDoNotFitTheCorpus) {
  const std::vector<std::string> corpus = make_corpus();
  EXPECT_THAT(
      error_of<ConfigError>([&] { mlagpt::data::train_bpe_tokenizer(views(corpus), 270); }),
      HasSubstr("bpe vocabulary size 270 does not fit this corpus: Vocabulary size is smaller than required_chars"));
  EXPECT_THAT(error_of<ConfigError>([&] { mlagpt::data::train_bpe_tokenizer(views(corpus), 100000); }),
              HasSubstr("bpe vocabulary size 100000 does not fit this corpus: Vocabulary size too high"));
  EXPECT_THAT(error_of<ConfigError>([&] { mlagpt::data::train_bpe_tokenizer(views(corpus), 100); }),
              HasSubstr("bpe vocabulary size 100 must be at least 259"));
  const std::vector<std::string> invalid = {"fine\n", "bad \xFF\n"};
  EXPECT_THAT(error_of<DataError>([&] { mlagpt::data::train_bpe_tokenizer(views(invalid), 300); }),
              HasSubstr("training text 1: invalid UTF-8 at byte offset 4"));
}

TEST(TokenizerFiles, SaveAndLoadGiveTheSameEncodingsAndSha256) {
  const std::vector<std::string> corpus = make_corpus();
  expect_save_load_identical(*mlagpt::data::make_byte_tokenizer(), kHardTexts);
  expect_save_load_identical(*mlagpt::data::build_char_tokenizer(views(kHardTexts)), kHardTexts);
  expect_save_load_identical(*mlagpt::data::train_bpe_tokenizer(views(corpus), 400), kHardTexts);
}

TEST(TokenizerFiles, LoadNamesAMissingOrWrongFile) {
  TempDir dir;
  EXPECT_THAT(error_of<IoError>([&] { mlagpt::data::load_tokenizer(dir.path(), "char"); }),
              HasSubstr((dir / "tokenizer.json").string() + ": cannot open"));
  EXPECT_THAT(error_of<ConfigError>([&] { mlagpt::data::load_tokenizer(dir.path(), "word"); }),
              HasSubstr("tokenizer 'word' is not one of byte, char, bpe"));
  mlagpt::data::make_byte_tokenizer()->save(dir.path());
  EXPECT_THAT(error_of<DataError>([&] { mlagpt::data::load_tokenizer(dir.path(), "char"); }),
              HasSubstr("a tokenizer model of type \"byte\", expected \"char\""));
  mlagpt::data::write_file_atomically(dir / "tokenizer.model", "not a model");
  EXPECT_THAT(error_of<DataError>([&] { mlagpt::data::load_tokenizer(dir.path(), "bpe"); }),
              HasSubstr("tokenizer.model: not a SentencePiece model"));
}
