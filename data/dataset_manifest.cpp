#include "data/dataset_manifest.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "data/file_io.h"
#include "launch/error.h"

namespace mlagpt::data {
namespace {

using nlohmann::json;

// Reads object[key] as T; `where` ("dataset.json: train.shards[3]") names it when it is missing or mistyped.
template <typename T>
T field(const json& object, const char* key, const std::string& where) {
  const auto missing = [&](const char* wanted) {
    return DataError(fmt::format("{}: \"{}\" is missing or not {}", where, key, wanted));
  };
  if (!object.is_object() || !object.contains(key)) {
    throw missing("present");
  }
  const json& value = object[key];
  if constexpr (std::is_same_v<T, std::string>) {
    if (!value.is_string()) throw missing("a string");
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!value.is_boolean()) throw missing("true or false");
  } else if constexpr (std::is_same_v<T, double>) {
    if (!value.is_number()) throw missing("a number");
  } else if constexpr (std::is_unsigned_v<T>) {
    if (!value.is_number_unsigned()) throw missing("a non-negative integer");
  } else {
    if (!value.is_number_integer() || (value.is_number_unsigned() && value.get<uint64_t>() > INT64_MAX)) {
      throw missing("an integer");
    }
  }
  return value.get<T>();
}

json split_json(const SplitRecord& split) {
  json shards = json::array();
  for (const ShardRecord& shard : split.shards) {
    shards.push_back({{"file", shard.file},
                      {"num_tokens", shard.num_tokens},
                      {"num_docs", shard.num_docs},
                      {"sha256", shard.sha256}});
  }
  return {{"num_docs", split.num_docs},
          {"num_tokens", split.num_tokens},
          {"text_bytes", split.text_bytes},
          {"shards", shards}};
}

SplitRecord parse_split(const json& manifest, const char* name, const std::string& file) {
  const std::string where = fmt::format("{}: {}", file, name);
  if (!manifest.contains(name) || !manifest[name].is_object()) {
    throw DataError(fmt::format("{}: \"{}\" is missing or not an object", file, name));
  }
  const json& object = manifest[name];
  SplitRecord split;
  split.num_docs = field<int64_t>(object, "num_docs", where);
  split.num_tokens = field<int64_t>(object, "num_tokens", where);
  split.text_bytes = field<int64_t>(object, "text_bytes", where);
  if (!object.contains("shards") || !object["shards"].is_array()) {
    throw DataError(fmt::format("{}: \"shards\" is missing or not a list", where));
  }
  for (size_t i = 0; i < object["shards"].size(); ++i) {
    const std::string shard_where = fmt::format("{}.shards[{}]", where, i);
    const json& shard = object["shards"][i];
    split.shards.push_back(
        {field<std::string>(shard, "file", shard_where), field<int64_t>(shard, "num_tokens", shard_where),
         field<int64_t>(shard, "num_docs", shard_where), field<std::string>(shard, "sha256", shard_where)});
  }
  return split;
}

}  // namespace

std::vector<std::string> option_differences(const DatasetOptions& there, const DatasetOptions& here) {
  std::vector<std::string> differences;
  const auto compare = [&](const char* name, const auto& a, const auto& b) {
    if (a != b) {
      differences.push_back(fmt::format("{} ({} there, {} here)", name, a, b));
    }
  };
  if (there.inputs != here.inputs) {
    differences.push_back(fmt::format("inputs ({} files there, {} here{})", there.inputs.size(), here.inputs.size(),
                                      there.inputs.size() == here.inputs.size() ? ", not the same" : ""));
  }
  compare("tokenizer", there.tokenizer, here.tokenizer);
  compare("vocab_size", there.vocab_size, here.vocab_size);
  compare("seed", there.seed, here.seed);
  compare("val_fraction", there.val_fraction, here.val_fraction);
  compare("shard_tokens", there.shard_tokens, here.shard_tokens);
  compare("split_on_percent", there.split_on_percent, here.split_on_percent);
  return differences;
}

std::string manifest_json(const DatasetManifest& manifest) {
  const DatasetOptions& options = manifest.options;
  const TokenizerRecord& tokenizer = manifest.tokenizer;
  const json document = {
      {"format", kDatasetFormat},
      {"version", kDatasetVersion},
      {"options",
       {{"inputs", options.inputs},
        {"tokenizer", options.tokenizer},
        {"vocab_size", options.vocab_size},
        {"seed", options.seed},
        {"val_fraction", options.val_fraction},
        {"shard_tokens", options.shard_tokens},
        {"split_on_percent", options.split_on_percent}}},
      {"tokenizer",
       {{"name", tokenizer.name},
        {"file", tokenizer.file},
        {"sha256", tokenizer.sha256},
        {"vocab_size", tokenizer.vocab_size},
        {"eot_id", tokenizer.eot_id}}},
      {"train", split_json(manifest.train)},
      {"val", split_json(manifest.val)},
  };
  return document.dump(2) + "\n";
}

DatasetManifest parse_manifest(const std::filesystem::path& file, const std::string& text) {
  const std::string name = file.string();
  json document;
  try {
    document = json::parse(text);
  } catch (const json::parse_error& e) {
    throw DataError(fmt::format("{}: not JSON: {}", name, e.what()));
  }
  if (!document.is_object() || !document.contains("format") || document["format"] != kDatasetFormat) {
    throw DataError(fmt::format("{}: not a dataset manifest (\"format\" is not \"{}\")", name, kDatasetFormat));
  }
  if (field<int64_t>(document, "version", name) != kDatasetVersion) {
    throw DataError(fmt::format("{}: dataset manifest version {} (this mlagpt reads version {})", name,
                                document["version"].dump(), kDatasetVersion));
  }
  DatasetManifest manifest;
  const std::string options_where = name + ": options";
  const json& options = document.contains("options") ? document["options"] : json();
  if (!options.contains("inputs") || !options["inputs"].is_array()) {
    throw DataError(fmt::format("{}: \"inputs\" is missing or not a list", options_where));
  }
  for (const json& input : options["inputs"]) {
    if (!input.is_string()) {
      throw DataError(fmt::format("{}: \"inputs\" holds {}, not a path", options_where, input.dump()));
    }
    manifest.options.inputs.push_back(input.get<std::string>());
  }
  manifest.options.tokenizer = field<std::string>(options, "tokenizer", options_where);
  manifest.options.vocab_size = field<int64_t>(options, "vocab_size", options_where);
  manifest.options.seed = field<uint64_t>(options, "seed", options_where);
  manifest.options.val_fraction = field<double>(options, "val_fraction", options_where);
  manifest.options.shard_tokens = field<int64_t>(options, "shard_tokens", options_where);
  manifest.options.split_on_percent = field<bool>(options, "split_on_percent", options_where);

  const std::string tokenizer_where = name + ": tokenizer";
  const json& tokenizer = document.contains("tokenizer") ? document["tokenizer"] : json();
  manifest.tokenizer.name = field<std::string>(tokenizer, "name", tokenizer_where);
  manifest.tokenizer.file = field<std::string>(tokenizer, "file", tokenizer_where);
  manifest.tokenizer.sha256 = field<std::string>(tokenizer, "sha256", tokenizer_where);
  manifest.tokenizer.vocab_size = field<int64_t>(tokenizer, "vocab_size", tokenizer_where);
  manifest.tokenizer.eot_id = field<int64_t>(tokenizer, "eot_id", tokenizer_where);

  manifest.train = parse_split(document, "train", name);
  manifest.val = parse_split(document, "val", name);
  return manifest;
}

DatasetManifest read_dataset_manifest(const std::filesystem::path& dir) {
  const std::filesystem::path file = dir / kManifestName;
  return parse_manifest(file, read_file(file));
}

}  // namespace mlagpt::data
