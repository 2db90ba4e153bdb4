// The text `mlagpt prepare` reads: which files (resolve_inputs, default_corpus_files) and the documents in them
// (DocumentReader).
//
// Documents, by file:
//   *.jsonl       JSON Lines: every non-blank line is an object whose string "text" is one document. A line that
//                 is not JSON, not an object, or has no string "text" is an error naming the file and line.
//   other files   plain text: the whole file is one document; with split_on_percent (the fortune format, and what
//                 the default corpus uses), each stretch between lines consisting of just "%" is one document.
// Empty documents (an empty file or "text", nothing between two "%" lines) are skipped: no document is ever just
// an end-of-text token. Text is passed on byte for byte; the tokenizer decides what it accepts.
//
// Files are read whole, one at a time, in order, so memory holds one file (plus the documents taken from it);
// the reader is single-threaded, and `prepare` parallelizes tokenization, not reading.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace mlagpt::data {

// Where Debian's `fortunes` package puts the fortune files (the default corpus: ~2.6 MB of English prose, verse
// and jokes in 43 files, each a list of fortunes separated by "%" lines).
inline constexpr const char* kDefaultCorpusDir = "/usr/share/games/fortunes";

// Expands --input arguments, in the order given, into files:
//   a file               itself;
//   a directory          every regular file below it (recursively; symbolic links to files count, links to
//                        directories are not followed), sorted by path;
//   a glob (* ? [ ])     its matches (glob(3), sorted), each expanded as above.
// A file reached twice (listed twice, or through a link) is read once, at its first place. Throws IoError naming
// the argument for a path that does not exist, a glob without matches, or a directory without files.
std::vector<std::filesystem::path> resolve_inputs(const std::vector<std::string>& inputs);

// The fortune text files in `dir`, sorted: regular files that are not symbolic links (the package links
// NAME.u8 to NAME) and not the NAME.dat indexes strfile writes; subdirectories (such as the off/ of the offensive
// fortunes package) are not read. Throws IoError telling how to install the corpus when `dir` is missing or has
// no fortune files.
std::vector<std::filesystem::path> default_corpus_files(const std::filesystem::path& dir = kDefaultCorpusDir);

struct Document {
  std::string text;
  size_t file = 0;   // index into DocumentReader::files()
  int64_t line = 1;  // line of the file where the document starts (1-based)
};

class DocumentReader {
 public:
  DocumentReader(std::vector<std::filesystem::path> files, bool split_on_percent);

  // Fills `document` with the next non-empty document and returns true, or returns false after the last.
  // Throws IoError (unreadable file) or DataError (malformed JSON Lines), naming the file and line.
  bool next(Document& document);

  const std::vector<std::filesystem::path>& files() const { return files_; }
  // "PATH:LINE", for messages about a document.
  std::string where(const Document& document) const;
  // Bytes of the files read so far (for progress).
  int64_t bytes_read() const { return bytes_read_; }

 private:
  bool next_in_file(Document& document);
  bool next_json_line(Document& document);
  bool next_fortune(Document& document);

  std::vector<std::filesystem::path> files_;
  bool split_on_percent_;
  size_t next_file_ = 0;     // the file to open when the current one is used up
  size_t current_file_ = 0;  // the file `content_` holds
  bool has_content_ = false;
  bool json_lines_ = false;
  std::string content_;
  size_t position_ = 0;  // next unread byte of content_
  int64_t line_ = 1;     // line number at position_
  int64_t bytes_read_ = 0;
};

}  // namespace mlagpt::data
