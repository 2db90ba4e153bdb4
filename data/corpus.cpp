#include "data/corpus.h"

#include <glob.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>
#include <string_view>
#include <system_error>

#include "data/file_io.h"
#include "launch/error.h"

namespace mlagpt::data {
namespace {

namespace fs = std::filesystem;

bool is_glob(const std::string& argument) {
  return argument.find_first_of("*?[") != std::string::npos;
}

// Appends `path` (a file) or the files below it (a directory); `argument` is the --input that led here.
void add_path(const fs::path& path, const std::string& argument, std::vector<fs::path>& files) {
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (error || !fs::exists(status)) {
    throw IoError(fmt::format("--input {}: {}", argument, error ? error.message() : "no such file or directory"));
  }
  if (!fs::is_directory(status)) {
    files.push_back(path);
    return;
  }
  std::vector<fs::path> found;
  try {
    for (const fs::directory_entry& entry : fs::recursive_directory_iterator(path)) {
      if (entry.is_regular_file()) {
        found.push_back(entry.path());
      }
    }
  } catch (const fs::filesystem_error& e) {
    throw IoError(fmt::format("--input {}: cannot list {}: {}", argument, e.path1().string(), e.code().message()));
  }
  if (found.empty()) {
    throw IoError(fmt::format("--input {}: the directory holds no files", argument));
  }
  // Directory order is whatever the file system returns; sort so that the same tree always gives the same dataset.
  std::sort(found.begin(), found.end(), [](const fs::path& a, const fs::path& b) { return a.native() < b.native(); });
  files.insert(files.end(), found.begin(), found.end());
}

void add_glob(const std::string& pattern, std::vector<fs::path>& files) {
  glob_t matches{};
  const int rc = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &matches);
  struct Free {
    glob_t* matches;
    ~Free() { globfree(matches); }
  } free_matches{&matches};
  if (rc == GLOB_NOMATCH) {
    throw IoError(fmt::format("--input '{}': the pattern matches no file", pattern));
  }
  if (rc != 0) {
    throw IoError(fmt::format("--input '{}': glob failed ({})", pattern,
                              rc == GLOB_ABORTED ? "a directory could not be read" : "out of memory"));
  }
  for (size_t i = 0; i < matches.gl_pathc; ++i) {  // glob(3) sorts its matches
    add_path(matches.gl_pathv[i], fmt::format("{} (from '{}')", matches.gl_pathv[i], pattern), files);
  }
}

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

}  // namespace

std::vector<fs::path> resolve_inputs(const std::vector<std::string>& inputs) {
  std::vector<fs::path> expanded;
  for (const std::string& input : inputs) {
    if (input.empty()) {
      throw IoError("--input '': an empty path");
    }
    std::error_code error;
    if (is_glob(input) && !fs::exists(input, error)) {
      add_glob(input, expanded);
    } else {
      add_path(input, input, expanded);
    }
  }
  std::vector<fs::path> files;
  std::set<fs::path> seen;
  for (const fs::path& file : expanded) {
    std::error_code error;
    const fs::path canonical = fs::weakly_canonical(file, error);
    if (seen.insert(error ? file : canonical).second) {
      files.push_back(fs::absolute(file).lexically_normal());
    }
  }
  return files;
}

std::vector<fs::path> default_corpus_files(const fs::path& dir) {
  const std::string install = "install Debian's fortunes package (deploy/setup.sh does), or give --input";
  std::error_code error;
  if (!fs::is_directory(dir, error)) {
    throw IoError(fmt::format("{}: the default corpus is missing; {}", dir.string(), install));
  }
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    const std::string extension = entry.path().extension().string();
    if (!entry.is_symlink() && entry.is_regular_file() && extension != ".dat" && extension != ".u8") {
      files.push_back(entry.path());
    }
  }
  if (error) {
    throw IoError(fmt::format("{}: cannot list the default corpus: {}", dir.string(), error.message()));
  }
  if (files.empty()) {
    throw IoError(fmt::format("{}: no fortune files in the default corpus directory; {}", dir.string(), install));
  }
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) { return a.native() < b.native(); });
  return files;
}

// ---- DocumentReader -------------------------------------------------------------------------------------------

DocumentReader::DocumentReader(std::vector<fs::path> files, bool split_on_percent)
    : files_(std::move(files)), split_on_percent_(split_on_percent) {}

std::string DocumentReader::where(const Document& document) const {
  return fmt::format("{}:{}", files_.at(document.file).string(), document.line);
}

bool DocumentReader::next(Document& document) {
  for (;;) {
    if (has_content_ && next_in_file(document)) {
      return true;
    }
    if (next_file_ == files_.size()) {
      return false;
    }
    current_file_ = next_file_++;
    content_ = read_file(files_[current_file_]);
    bytes_read_ += static_cast<int64_t>(content_.size());
    has_content_ = true;
    position_ = 0;
    line_ = 1;
    std::string extension = files_[current_file_].extension().string();
    std::transform(extension.begin(), extension.end(), extension.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    json_lines_ = extension == ".jsonl";
  }
}

bool DocumentReader::next_in_file(Document& document) {
  if (json_lines_) {
    return next_json_line(document);
  }
  if (split_on_percent_) {
    return next_fortune(document);
  }
  has_content_ = false;
  if (content_.empty()) {
    return false;
  }
  document.text = std::move(content_);  // the whole file is the document: hand it over without a copy
  content_.clear();
  document.file = current_file_;
  document.line = 1;
  return true;
}

bool DocumentReader::next_json_line(Document& document) {
  while (position_ < content_.size()) {
    const size_t newline = content_.find('\n', position_);
    const size_t end = newline == std::string::npos ? content_.size() : newline;
    const std::string_view line(content_.data() + position_, end - position_);
    const int64_t number = line_;
    position_ = newline == std::string::npos ? content_.size() : newline + 1;
    ++line_;
    if (is_blank(line)) {
      continue;
    }
    const std::string where = fmt::format("{}:{}", files_[current_file_].string(), number);
    nlohmann::json value;
    try {
      value = nlohmann::json::parse(line.begin(), line.end());
    } catch (const nlohmann::json::parse_error& e) {
      throw DataError(fmt::format("{}: not a JSON line: {}", where, e.what()));
    }
    if (!value.is_object() || !value.contains("text")) {
      throw DataError(
          fmt::format("{}: no \"text\" field (every line of a .jsonl input must be an object like "
                      "{{\"text\": \"...\"}})",
                      where));
    }
    if (!value["text"].is_string()) {
      throw DataError(fmt::format("{}: \"text\" is a {}, not a string", where, value["text"].type_name()));
    }
    document.text = std::move(value["text"].get_ref<std::string&>());
    if (document.text.empty()) {
      continue;
    }
    document.file = current_file_;
    document.line = number;
    return true;
  }
  has_content_ = false;
  return false;
}

bool DocumentReader::next_fortune(Document& document) {
  size_t start = position_;
  int64_t start_line = line_;
  const auto take = [&](size_t end) {
    document.text.assign(content_, start, end - start);
    document.file = current_file_;
    document.line = start_line;
    return true;
  };
  while (position_ < content_.size()) {
    const size_t newline = content_.find('\n', position_);
    const size_t end = newline == std::string::npos ? content_.size() : newline;
    const bool separator = std::string_view(content_.data() + position_, end - position_) == "%";
    const size_t line_start = position_;
    position_ = newline == std::string::npos ? content_.size() : newline + 1;
    ++line_;
    if (separator) {
      if (line_start > start) {
        return take(line_start);
      }
      start = position_;  // an empty fortune: skip it
      start_line = line_;
    }
  }
  has_content_ = false;
  return position_ > start && take(position_);
}

}  // namespace mlagpt::data
