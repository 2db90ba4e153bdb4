// `prepare`: inputs (files, directories, globs, JSON Lines, fortune files) become documents; the output is byte-
// for-byte the same for 1, 2 and 4 threads; the train/val split is seeded, stable, and never leaves a split empty;
// every document is followed by end-of-text; the manifest lists exactly what is on disk; every bad input gets an
// error naming the file or flag and leaves no shard behind; h5ls and h5dump open the shards.
#include "data/prepare.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "data/corpus.h"
#include "data/sha256.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"
#include "launch/error.h"
#include "support/prerequisites.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;
using mlagpt::ConfigError;
using mlagpt::DataError;
using mlagpt::IoError;
using mlagpt::data::DatasetManifest;
using mlagpt::data::PrepareConfig;
using mlagpt::data::SplitRecord;
using mlagpt::testing::TempDir;
using ::testing::HasSubstr;

namespace {

void write_file(const fs::path& path, std::string_view bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

// A small deterministic corpus (~40 KB): documents of 1 to ~80 words, some with multi-byte characters.
std::vector<std::string> make_documents(int count, uint32_t seed) {
  const std::vector<std::string> words = {
      "the", "cat", "sat", "on",     "a", "mat", "caf\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x98\x80",
      "and", "ran", "far", "away\n", "  "};
  std::mt19937 random(seed);
  std::vector<std::string> documents;
  for (int d = 0; d < count; ++d) {
    std::string document = "doc " + std::to_string(seed) + "." + std::to_string(d) + ":";
    for (uint32_t w = 0, n = 1 + random() % 80; w < n; ++w) {
      document += " " + words[random() % words.size()];
    }
    documents.push_back(document + "\n");
  }
  return documents;
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Writes `documents` into `dir` in all three input forms: a .jsonl file, a fortune file, and one file per document
// in a subdirectory. Returns the --input arguments, and the documents in the order prepare reads them.
std::pair<std::vector<std::string>, std::vector<std::string>> write_corpus(const fs::path& dir,
                                                                           const std::vector<std::string>& documents) {
  const size_t third = documents.size() / 3;
  std::string jsonl;
  for (size_t i = 0; i < third; ++i) {
    jsonl += "{\"text\": " + json_string(documents[i]) + ", \"id\": " + std::to_string(i) + "}\n";
    jsonl += i % 7 == 0 ? "\n" : "";  // blank lines are skipped
  }
  write_file(dir / "a.jsonl", jsonl);
  std::string fortunes;
  for (size_t i = third; i < 2 * third; ++i) {
    fortunes += documents[i] + "%\n";
  }
  write_file(dir / "b.fortunes", fortunes);
  for (size_t i = 2 * third; i < documents.size(); ++i) {
    write_file(dir / "c" / fmt::format("{:04d}.txt", i), documents[i]);
  }
  return {{(dir / "a.jsonl").string(), (dir / "b.fortunes").string(), (dir / "c").string()}, documents};
}

PrepareConfig make_config(const std::vector<std::string>& inputs, const std::string& tokenizer, const fs::path& out) {
  PrepareConfig config;
  config.inputs = inputs;
  config.tokenizer = tokenizer;
  config.vocab_size = tokenizer == "bpe" ? 320 : 0;
  config.out = out;
  config.shard_tokens = 5000;  // several shards per split, and documents crossing shard boundaries
  config.val_fraction = 0.2;
  config.split_on_percent = true;
  config.threads = 2;
  return config;
}

// File name -> SHA-256 of every file in `dir`.
std::map<std::string, std::string> directory_hashes(const fs::path& dir) {
  std::map<std::string, std::string> hashes;
  if (!fs::exists(dir)) {
    return hashes;
  }
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    hashes[entry.path().filename().string()] = mlagpt::data::sha256_file_hex(entry.path());
  }
  return hashes;
}

size_t shard_count(const fs::path& dir) {
  size_t count = 0;
  for (const auto& [name, hash] : directory_hashes(dir)) {
    count += name.find(".h5") != std::string::npos ? 1 : 0;
  }
  return count;
}

// The tokens of a split, all shards in order.
std::vector<int32_t> split_tokens(const fs::path& dir, const SplitRecord& split) {
  std::vector<int32_t> tokens;
  for (const auto& shard : split.shards) {
    const mlagpt::data::ShardReader reader(dir / shard.file);
    std::vector<int64_t> buffer(static_cast<size_t>(reader.num_tokens()));
    reader.read(0, buffer);
    tokens.insert(tokens.end(), buffer.begin(), buffer.end());
  }
  return tokens;
}

// The documents of a split, decoded: the token stream cut after every end-of-text.
std::vector<std::string> split_documents(const fs::path& dir, const SplitRecord& split) {
  const DatasetManifest manifest = mlagpt::data::read_dataset_manifest(dir);
  const auto tokenizer = mlagpt::data::load_tokenizer(dir, manifest.tokenizer.name);
  const std::vector<int32_t> tokens = split_tokens(dir, split);
  std::vector<std::string> documents;
  std::vector<int32_t> current;
  for (const int32_t token : tokens) {
    if (token == tokenizer->eot_id()) {
      documents.push_back(tokenizer->decode(current));
      current.clear();
    } else {
      current.push_back(token);
    }
  }
  EXPECT_TRUE(current.empty()) << "the split does not end with end-of-text";
  return documents;
}

template <typename Exception>
std::string error_of(const PrepareConfig& config) {
  try {
    mlagpt::data::prepare_dataset(config);
  } catch (const Exception& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("unexpected exception type: ") + e.what();
  }
  return "no error";
}

}  // namespace

TEST(Corpus, ReadsJsonLinesFortunesAndFilesInOrder) {
  TempDir dir;
  const std::vector<std::string> documents = make_documents(30, 1);
  const auto [inputs, expected] = write_corpus(dir.path(), documents);
  write_file(dir / "c" / "empty.txt", "");  // an empty document is skipped
  mlagpt::data::DocumentReader reader(mlagpt::data::resolve_inputs(inputs), /*split_on_percent=*/true);
  std::vector<std::string> read;
  mlagpt::data::Document document;
  while (reader.next(document)) {
    read.push_back(document.text);
  }
  EXPECT_EQ(read, expected);
}

TEST(Corpus, SplitsFortunesOnPercentLinesOnly) {
  TempDir dir;
  write_file(dir / "f", "first\nfortune\n%\n100% sure\n%\n%\n  %  \nlast");
  mlagpt::data::DocumentReader reader({dir / "f"}, true);
  std::vector<std::pair<std::string, int64_t>> read;
  mlagpt::data::Document document;
  while (reader.next(document)) {
    read.emplace_back(document.text, document.line);
  }
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"first\nfortune\n", 1}, {"100% sure\n", 4}, {"  %  \nlast", 7}};
  EXPECT_EQ(read, expected);
  mlagpt::data::DocumentReader whole({dir / "f"}, false);
  ASSERT_TRUE(whole.next(document));
  EXPECT_EQ(document.text, "first\nfortune\n%\n100% sure\n%\n%\n  %  \nlast");
}

TEST(Corpus, ResolvesDirectoriesSortedAndGlobsAndReadsEachFileOnce) {
  TempDir dir;
  write_file(dir / "d" / "z.txt", "z");
  write_file(dir / "d" / "sub" / "b.txt", "b");
  write_file(dir / "d" / "a.txt", "a");
  fs::create_symlink(dir / "d" / "a.txt", dir / "d" / "link.txt");
  const auto files = mlagpt::data::resolve_inputs({(dir / "d").string(), (dir / "d" / "*.txt").string()});
  std::vector<std::string> names;
  for (const fs::path& file : files) {
    names.push_back(file.lexically_relative(dir.path()).string());
  }
  EXPECT_EQ(names, (std::vector<std::string>{"d/a.txt", "d/sub/b.txt", "d/z.txt"}));
  try {
    mlagpt::data::resolve_inputs({(dir / "nothing*.txt").string()});
    ADD_FAILURE() << "a glob without matches was accepted";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("nothing*.txt': the pattern matches no file"));
  }
}

TEST(Prepare, OutputIsByteIdenticalForOneTwoAndFourThreads) {
  TempDir dir;
  const auto [inputs, documents] = write_corpus(dir / "corpus", make_documents(150, 2));
  for (const std::string tokenizer : {"byte", "char", "bpe"}) {
    std::map<std::string, std::string> reference;
    for (const int threads : {1, 2, 4}) {
      PrepareConfig config = make_config(inputs, tokenizer, dir / fmt::format("{}_{}", tokenizer, threads));
      config.threads = threads;
      if (threads == 4 && tokenizer == "byte") {
        // Into the next second, so that anything time-stamped (HDF5 stamps object headers by default) would differ.
        std::this_thread::sleep_for(std::chrono::milliseconds(1100));
      }
      mlagpt::data::prepare_dataset(config);
      const auto hashes = directory_hashes(config.out);
      if (threads == 1) {
        reference = hashes;
        EXPECT_GT(shard_count(config.out), 2U) << tokenizer;
      } else {
        EXPECT_EQ(hashes, reference) << tokenizer << " with " << threads << " threads";
      }
    }
  }
}

TEST(Prepare, EveryDocumentIsFollowedByEndOfTextAndDocOffsetsMarkTheStarts) {
  TempDir dir;
  const auto [inputs, documents] = write_corpus(dir / "corpus", make_documents(120, 3));
  for (const std::string tokenizer : {"byte", "char", "bpe"}) {
    const PrepareConfig config = make_config(inputs, tokenizer, dir / tokenizer);
    const auto report = mlagpt::data::prepare_dataset(config);
    const DatasetManifest& manifest = report.manifest;
    // Train and val together hold every document once, each decoded exactly.
    std::vector<std::string> train = split_documents(config.out, manifest.train);
    std::vector<std::string> val = split_documents(config.out, manifest.val);
    EXPECT_EQ(static_cast<int64_t>(train.size()), manifest.train.num_docs);
    EXPECT_EQ(static_cast<int64_t>(val.size()), manifest.val.num_docs);
    std::vector<std::string> all = train;
    all.insert(all.end(), val.begin(), val.end());
    std::multiset<std::string> expected(documents.begin(), documents.end());
    EXPECT_EQ(std::multiset<std::string>(all.begin(), all.end()), expected) << tokenizer;
    // Documents keep their input order within a split.
    std::vector<std::string> train_in_order;
    for (const std::string& document : documents) {
      if (std::find(train.begin(), train.end(), document) != train.end()) {
        train_in_order.push_back(document);
      }
    }
    EXPECT_EQ(train, train_in_order);
    // doc_offsets: 0 first, then the token after every end-of-text inside the shard.
    for (const auto& shard : manifest.train.shards) {
      const mlagpt::data::ShardReader reader(config.out / shard.file);
      std::vector<int64_t> tokens(static_cast<size_t>(reader.num_tokens()));
      reader.read(0, tokens);
      std::vector<uint64_t> starts = {0};
      for (size_t i = 0; i + 1 < tokens.size(); ++i) {
        if (tokens[i] == manifest.tokenizer.eot_id) {
          starts.push_back(i + 1);
        }
      }
      EXPECT_EQ(reader.doc_offsets(), starts) << shard.file;
    }
  }
}

TEST(Prepare, SplitIsSeededStableAndNeverEmpty) {
  TempDir dir;
  const std::vector<std::string> documents = make_documents(200, 4);
  const auto [inputs, expected] = write_corpus(dir / "corpus", documents);
  PrepareConfig config = make_config(inputs, "byte", dir / "seed1");
  config.seed = 1;
  const auto first = mlagpt::data::prepare_dataset(config);
  const std::vector<std::string> val1 = split_documents(config.out, first.manifest.val);
  // About val_fraction of the documents.
  EXPECT_GT(val1.size(), 20U);
  EXPECT_LT(val1.size(), 70U);

  config.seed = 2;
  config.out = dir / "seed2";
  const auto second = mlagpt::data::prepare_dataset(config);
  EXPECT_NE(split_documents(config.out, second.manifest.val), val1);

  // More documents: the first ones stay where they were (the split depends on a document's content and the seed).
  const std::vector<std::string> extra = make_documents(60, 5);
  const auto [extra_inputs, unused] = write_corpus(dir / "extra", extra);
  config = make_config(inputs, "byte", dir / "more");
  config.seed = 1;
  config.inputs.insert(config.inputs.end(), extra_inputs.begin(), extra_inputs.end());
  const auto more = mlagpt::data::prepare_dataset(config);
  const std::vector<std::string> val_more = split_documents(config.out, more.manifest.val);
  const std::set<std::string> val_more_set(val_more.begin(), val_more.end());
  for (const std::string& document : documents) {
    const bool was_val = std::find(val1.begin(), val1.end(), document) != val1.end();
    EXPECT_EQ(val_more_set.count(document) == 1, was_val) << document;
  }

  // Two documents and a tiny val_fraction: hashing puts none in val, so the last one moves there.
  write_file(dir / "two" / "1.txt", "one");
  write_file(dir / "two" / "2.txt", "two");
  config = make_config({(dir / "two").string()}, "byte", dir / "tiny");
  config.val_fraction = 1e-9;
  const auto tiny = mlagpt::data::prepare_dataset(config);
  EXPECT_EQ(split_documents(config.out, tiny.manifest.train), std::vector<std::string>{"one"});
  EXPECT_EQ(split_documents(config.out, tiny.manifest.val), std::vector<std::string>{"two"});
  // And a val_fraction near 1 keeps the first document in train.
  config.out = dir / "huge";
  config.val_fraction = 0.999999999;
  const auto huge = mlagpt::data::prepare_dataset(config);
  EXPECT_EQ(split_documents(config.out, huge.manifest.train), std::vector<std::string>{"one"});
  EXPECT_EQ(split_documents(config.out, huge.manifest.val), std::vector<std::string>{"two"});
}

// A text of `lines` numbered lines of different lengths, some with multi-byte characters.
std::string numbered_lines(int lines, const std::string& word) {
  std::string text;
  for (int i = 0; i < lines; ++i) {
    text += fmt::format("{} {} caf\xC3\xA9{}\n", word, i, std::string(static_cast<size_t>(i % 13), '.'));
  }
  return text;
}

TEST(Prepare, SingleTextFileGivesItsTailToValOnALineBoundary) {
  TempDir dir;
  const std::string text = numbered_lines(700, "line");  // ~15 KB: short, but the only document
  write_file(dir / "input.txt", text);
  for (const std::string tokenizer : {"char", "byte"}) {
    PrepareConfig config = make_config({(dir / "input.txt").string()}, tokenizer, dir / tokenizer);
    config.split_on_percent = false;
    const auto report = mlagpt::data::prepare_dataset(config);
    const std::vector<std::string> train = split_documents(config.out, report.manifest.train);
    const std::vector<std::string> val = split_documents(config.out, report.manifest.val);
    ASSERT_EQ(train.size(), 1U);
    ASSERT_EQ(val.size(), 1U);
    EXPECT_EQ(train[0] + val[0], text);  // the head and the tail, in order, nothing lost or repeated
    ASSERT_FALSE(train[0].empty());
    EXPECT_EQ(train[0].back(), '\n');  // the tail starts a line
    // The tail is val_fraction of the bytes, up to the rest of the line the cut point falls in.
    const auto wanted = static_cast<size_t>(std::ceil(static_cast<double>(text.size()) * config.val_fraction));
    EXPECT_LE(val[0].size(), wanted);
    EXPECT_GT(val[0].size(), wanted - 40);
    // Deterministic: again, byte for byte.
    const auto before = directory_hashes(config.out);
    config.force = true;
    mlagpt::data::prepare_dataset(config);
    EXPECT_EQ(directory_hashes(config.out), before);
  }
}

TEST(Prepare, LongDocumentsAreSplitInsideAndTheTailNeverTrainsTheTokenizer) {
  TempDir dir;
  // A book-length document between short ones: its last val_fraction goes to val, its head to train; the short
  // ones are assigned whole by hash.
  const std::string book = numbered_lines(4000, "book");
  ASSERT_GE(static_cast<int64_t>(book.size()), mlagpt::data::kLongDocumentBytes);
  const std::vector<std::string> shorts = make_documents(30, 9);
  write_file(dir / "corpus" / "a.txt", shorts[0]);
  write_file(dir / "corpus" / "b.txt", book);
  for (size_t i = 1; i < shorts.size(); ++i) {
    write_file(dir / "corpus" / fmt::format("c{:02d}.txt", i), shorts[i]);
  }
  PrepareConfig config = make_config({(dir / "corpus").string()}, "bpe", dir / "out");
  config.split_on_percent = false;
  const auto report = mlagpt::data::prepare_dataset(config);
  const std::vector<std::string> train = split_documents(config.out, report.manifest.train);
  const std::vector<std::string> val = split_documents(config.out, report.manifest.val);
  EXPECT_EQ(train.size() + val.size(), shorts.size() + 2);
  std::string head;
  std::string tail;
  for (const std::string& document : train) {
    head = document.starts_with("book 0 ") ? document : head;
  }
  for (const std::string& document : val) {
    tail = document.starts_with("book ") ? document : tail;
  }
  EXPECT_EQ(head + tail, book);
  EXPECT_FALSE(tail.empty());
  EXPECT_LE(tail.size(), static_cast<size_t>(std::ceil(static_cast<double>(book.size()) * config.val_fraction)));

  // The bpe tokenizer learned from the train text alone: the same corpus with the tail cut off, and exactly the
  // train documents kept, gives the same tokenizer.
  for (size_t i = 0; i < train.size(); ++i) {
    write_file(dir / "train_only" / fmt::format("{:02d}.txt", i), train[i]);  // in the same order
  }
  PrepareConfig train_only = make_config({(dir / "train_only").string()}, "bpe", dir / "train_only_out");
  train_only.split_on_percent = false;
  train_only.val_fraction = 0;
  const auto reference = mlagpt::data::prepare_dataset(train_only);
  EXPECT_EQ(report.manifest.tokenizer.sha256, reference.manifest.tokenizer.sha256);
}

TEST(Prepare, ManifestListsExactlyWhatIsOnDisk) {
  TempDir dir;
  const auto [inputs, documents] = write_corpus(dir / "corpus", make_documents(90, 6));
  const PrepareConfig config = make_config(inputs, "bpe", dir / "out");
  mlagpt::data::prepare_dataset(config);
  const DatasetManifest manifest = mlagpt::data::read_dataset_manifest(config.out);
  EXPECT_EQ(manifest.options.tokenizer, "bpe");
  EXPECT_EQ(manifest.options.vocab_size, 320);
  EXPECT_EQ(manifest.options.inputs.size(), 2U + (documents.size() - 2 * (documents.size() / 3)));
  std::set<std::string> listed = {mlagpt::data::kManifestName, manifest.tokenizer.file};
  EXPECT_EQ(manifest.tokenizer.sha256, mlagpt::data::sha256_file_hex(config.out / manifest.tokenizer.file));
  EXPECT_EQ(manifest.tokenizer.vocab_size, 320);
  for (const SplitRecord* split : {&manifest.train, &manifest.val}) {
    int64_t tokens = 0;
    for (const auto& shard : split->shards) {
      listed.insert(shard.file);
      EXPECT_EQ(shard.sha256, mlagpt::data::sha256_file_hex(config.out / shard.file));
      const mlagpt::data::ShardReader reader(config.out / shard.file);
      EXPECT_EQ(reader.num_tokens(), shard.num_tokens);
      EXPECT_LE(reader.num_tokens(), config.shard_tokens);
      EXPECT_EQ(static_cast<int64_t>(reader.doc_offsets().size()), shard.num_docs);
      EXPECT_EQ(reader.info().tokenizer, "bpe");
      EXPECT_EQ(reader.info().tokenizer_sha256, manifest.tokenizer.sha256);
      EXPECT_EQ(reader.info().vocab_size, manifest.tokenizer.vocab_size);
      EXPECT_EQ(reader.info().eot_id, manifest.tokenizer.eot_id);
      reader.check_token_range();
      tokens += shard.num_tokens;
    }
    EXPECT_EQ(tokens, split->num_tokens);
  }
  std::set<std::string> on_disk;
  for (const auto& [name, hash] : directory_hashes(config.out)) {
    on_disk.insert(name);
  }
  EXPECT_EQ(on_disk, listed);
}

TEST(Prepare, RefusesADifferentDatasetWithoutForceAndReplacesItWithForce) {
  TempDir dir;
  const auto [inputs, documents] = write_corpus(dir / "corpus", make_documents(120, 7));
  PrepareConfig config = make_config(inputs, "byte", dir / "out");
  config.shard_tokens = 1000;  // many shards, so that the replacement leaves stale ones unless it removes them
  mlagpt::data::prepare_dataset(config);
  const auto before = directory_hashes(config.out);

  PrepareConfig other = config;
  other.tokenizer = "char";
  other.shard_tokens = 100000;
  EXPECT_THAT(error_of<ConfigError>(other),
              HasSubstr("--out " + config.out.string() +
                        ": already holds a different dataset (differing: tokenizer "
                        "(byte there, char here); shard_tokens (1000 there, 100000 here)); use --force"));
  EXPECT_EQ(directory_hashes(config.out), before);

  // The same options again rebuild in place, identically.
  mlagpt::data::prepare_dataset(config);
  EXPECT_EQ(directory_hashes(config.out), before);

  other.force = true;
  const auto replaced = mlagpt::data::prepare_dataset(other);
  std::set<std::string> expected = {"dataset.json", "tokenizer.json"};
  for (const auto& shard : replaced.manifest.train.shards) {
    expected.insert(shard.file);
  }
  for (const auto& shard : replaced.manifest.val.shards) {
    expected.insert(shard.file);
  }
  std::set<std::string> on_disk;
  for (const auto& [name, hash] : directory_hashes(config.out)) {
    on_disk.insert(name);
  }
  EXPECT_EQ(on_disk, expected);
  EXPECT_EQ(replaced.manifest.train.shards.size(), 1U);
}

TEST(Prepare, BadInputIsNamedAndLeavesNoShard) {
  TempDir dir;
  write_file(dir / "good.txt", "some text\n");
  write_file(dir / "more.txt", "more text\n");
  write_file(dir / "empty.txt", "");
  write_file(dir / "bad.jsonl", "{\"text\": \"fine\"}\n{\"title\": \"no text\"}\n");
  write_file(dir / "notjson.jsonl", "{\"text\": \"fine\"}\n\n{\"text\": \"unterminated}\n");
  write_file(dir / "number.jsonl", "{\"text\": 42}\n");
  write_file(dir / "latin1.txt", "caf\xE9\n");
  const std::string good = (dir / "good.txt").string();
  const std::string more = (dir / "more.txt").string();
  const fs::path out = dir / "out";

  const auto expect_no_output = [&](const std::string& what) {
    EXPECT_FALSE(fs::exists(out)) << what << " created " << out;
  };
  EXPECT_THAT(error_of<DataError>(make_config({(dir / "empty.txt").string()}, "byte", out)),
              HasSubstr("no documents in the input: the 1 input files hold no text (" + (dir / "empty.txt").string()));
  expect_no_output("empty input");
  EXPECT_THAT(error_of<IoError>(make_config({good, (dir / "missing.txt").string()}, "byte", out)),
              HasSubstr("--input " + (dir / "missing.txt").string() + ": No such file or directory"));
  expect_no_output("a missing file");
  EXPECT_THAT(error_of<DataError>(make_config({good, (dir / "bad.jsonl").string()}, "byte", out)),
              HasSubstr((dir / "bad.jsonl").string() + ":2: no \"text\" field"));
  expect_no_output("a JSON line without text");
  EXPECT_THAT(error_of<DataError>(make_config({(dir / "notjson.jsonl").string()}, "byte", out)),
              HasSubstr((dir / "notjson.jsonl").string() + ":3: not a JSON line"));
  EXPECT_THAT(error_of<DataError>(make_config({(dir / "number.jsonl").string()}, "byte", out)),
              HasSubstr((dir / "number.jsonl").string() + ":1: \"text\" is a number, not a string"));
  EXPECT_THAT(error_of<DataError>(make_config({good, (dir / "latin1.txt").string()}, "char", out)),
              HasSubstr((dir / "latin1.txt").string() +
                        ":1: in the document starting on this line: invalid UTF-8 at byte offset 3 (bytes 0xE9 0x0A)"));
  expect_no_output("invalid UTF-8");

  PrepareConfig config = make_config({good, more}, "bpe", out);
  config.vocab_size = 0;
  EXPECT_THAT(error_of<ConfigError>(config), HasSubstr("--tokenizer bpe needs --vocab-size"));
  config.vocab_size = 50000;
  EXPECT_THAT(error_of<ConfigError>(config), HasSubstr("bpe vocabulary size 50000 does not fit this corpus"));
  expect_no_output("a bpe vocabulary too large");
  config = make_config({good, more}, "byte", out);
  config.vocab_size = 1000;
  EXPECT_THAT(error_of<ConfigError>(config), HasSubstr("--vocab-size 1000 applies only to --tokenizer bpe"));
  config = make_config({good, more}, "word", out);
  EXPECT_THAT(error_of<ConfigError>(config), HasSubstr("--tokenizer 'word' is not one of byte, char, bpe"));
  config = make_config({good, more}, "byte", out);
  config.val_fraction = 1;
  EXPECT_THAT(error_of<ConfigError>(config), HasSubstr("--val-fraction 1 must be at least 0 and below 1"));
  config.val_fraction = 0.5;
  config.shard_tokens = 0;
  EXPECT_THAT(error_of<ConfigError>(config), HasSubstr("--shard-tokens 0 must be positive"));
  write_file(dir / "one_line.txt", "x");
  config = make_config({(dir / "one_line.txt").string()}, "byte", out);
  EXPECT_THAT(error_of<DataError>(config),
              HasSubstr("a single document (" + (dir / "one_line.txt").string() + ") too short to split"));
  config = make_config({good}, "byte", out);
  config.inputs = {};
  config.default_corpus = dir / "no-fortunes";
  EXPECT_THAT(error_of<IoError>(config), HasSubstr("the default corpus is missing; install Debian's fortunes "
                                                   "package (deploy/setup.sh does)"));
  expect_no_output("bad options");

  // A different dataset already in --out is refused and left as it was.
  config = make_config({good, more}, "byte", out);
  mlagpt::data::prepare_dataset(config);
  const auto before = directory_hashes(out);
  config.seed = 99;
  EXPECT_THAT(error_of<ConfigError>(config), HasSubstr("differing: seed (1337 there, 99 here)"));
  EXPECT_EQ(directory_hashes(out), before);
  // So is a bad input for a dataset with the same options: the old dataset stays whole.
  config.seed = 1337;
  config.inputs = {good, more, (dir / "bad.jsonl").string()};
  config.force = true;
  EXPECT_THAT(error_of<DataError>(config), HasSubstr("bad.jsonl:2"));
  EXPECT_EQ(directory_hashes(out), before);
}

TEST(Prepare, DoesNotReadItsOwnOutputAsInput) {
  TempDir dir;
  const auto [inputs, documents] = write_corpus(dir / "corpus", make_documents(30, 9));
  // --out inside an --input directory: the second run must not take the first run's shards for text.
  PrepareConfig config = make_config({(dir / "corpus").string()}, "char", dir / "corpus" / "out");
  const auto first = mlagpt::data::prepare_dataset(config);
  const auto second = mlagpt::data::prepare_dataset(config);
  EXPECT_EQ(second.manifest.options.inputs, first.manifest.options.inputs);
  EXPECT_EQ(second.manifest.train.num_tokens, first.manifest.train.num_tokens);
}

TEST(Prepare, HdfToolsOpenTheShards) {
  TempDir dir;
  const auto [inputs, documents] = write_corpus(dir / "corpus", make_documents(30, 8));
  const PrepareConfig config = make_config(inputs, "char", dir / "out");
  const auto report = mlagpt::data::prepare_dataset(config);
  const fs::path shard = config.out / report.manifest.train.shards.front().file;
  int status = -1;
  const fs::path h5ls = fs::path(MLAGPT_H5DUMP).parent_path() / "h5ls";
  const std::string listing = mlagpt::testing::run_command(h5ls.string() + " " + shard.string() + " 2>&1", &status);
  EXPECT_EQ(status, 0) << listing;
  EXPECT_THAT(listing, HasSubstr("tokens"));
  EXPECT_THAT(listing, HasSubstr("doc_offsets"));
  const std::string header =
      mlagpt::testing::run_command(std::string(MLAGPT_H5DUMP) + " -A " + shard.string() + " 2>&1", &status);
  EXPECT_EQ(status, 0) << header;
  EXPECT_THAT(header, HasSubstr("\"mlagpt.tokens\""));
  EXPECT_THAT(header, HasSubstr("H5T_STD_U16LE"));
  EXPECT_THAT(header, HasSubstr(report.manifest.tokenizer.sha256));
}

TEST(Prepare, DefaultCorpusIsTheFortuneTextFiles) {
  MLAGPT_REQUIRE_INSTALLED(fs::is_directory(mlagpt::data::kDefaultCorpusDir),
                           mlagpt::data::kDefaultCorpusDir << " is missing: install Debian's fortunes package");
  TempDir dir;
  PrepareConfig config;
  config.tokenizer = "byte";
  config.out = dir / "out";
  const auto report = mlagpt::data::prepare_dataset(config);
  const auto& manifest = report.manifest;
  EXPECT_TRUE(manifest.options.split_on_percent);
  EXPECT_EQ(manifest.options.inputs.size(), mlagpt::data::default_corpus_files().size());
  for (const std::string& input : manifest.options.inputs) {
    EXPECT_FALSE(input.ends_with(".dat") || input.ends_with(".u8")) << input;
    EXPECT_FALSE(fs::is_symlink(input)) << input;
  }
  // Thousands of fortunes, about 2.5 MB of text, and val near val_fraction of it.
  EXPECT_GT(manifest.train.num_docs + manifest.val.num_docs, 5000);
  EXPECT_GT(report.text_bytes, 1'000'000);
  const double val_share =
      static_cast<double>(manifest.val.num_docs) / static_cast<double>(manifest.train.num_docs + manifest.val.num_docs);
  EXPECT_NEAR(val_share, config.val_fraction, 0.02);
}
