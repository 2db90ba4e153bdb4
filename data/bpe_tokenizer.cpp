#include "data/bpe_tokenizer.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <array>
#include <exception>
#include <limits>
#include <unordered_map>

#include "data/file_io.h"
#include "data/utf8.h"
#include "launch/error.h"

namespace mlagpt::data {
namespace {

// U+2581, which SentencePiece uses for a space and decodes back to one.
constexpr std::string_view kSentencePieceSpace = "\xE2\x96\x81";
constexpr std::string_view kEndOfTextPiece = "<|endoftext|>";
// SentencePiece skips training sentences longer than its max_sentence_length; cut longer lines into pieces of
// this size instead (at character boundaries), so that no text is silently left out of training.
constexpr size_t kMaxTrainingSentenceBytes = 1 << 16;

// Calls on_text(segment) for each stretch of `text` up to and including a '\n' and on_space() for each literal
// U+2581, in order; the segments never contain U+2581.
template <typename OnText, typename OnSpace>
void for_each_segment(std::string_view text, OnText&& on_text, OnSpace&& on_space) {
  size_t start = 0;
  while (start < text.size()) {
    const size_t newline = text.find('\n', start);
    const size_t line_end = newline == std::string_view::npos ? text.size() : newline + 1;
    size_t position = start;
    // U+2581 inside the line: emit the text before it, then the character itself.
    for (size_t space = text.substr(0, line_end).find(kSentencePieceSpace, position); space != std::string_view::npos;
         space = text.substr(0, line_end).find(kSentencePieceSpace, position)) {
      if (space > position) {
        on_text(text.substr(position, space - position));
      }
      on_space();
      position = space + kSentencePieceSpace.size();
    }
    if (line_end > position) {
      on_text(text.substr(position, line_end - position));
    }
    start = line_end;
  }
}

// SentencePiece's message without the source location and failed expression it starts with
// ("./src/trainer_interface.cc(660) [(a) == (b)] Vocabulary size too high ...").
std::string status_message(const sentencepiece::util::Status& status) {
  std::string message = status.ok() ? "ok" : status.message();
  if (message.starts_with("./src/")) {
    if (const size_t end = message.find("] "); end != std::string::npos) {
      message.erase(0, end + 2);
    }
  }
  return message;
}

class BpeTokenizer final : public Tokenizer {
 public:
  // `model_bytes`: a serialized SentencePiece ModelProto; `origin` names it in messages (a file, or "trained").
  BpeTokenizer(std::string model_bytes, const std::string& origin) : Tokenizer(std::move(model_bytes)) {
    const sentencepiece::util::Status status = processor_.LoadFromSerializedProto(this->model_bytes());
    if (!status.ok()) {
      throw DataError(fmt::format("{}: not a SentencePiece model: {}", origin, status_message(status)));
    }
    vocab_size_ = processor_.GetPieceSize();
    eot_id_ = processor_.PieceToId(kEndOfTextPiece);
    if (eot_id_ == processor_.unk_id() || !processor_.IsControl(eot_id_)) {
      throw DataError(fmt::format("{}: SentencePiece model has no control piece \"{}\" (not trained by mlagpt)", origin,
                                  kEndOfTextPiece));
    }
    for (int byte = 0; byte < 256; ++byte) {
      const int id = processor_.PieceToId(fmt::format("<0x{:02X}>", byte));
      if (id == processor_.unk_id() || !processor_.IsByte(id)) {
        throw DataError(
            fmt::format("{}: SentencePiece model has no byte fallback piece <0x{:02X}> (not trained by "
                        "mlagpt; byte_fallback is needed to encode any text)",
                        origin, byte));
      }
      byte_ids_[static_cast<size_t>(byte)] = id;
    }
    // Normalization and whitespace options are not visible through SentencePiece's public API; check their effect.
    const std::string probe = "  two spaces, a\ttab\r\n\n \xE2\x96\x81 caf\xC3\xA9 \xF0\x9F\x98\x80  ";
    if (decode(encode(probe)) != probe) {
      throw DataError(
          fmt::format("{}: SentencePiece model does not round-trip text (trained with normalization or "
                      "whitespace folding; not trained by mlagpt)",
                      origin));
    }
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    check_utf8(text);
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3);
    std::vector<int> piece_ids;
    for_each_segment(
        text,
        [&](std::string_view segment) {
          const sentencepiece::util::Status status = processor_.Encode(segment, &piece_ids);
          if (!status.ok()) {
            throw DataError(fmt::format("bpe tokenizer: SentencePiece cannot encode the text at byte offset {}: {}",
                                        segment.data() - text.data(), status_message(status)));
          }
          ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
        },
        [&] {
          for (const char byte : kSentencePieceSpace) {
            ids.push_back(byte_ids_[static_cast<unsigned char>(byte)]);
          }
        });
    return ids;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string text;
    std::vector<int> run;  // ids between end-of-text tokens, which SentencePiece decodes to nothing
    const auto flush = [&] {
      std::string piece;
      const sentencepiece::util::Status status = processor_.Decode(run, &piece);
      if (!status.ok()) {
        throw DataError(fmt::format("bpe tokenizer: SentencePiece cannot decode: {}", status_message(status)));
      }
      text += piece;
      run.clear();
    };
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= vocab_size()) {
        throw DataError(fmt::format("bpe tokenizer: token id {} at position {} is outside the vocabulary of {}", ids[i],
                                    i, vocab_size()));
      }
      if (ids[i] == eot_id_) {
        flush();
        text += kEndOfTextText;
      } else {
        run.push_back(ids[i]);
      }
    }
    flush();
    return text;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  int32_t eot_id() const override { return eot_id_; }
  std::string name() const override { return "bpe"; }

 private:
  sentencepiece::SentencePieceProcessor processor_;  // Encode and Decode are const and thread-safe
  int64_t vocab_size_ = 0;
  int32_t eot_id_ = 0;
  std::array<int32_t, 256> byte_ids_{};
};

// Feeds SentencePiece's trainer: pulls texts from the source and hands out their lines (see for_each_segment),
// cut to kMaxTrainingSentenceBytes. An exception from the source or a malformed text ends the iteration with an
// error status; train_bpe_tokenizer rethrows it once SentencePiece has returned, rather than letting it unwind
// through SentencePiece's frames.
class TrainingSentences final : public sentencepiece::SentenceIterator {
 public:
  explicit TrainingSentences(const TextSource& texts) : texts_(texts) { Next(); }

  bool done() const override { return done_; }
  const std::string& value() const override { return sentences_[next_ - 1]; }
  sentencepiece::util::Status status() const override {
    if (error_) {
      return {sentencepiece::util::StatusCode::kAborted, "reading the training texts failed"};
    }
    return {};
  }
  void Next() override {
    while (next_ == sentences_.size() && !done_) {
      refill();
    }
    if (next_ < sentences_.size()) {
      ++next_;
    }
  }

  std::exception_ptr error() const { return error_; }
  int64_t texts_read() const { return texts_read_; }

 private:
  void refill() {
    sentences_.clear();
    next_ = 0;
    try {
      if (!texts_(text_)) {
        done_ = true;
        return;
      }
      try {
        check_utf8(text_);
      } catch (const DataError& e) {
        throw DataError(fmt::format("bpe tokenizer: training text {}: {}", texts_read_, e.what()));
      }
      ++texts_read_;
      for_each_segment(
          text_, [&](std::string_view segment) { add_sentence(segment); }, [] {});
    } catch (...) {
      error_ = std::current_exception();
      done_ = true;
      sentences_.clear();
    }
  }

  void add_sentence(std::string_view line) {
    while (line.size() > kMaxTrainingSentenceBytes) {
      size_t cut = kMaxTrainingSentenceBytes;
      while ((static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) {
        --cut;  // back up to the start of a character
      }
      sentences_.emplace_back(line.substr(0, cut));
      line.remove_prefix(cut);
    }
    if (!line.empty()) {
      sentences_.emplace_back(line);
    }
  }

  const TextSource& texts_;
  std::string text_;
  std::vector<std::string> sentences_;
  size_t next_ = 0;  // sentences_[next_ - 1] is the current sentence
  bool done_ = false;
  std::exception_ptr error_;
  int64_t texts_read_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> train_bpe_tokenizer(const TextSource& texts, int64_t vocab_size) {
  // Below this SentencePiece cannot even hold its fixed pieces; its own check then names the corpus's need.
  constexpr int64_t kMinimum = 2 + 256 + 1;  // <unk>, end-of-text, the bytes, one character
  if (vocab_size < kMinimum || vocab_size > std::numeric_limits<int32_t>::max()) {
    throw ConfigError(
        fmt::format("bpe vocabulary size {} must be at least {} (<unk>, <|endoftext|>, 256 byte "
                    "pieces and the corpus's characters) and fit in int32",
                    vocab_size, kMinimum));
  }
  const std::unordered_map<std::string, std::string> options = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "false"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},  // runs of spaces (indentation) may become pieces
      {"control_symbols", std::string(kEndOfTextPiece)},
      {"unk_id", "0"},
      {"bos_id", "-1"},
      {"eos_id", "-1"},
      {"pad_id", "-1"},
      {"num_threads", "1"},          // see the header: recorded in the model, and no faster with more
      {"input_sentence_size", "0"},  // every sentence: no sampling, so nothing random
      {"shuffle_input_sentence", "false"},
      {"max_sentence_length", std::to_string(kMaxTrainingSentenceBytes)},
      {"minloglevel", "2"},  // SentencePiece's progress lines and warnings off; its errors come back as a status
  };
  TrainingSentences sentences(texts);
  std::string model;
  const sentencepiece::util::Status status = sentencepiece::SentencePieceTrainer::Train(options, &sentences, &model);
  if (sentences.error()) {
    std::rethrow_exception(sentences.error());
  }
  if (!status.ok()) {
    const std::string message = status_message(status);
    if (sentences.texts_read() == 0) {
      throw DataError(fmt::format("bpe tokenizer: no training text ({})", message));
    }
    if (message.find("Vocabulary size") != std::string::npos) {
      throw ConfigError(fmt::format("bpe vocabulary size {} does not fit this corpus: {}", vocab_size, message));
    }
    throw DataError(fmt::format("bpe tokenizer: SentencePiece training failed: {}", message));
  }
  return std::make_unique<BpeTokenizer>(std::move(model), "trained bpe tokenizer");
}

std::unique_ptr<Tokenizer> train_bpe_tokenizer(const std::vector<std::string_view>& texts, int64_t vocab_size) {
  size_t next = 0;
  return train_bpe_tokenizer(
      [&](std::string& text) {
        if (next == texts.size()) {
          return false;
        }
        text.assign(texts[next++]);
        return true;
      },
      vocab_size);
}

std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::filesystem::path& file) {
  return std::make_unique<BpeTokenizer>(read_file(file), file.string());
}

}  // namespace mlagpt::data
