// Whole-file reads and crash-safe whole-file writes for the small files of a dataset (tokenizer models,
// dataset.json). Shards have their own writer (token_shard.h) with the same temporary-name-and-rename discipline.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace mlagpt::data {

// The file's bytes; throws IoError naming the file and the system's reason.
std::string read_file(const std::filesystem::path& path);

// Writes `bytes` to `<path>.tmp-<pid>`, fsyncs it, renames it onto `path` and fsyncs the directory: a crash leaves
// either the old file or the new one, never a partial file at `path`. Throws IoError naming the file.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

// fsyncs a file written by someone else (HDF5), before it is renamed into place.
void fsync_file(const std::filesystem::path& path);

// fsyncs a directory, so that renames and removals inside it are durable.
void fsync_directory(const std::filesystem::path& dir);

}  // namespace mlagpt::data
