#include "data/prepare.h"

#include <spdlog/spdlog.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>

#include "data/bpe_tokenizer.h"
#include "data/byte_tokenizer.h"
#include "data/char_tokenizer.h"
#include "data/file_io.h"
#include "data/progress_meter.h"
#include "data/sha256.h"
#include "data/split_writer.h"
#include "data/tokenizer.h"
#include "data/utf8.h"
#include "launch/error.h"

namespace mlagpt::data {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Text tokenized per parallel batch: enough to keep every thread busy (starting threads costs microseconds), little
// enough for memory to stay small and the progress bar to move.
constexpr size_t kBatchBytes = size_t{4} << 20;
// Documents a tokenizing thread claims at a time (many documents are a few hundred bytes).
constexpr size_t kDocumentsPerClaim = 16;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The document's position in [0, 1) for the train/val split (see prepare.h).
double split_value(uint64_t seed, std::string_view text, Sha256& hash) {
  char seed_bytes[8];
  for (int i = 0; i < 8; ++i) {
    seed_bytes[i] = static_cast<char>((seed >> (8 * i)) & 0xFF);
  }
  const Sha256Digest digest = hash.update(std::string_view(seed_bytes, 8)).update(text).finish();
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) {
    value = (value << 8) | digest[static_cast<size_t>(i)];
  }
  return static_cast<double>(value >> 11) * 0x1.0p-53;  // the top 53 bits: exact in a double, below 1
}

[[noreturn]] void throw_inputs_changed() {
  throw DataError(
      "the input files changed while prepare was reading them (a different number of documents on "
      "the second reading); run prepare again once they are stable");
}

// ---- the output directory -------------------------------------------------------------------------------------

// The files a dataset consists of, and the temporary names they are written under: what a new dataset replaces.
bool is_dataset_file(const std::string& name) {
  std::string_view rest = name;
  const auto strip_temporary_suffix = [&rest] {
    if (const size_t at = rest.rfind(".tmp-"); at != std::string_view::npos) {
      const std::string_view pid = rest.substr(at + 5);
      if (!pid.empty() && pid.find_first_not_of("0123456789") == std::string_view::npos) {
        rest = rest.substr(0, at);
      }
    }
  };
  strip_temporary_suffix();
  if (rest == kManifestName || rest == tokenizer_file_name("byte") || rest == tokenizer_file_name("bpe")) {
    return true;
  }
  for (const std::string_view split : {"train_", "val_"}) {
    if (rest.starts_with(split) && rest.ends_with(".h5")) {
      const std::string_view digits = rest.substr(split.size(), rest.size() - split.size() - 3);
      return digits.size() >= 5 && digits.find_first_not_of("0123456789") == std::string_view::npos;
    }
  }
  return false;
}

// Refuses (ConfigError) an output directory that holds a different dataset, unless `force`.
void check_output_dir(const fs::path& out, const DatasetOptions& options, bool force) {
  std::error_code error;
  if (fs::exists(out, error) && !fs::is_directory(out, error)) {
    throw ConfigError(fmt::format("--out {}: exists and is not a directory", out.string()));
  }
  const fs::path manifest = out / kManifestName;
  if (force || !fs::exists(manifest, error)) {
    return;
  }
  DatasetManifest existing;
  try {
    existing = read_dataset_manifest(out);
  } catch (const Error& e) {
    throw ConfigError(
        fmt::format("--out {}: holds a {} that is not a dataset manifest mlagpt can read ({}); use "
                    "--force to replace it",
                    out.string(), kManifestName, e.what()));
  }
  const std::vector<std::string> differences = option_differences(existing.options, options);
  if (!differences.empty()) {
    throw ConfigError(
        fmt::format("--out {}: already holds a different dataset (differing: {}); use --force to "
                    "replace it, or choose another --out",
                    out.string(), fmt::join(differences, "; ")));
  }
  spdlog::info("[data] {} holds a dataset prepared with the same options: rebuilding it", out.string());
}

// Creates `out` and removes every file of a previous dataset, the manifest first, so that no manifest ever lists
// a shard that is gone or being rewritten.
void clear_output_dir(const fs::path& out) {
  fs::create_directories(out);
  std::error_code error;
  fs::remove(out / kManifestName, error);
  if (error) {
    throw IoError(fmt::format("{}: cannot remove: {}", (out / kManifestName).string(), error.message()));
  }
  fsync_directory(out);
  int removed = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(out)) {
    if (entry.is_regular_file() && is_dataset_file(entry.path().filename().string())) {
      fs::remove(entry.path());
      ++removed;
    }
  }
  if (removed > 0) {
    spdlog::info("[data] removed {} files of the previous dataset in {}", removed, out.string());
    fsync_directory(out);
  }
}

// Drops the files inside `out`: `--input corpus/ --out corpus/tokens` must not read the previous dataset's shards
// as text.
std::vector<fs::path> without_output_dir(std::vector<fs::path> files, const fs::path& out) {
  std::error_code error;
  const fs::path root = fs::weakly_canonical(out, error);
  if (error) {
    return files;
  }
  const auto inside = [&](const fs::path& file) {
    const fs::path relative = fs::weakly_canonical(file, error).lexically_relative(root);
    return !error && !relative.empty() && *relative.begin() != "..";
  };
  const auto removed = std::remove_if(files.begin(), files.end(), inside);
  if (removed != files.end()) {
    spdlog::info("[data] not reading the {} input files inside --out {}", files.end() - removed, out.string());
    files.erase(removed, files.end());
  }
  if (files.empty()) {
    throw IoError(fmt::format("no input files outside --out {}", out.string()));
  }
  return files;
}

// ---- pass 1: scan ---------------------------------------------------------------------------------------------

struct Scan {
  // By document index: the byte where the document's val part begins. 0: all of it is val; its size: all of it is
  // train; in between: a long (or the only) document split inside (see prepare.h).
  std::vector<int64_t> val_begin;
  int64_t text_bytes = 0;
  int64_t train_bytes = 0;
  CharVocabularyBuilder characters;  // filled for the char tokenizer only
};

// Where the val tail of `text` begins when the document is split inside (prepare.h): the first line start at or
// after the point that leaves val_fraction of the bytes to val; failing that (no line starts there), the last line
// start before it; failing that (a single line), the first character boundary at or after it. 0 when the text
// cannot be split into two non-empty parts.
int64_t tail_begin(std::string_view text, double val_fraction) {
  const auto size = static_cast<int64_t>(text.size());
  const int64_t target = size - static_cast<int64_t>(std::ceil(static_cast<double>(size) * val_fraction));
  if (target <= 0 || target >= size) {
    return 0;
  }
  // A line starts after every '\n'; the first start at or after target follows the first '\n' at or after target-1.
  if (const size_t newline = text.find('\n', static_cast<size_t>(target - 1));
      newline != std::string_view::npos && static_cast<int64_t>(newline) + 1 < size) {
    return static_cast<int64_t>(newline) + 1;
  }
  if (const size_t newline = text.rfind('\n', static_cast<size_t>(target - 1)); newline != std::string_view::npos) {
    return static_cast<int64_t>(newline) + 1;
  }
  int64_t at = target;
  while (at < size && (static_cast<unsigned char>(text[static_cast<size_t>(at)]) & 0xC0) == 0x80) {
    ++at;  // a UTF-8 continuation byte: not a character boundary
  }
  return at < size ? at : 0;
}

Scan scan_corpus(const std::vector<fs::path>& files, const PrepareConfig& config, bool split_on_percent,
                 int64_t file_bytes) {
  Scan scan;
  DocumentReader reader(files, split_on_percent);
  ProgressMeter meter("reading", file_bytes);
  Sha256 hash;
  Document document;
  std::vector<int64_t> bytes;  // per document, to move documents between splits below
  int64_t only_tail = 0;       // tail_begin of the first document
  while (reader.next(document)) {
    try {
      if (config.tokenizer == "char") {
        scan.characters.add(document.text);  // checks UTF-8 too
      } else if (config.tokenizer == "bpe") {
        check_utf8(document.text);
      }
    } catch (const DataError& e) {
      throw DataError(
          fmt::format("{}: in the document starting on this line: {}; the {} tokenizer needs UTF-8 "
                      "text (--tokenizer byte takes any bytes)",
                      reader.where(document), e.what(), config.tokenizer));
    }
    const auto size = static_cast<int64_t>(document.text.size());
    const int64_t tail = config.val_fraction > 0 ? tail_begin(document.text, config.val_fraction) : 0;
    if (size >= kLongDocumentBytes && tail > 0) {
      scan.val_begin.push_back(tail);
    } else {
      scan.val_begin.push_back(split_value(config.seed, document.text, hash) < config.val_fraction ? 0 : size);
    }
    if (scan.val_begin.size() == 1) {
      only_tail = tail;  // used when this turns out to be the only document
    }
    bytes.push_back(size);
    meter.update(reader.bytes_read());
  }
  meter.finish();
  const size_t count = scan.val_begin.size();
  if (count == 0) {
    throw DataError(fmt::format("no documents in the input: the {} input files hold no text ({}{})", files.size(),
                                files.front().string(), files.size() > 1 ? ", ..." : ""));
  }
  if (config.val_fraction > 0) {
    if (count == 1) {
      if (only_tail == 0) {
        throw DataError(
            fmt::format("the input holds a single document ({}) too short to split into train and val "
                        "(--val-fraction {}); give more text or --val-fraction 0",
                        files.front().string(), config.val_fraction));
      }
      scan.val_begin.front() = only_tail;
      spdlog::info("[data] the input is a single document: its last {} bytes ({:.1f}%) are the val split",
                   bytes.front() - only_tail,
                   100.0 * static_cast<double>(bytes.front() - only_tail) / static_cast<double>(bytes.front()));
    }
    // Neither split may be empty: with no val part anywhere the last document moves to val, with no train part
    // the first moves to train.
    bool any_val = false;
    bool any_train = false;
    for (size_t i = 0; i < count; ++i) {
      any_val = any_val || scan.val_begin[i] < bytes[i];
      any_train = any_train || scan.val_begin[i] > 0;
    }
    if (!any_val) {
      scan.val_begin.back() = 0;
    }
    if (!any_train) {
      scan.val_begin.front() = bytes.front();
    }
  }
  for (size_t i = 0; i < count; ++i) {
    scan.text_bytes += bytes[i];
    scan.train_bytes += scan.val_begin[i];
  }
  return scan;
}

// ---- the tokenizer --------------------------------------------------------------------------------------------

std::unique_ptr<Tokenizer> build_tokenizer(const PrepareConfig& config, const Scan& scan,
                                           const std::vector<fs::path>& files, bool split_on_percent) {
  if (config.tokenizer == "byte") {
    return make_byte_tokenizer();
  }
  if (config.tokenizer == "char") {
    return scan.characters.build();
  }
  // bpe: the train documents; beyond kMaxBpeTrainingBytes, those whose split value falls in the first `keep`
  // part of the train range [val_fraction, 1) (documents moved to train by the at-least-one rule always count).
  const double keep = std::min(1.0, static_cast<double>(kMaxBpeTrainingBytes) / static_cast<double>(scan.train_bytes));
  const double upper = config.val_fraction + (1 - config.val_fraction) * keep;
  spdlog::info("[data] training the bpe tokenizer (vocab {}) on {:.1f} MB of train text{}", config.vocab_size,
               static_cast<double>(scan.train_bytes) * keep / 1e6, keep < 1 ? " (a seeded sample)" : "");
  DocumentReader reader(files, split_on_percent);
  Document document;
  Sha256 hash;
  size_t index = 0;
  const TextSource source = [&](std::string& text) {
    while (reader.next(document)) {
      if (index == scan.val_begin.size()) {
        throw_inputs_changed();
      }
      const int64_t train_part = scan.val_begin[index++];
      if (train_part == 0 || (keep < 1 && split_value(config.seed, document.text, hash) >= upper)) {
        continue;
      }
      document.text.resize(static_cast<size_t>(train_part));  // a split document's val tail never reaches it
      text = std::move(document.text);
      return true;
    }
    return false;
  };
  return train_bpe_tokenizer(source, config.vocab_size);
}

// ---- pass 2: tokenize and write -------------------------------------------------------------------------------

// Encodes every document of `batch` with `threads` threads; results by document index, so the output does not
// depend on which thread finished first. An error is reported for the lowest failing index, naming its place.
std::vector<std::vector<int32_t>> encode_batch(const Tokenizer& tokenizer, const std::vector<Document>& batch,
                                               int threads, const DocumentReader& reader) {
  std::vector<std::vector<int32_t>> ids(batch.size());
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex failure_mutex;
  size_t failure_index = std::numeric_limits<size_t>::max();
  std::exception_ptr failure;
  const auto work = [&] {
    for (size_t begin = next.fetch_add(kDocumentsPerClaim); begin < batch.size() && !failed;
         begin = next.fetch_add(kDocumentsPerClaim)) {
      for (size_t i = begin; i < std::min(begin + kDocumentsPerClaim, batch.size()); ++i) {
        try {
          ids[i] = tokenizer.encode(batch[i].text);
        } catch (...) {
          const std::lock_guard<std::mutex> lock(failure_mutex);
          if (i < failure_index) {
            failure_index = i;
            failure = std::current_exception();
          }
          failed = true;
          break;
        }
      }
    }
  };
  const size_t helpers =
      std::min<size_t>(static_cast<size_t>(threads), (batch.size() + kDocumentsPerClaim - 1) / kDocumentsPerClaim) - 1;
  {
    std::vector<std::jthread> pool;
    for (size_t t = 0; t < helpers; ++t) {
      pool.emplace_back(work);
    }
    work();
  }
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const DataError& e) {
      throw DataError(
          fmt::format("{}: in the document starting on this line: {}", reader.where(batch[failure_index]), e.what()));
    }
  }
  return ids;
}

struct Splits {
  SplitRecord train;
  SplitRecord val;
};

Splits tokenize_and_write(const PrepareConfig& config, const Scan& scan, const Tokenizer& tokenizer,
                          const std::vector<fs::path>& files, bool split_on_percent, int threads) {
  const ShardInfo info{tokenizer.vocab_size(), tokenizer.eot_id(), tokenizer.name(), tokenizer.sha256()};
  SplitWriter train(config.out, "train", info, config.shard_tokens);
  SplitWriter val(config.out, "val", info, config.shard_tokens);
  DocumentReader reader(files, split_on_percent);
  ProgressMeter meter("tokenizing", scan.text_bytes);
  std::vector<Document> batch;  // documents, and the two parts of a document split inside, in order
  std::vector<bool> to_val;     // by batch entry
  size_t index = 0;
  int64_t done_bytes = 0;
  for (bool more = true; more;) {
    batch.clear();
    to_val.clear();
    size_t batch_bytes = 0;
    Document document;
    while (batch_bytes < kBatchBytes && (more = reader.next(document))) {
      if (index == scan.val_begin.size()) {
        throw_inputs_changed();
      }
      batch_bytes += document.text.size();
      const auto train_part = static_cast<size_t>(scan.val_begin[index++]);
      if (train_part > 0 && train_part < document.text.size()) {
        Document tail{
            document.text.substr(train_part), document.file,
            document.line + std::count(document.text.begin(),
                                       document.text.begin() + static_cast<std::ptrdiff_t>(train_part), '\n')};
        document.text.resize(train_part);
        batch.push_back(std::move(document));
        to_val.push_back(false);
        batch.push_back(std::move(tail));
        to_val.push_back(true);
      } else {
        batch.push_back(std::move(document));
        to_val.push_back(train_part == 0);
      }
    }
    if (batch.empty()) {
      break;
    }
    const std::vector<std::vector<int32_t>> ids = encode_batch(tokenizer, batch, threads, reader);
    for (size_t i = 0; i < batch.size(); ++i) {
      (to_val[i] ? val : train).add_document(ids[i], static_cast<int64_t>(batch[i].text.size()));
    }
    done_bytes += static_cast<int64_t>(batch_bytes);
    meter.update(done_bytes);
  }
  if (index != scan.val_begin.size()) {
    throw_inputs_changed();
  }
  meter.finish();
  return {train.finish(), val.finish()};
}

std::string describe_split(const char* name, const SplitRecord& split) {
  return fmt::format("{} {} docs, {} tokens in {} shard{}", name, split.num_docs, split.num_tokens, split.shards.size(),
                     split.shards.size() == 1 ? "" : "s");
}

}  // namespace

void PrepareConfig::validate() const {
  if (std::find(kTokenizerNames.begin(), kTokenizerNames.end(), tokenizer) == kTokenizerNames.end()) {
    throw ConfigError(fmt::format("--tokenizer '{}' is not one of {}", tokenizer, fmt::join(kTokenizerNames, ", ")));
  }
  if (tokenizer == "bpe") {
    if (vocab_size == 0) {
      throw ConfigError("--tokenizer bpe needs --vocab-size (for example --vocab-size 4096)");
    }
    if (vocab_size < 259 || vocab_size > std::numeric_limits<int32_t>::max()) {
      throw ConfigError(
          fmt::format("--vocab-size {} must be between 259 (<unk>, <|endoftext|>, 256 byte pieces and "
                      "one character) and {}",
                      vocab_size, std::numeric_limits<int32_t>::max()));
    }
  } else if (vocab_size != 0) {
    throw ConfigError(
        fmt::format("--vocab-size {} applies only to --tokenizer bpe; the {} tokenizer's vocabulary is "
                    "{}",
                    vocab_size, tokenizer, tokenizer == "byte" ? "fixed (257)" : "the corpus's characters"));
  }
  if (out.empty()) {
    throw ConfigError("--out is required: the directory to write the dataset into");
  }
  if (shard_tokens <= 0) {
    throw ConfigError(fmt::format("--shard-tokens {} must be positive", shard_tokens));
  }
  if (!(val_fraction >= 0 && val_fraction < 1)) {
    throw ConfigError(fmt::format("--val-fraction {} must be at least 0 and below 1", val_fraction));
  }
  if (threads < 0) {
    throw ConfigError(fmt::format("--threads {} must be positive (or 0 for all cores)", threads));
  }
  for (const std::string& input : inputs) {
    if (input.empty()) {
      throw ConfigError("--input '': an empty path");
    }
  }
}

PrepareReport prepare_dataset(const PrepareConfig& config) {
  const Clock::time_point start = Clock::now();
  config.validate();
  PrepareReport report;
  report.threads =
      config.threads > 0 ? config.threads : static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));

  const bool default_corpus = config.inputs.empty();
  const bool split_on_percent = config.split_on_percent || default_corpus;
  const std::vector<fs::path> files = without_output_dir(
      default_corpus ? default_corpus_files(config.default_corpus) : resolve_inputs(config.inputs), config.out);
  DatasetOptions options{
      {}, config.tokenizer, config.vocab_size, config.seed, config.val_fraction, config.shard_tokens, split_on_percent};
  int64_t file_bytes = 0;
  for (const fs::path& file : files) {
    options.inputs.push_back(fs::absolute(file).lexically_normal().string());
    std::error_code error;
    const uintmax_t size = fs::file_size(file, error);
    file_bytes += error ? 0 : static_cast<int64_t>(size);
  }
  check_output_dir(config.out, options, config.force);
  spdlog::info("[data] preparing {} from {} files ({:.1f} MB{}) with the {} tokenizer", config.out.string(),
               files.size(), static_cast<double>(file_bytes) / 1e6, default_corpus ? ", the default corpus" : "",
               config.tokenizer);

  const Scan scan = scan_corpus(files, config, split_on_percent, file_bytes);
  report.text_bytes = scan.text_bytes;
  const Clock::time_point tokenizer_start = Clock::now();
  const std::unique_ptr<Tokenizer> tokenizer = build_tokenizer(config, scan, files, split_on_percent);
  report.tokenizer_seconds = seconds_since(tokenizer_start);

  // Everything that can fail on bad input has run; from here on the directory changes.
  clear_output_dir(config.out);
  tokenizer->save(config.out);
  const Clock::time_point tokenize_start = Clock::now();
  const Splits splits = tokenize_and_write(config, scan, *tokenizer, files, split_on_percent, report.threads);
  report.tokenize_seconds = seconds_since(tokenize_start);

  report.manifest = {options,
                     {tokenizer->name(), tokenizer_file_name(tokenizer->name()), tokenizer->sha256(),
                      tokenizer->vocab_size(), tokenizer->eot_id()},
                     splits.train,
                     splits.val};
  report.manifest_path = config.out / kManifestName;
  write_file_atomically(report.manifest_path, manifest_json(report.manifest));
  report.seconds = seconds_since(start);
  spdlog::info("[data] {}", describe(report));
  return report;
}

std::string describe(const PrepareReport& report) {
  const double mb = static_cast<double>(report.text_bytes) / 1e6;
  return fmt::format(
      "wrote {}: {}; {}; {} tokenizer, vocab {}. {:.2f} MB of text in {:.2f} s ({:.1f} MB/s; tokenizer {:.2f} s, "
      "tokenizing and writing {:.2f} s = {:.1f} MB/s with {} threads)",
      report.manifest_path.string(), describe_split("train", report.manifest.train),
      describe_split("val", report.manifest.val), report.manifest.tokenizer.name, report.manifest.tokenizer.vocab_size,
      mb, report.seconds, mb / report.seconds, report.tokenizer_seconds, report.tokenize_seconds,
      mb / report.tokenize_seconds, report.threads);
}

}  // namespace mlagpt::data
