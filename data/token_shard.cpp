#include "data/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <variant>

#include "data/file_io.h"
#include "data/hdf5_file.h"
#include "launch/error.h"

namespace mlagpt::data {

namespace {

// out[i] = in[i] for `count` tokens of type T at `in` (any byte offset: HDF5 places raw data at any offset, so the
// typed loop runs only when the tokens happen to be aligned, the usual case); returns the largest. The loader spends
// most of its time here: data/CMakeLists.txt compiles this file at -O3 so that the loops vectorize (which
// doubles its speed).
template <typename T>
int64_t widen(const uint8_t* in, int64_t* __restrict out, int64_t count) {
  T maximum = 0;
  if (reinterpret_cast<uintptr_t>(in) % alignof(T) == 0) {
    const T* __restrict typed = reinterpret_cast<const T*>(in);
    for (int64_t i = 0; i < count; ++i) {
      out[i] = typed[i];
      maximum = std::max(maximum, typed[i]);
    }
  } else {
    for (int64_t i = 0; i < count; ++i) {
      T value;
      std::memcpy(&value, in + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
      out[i] = value;
      maximum = std::max(maximum, value);
    }
  }
  return maximum;
}

// The uint16 case, the common one, also cloned for AVX2 and AVX-512 machines (picked once at load time): with the
// loader's buffers warm in cache, the wider vectors give it another 10-20% (loader_bench, A/B of the binaries).
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) int64_t widen_u16(const uint8_t* in, int64_t* out,
                                                                                      int64_t count) {
  return widen<uint16_t>(in, out, count);
}

}  // namespace

int64_t token_bytes(int64_t vocab_size) {
  return vocab_size <= 65536 ? 2 : 4;
}

// ---- ShardWriter ----------------------------------------------------------------------------------------------

struct ShardWriter::State {
  std::filesystem::path path;
  std::filesystem::path temporary;
  ShardInfo info;
  int64_t num_tokens = 0;
  int64_t num_docs = 0;
  std::variant<std::vector<uint16_t>, std::vector<uint32_t>> tokens;
  std::vector<uint64_t> doc_offsets;
  bool finished = false;
};

ShardWriter::ShardWriter(std::filesystem::path path, const ShardInfo& info, int64_t num_tokens, int64_t num_docs)
    : state_(std::make_unique<State>()) {
  if (info.vocab_size <= 0 || info.vocab_size > (int64_t{1} << 32) || info.eot_id < 0 ||
      info.eot_id >= info.vocab_size) {
    throw DataError(fmt::format("{}: vocab_size {} and eot_id {} do not make a vocabulary", path.string(),
                                info.vocab_size, info.eot_id));
  }
  state_->temporary = path;
  state_->temporary += fmt::format(".tmp-{}", ::getpid());
  state_->path = std::move(path);
  state_->info = info;
  state_->num_tokens = num_tokens;
  state_->num_docs = num_docs;
  if (token_bytes(info.vocab_size) == 2) {
    state_->tokens = std::vector<uint16_t>();
  } else {
    state_->tokens = std::vector<uint32_t>();
  }
  std::visit([&](auto& v) { v.reserve(static_cast<size_t>(num_tokens)); }, state_->tokens);
  state_->doc_offsets.reserve(static_cast<size_t>(num_docs));
}

ShardWriter::~ShardWriter() {
  if (state_ && !state_->finished) {
    std::error_code ignored;
    std::filesystem::remove(state_->temporary, ignored);
  }
}

void ShardWriter::add_document(std::span<const int32_t> tokens) {
  std::visit(
      [&](auto& out) {
        state_->doc_offsets.push_back(out.size());
        using T = typename std::decay_t<decltype(out)>::value_type;
        for (const int32_t token : tokens) {
          if (token < 0 || token >= state_->info.vocab_size) {
            throw DataError(fmt::format("{}: token id {} at position {} is outside the vocabulary of {}",
                                        state_->path.string(), token, out.size(), state_->info.vocab_size));
          }
          out.push_back(static_cast<T>(token));
        }
      },
      state_->tokens);
}

void ShardWriter::finish() {
  State& s = *state_;
  const auto written = static_cast<int64_t>(std::visit([](auto& v) { return v.size(); }, s.tokens));
  if (written != s.num_tokens || static_cast<int64_t>(s.doc_offsets.size()) != s.num_docs) {
    throw DataError(fmt::format("{}: {} tokens in {} documents written, {} in {} announced", s.path.string(), written,
                                s.doc_offsets.size(), s.num_tokens, s.num_docs));
  }
  {
    h5::File file = h5::File::create(s.temporary, /*overwrite=*/true);
    std::visit(
        [&](auto& v) {
          using T = typename std::decay_t<decltype(v)>::value_type;
          auto tokens = file.create_dataset<T>("/tokens", {v.size()});
          if (!v.empty()) {
            tokens.write(std::span<const T>(v), {0}, {v.size()});
          }
        },
        s.tokens);
    auto offsets = file.create_dataset<uint64_t>("/doc_offsets", {s.doc_offsets.size()});
    if (!s.doc_offsets.empty()) {
      offsets.write(std::span<const uint64_t>(s.doc_offsets), {0}, {s.doc_offsets.size()});
    }
    file.set_attribute("format", std::string(kShardFormat));
    file.set_attribute("version", kShardVersion);
    file.set_attribute("vocab_size", s.info.vocab_size);
    file.set_attribute("eot_id", s.info.eot_id);
    file.set_attribute("tokenizer", s.info.tokenizer);
    file.set_attribute("tokenizer_sha256", s.info.tokenizer_sha256);
    file.set_attribute("num_tokens", s.num_tokens);
  }
  fsync_file(s.temporary);
  std::filesystem::rename(s.temporary, s.path);
  fsync_directory(s.path.parent_path());
  s.finished = true;
}

// ---- ShardReader ----------------------------------------------------------------------------------------------

struct ShardReader::State {
  std::filesystem::path path;
  ShardInfo info;
  int64_t num_tokens = 0;
  std::vector<uint64_t> doc_offsets;
  int64_t bytes_per_token = 2;
  void* map = nullptr;  // the mapping, page-aligned
  size_t map_length = 0;
  const uint8_t* tokens = nullptr;  // first token inside the mapping

  ~State() {
    if (map != nullptr) {
      munmap(map, map_length);
    }
  }
};

ShardReader::ShardReader(const std::filesystem::path& path) : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.path = path;
  const std::string name = path.string();
  haddr_t offset = HADDR_UNDEF;
  {
    const h5::File file = h5::File::open(path);
    const auto require_attribute = [&](const char* attribute) {
      if (!file.has_attribute(attribute)) {
        throw DataError(fmt::format("{}: not a token shard: attribute '{}' is missing", name, attribute));
      }
    };
    require_attribute("format");
    if (file.string_attribute("format") != kShardFormat) {
      throw DataError(
          fmt::format("{}: format is '{}', expected '{}'", name, file.string_attribute("format"), kShardFormat));
    }
    for (const char* attribute : {"version", "vocab_size", "eot_id", "tokenizer", "tokenizer_sha256", "num_tokens"}) {
      require_attribute(attribute);
    }
    if (file.int_attribute("version") != kShardVersion) {
      throw DataError(fmt::format("{}: version {} is not supported (this build reads version {})", name,
                                  file.int_attribute("version"), kShardVersion));
    }
    s.info.vocab_size = file.int_attribute("vocab_size");
    s.info.eot_id = file.int_attribute("eot_id");
    s.info.tokenizer = file.string_attribute("tokenizer");
    s.info.tokenizer_sha256 = file.string_attribute("tokenizer_sha256");
    s.num_tokens = file.int_attribute("num_tokens");
    if (s.info.vocab_size <= 0 || s.info.eot_id < 0 || s.info.eot_id >= s.info.vocab_size || s.num_tokens < 0) {
      throw DataError(fmt::format("{}: vocab_size {}, eot_id {}, num_tokens {} are inconsistent", name,
                                  s.info.vocab_size, s.info.eot_id, s.num_tokens));
    }
    if (!file.exists("/tokens") || !file.exists("/doc_offsets")) {
      throw DataError(fmt::format("{}: not a token shard: /tokens or /doc_offsets is missing", name));
    }
    const auto tokens = file.open_dataset("/tokens");
    s.bytes_per_token = token_bytes(s.info.vocab_size);
    if (tokens.shape().size() != 1 || !tokens.is_unsigned() ||
        static_cast<int64_t>(tokens.element_bytes()) != s.bytes_per_token) {
      throw DataError(fmt::format("{}: /tokens must be 1-D uint{} for vocab_size {}", name, 8 * s.bytes_per_token,
                                  s.info.vocab_size));
    }
    if (static_cast<int64_t>(tokens.shape()[0]) != s.num_tokens) {
      throw DataError(
          fmt::format("{}: num_tokens says {} but /tokens holds {}", name, s.num_tokens, tokens.shape()[0]));
    }
    if (!tokens.chunk_shape().empty()) {
      throw DataError(fmt::format("{}: /tokens is chunked; mlagpt reads contiguous token datasets", name));
    }
    const auto offsets = file.open_dataset("/doc_offsets");
    if (offsets.shape().size() != 1 || !offsets.is_unsigned() || offsets.element_bytes() != 8) {
      throw DataError(fmt::format("{}: /doc_offsets must be 1-D uint64", name));
    }
    s.doc_offsets = offsets.read_all<uint64_t>();
    for (size_t i = 0; i < s.doc_offsets.size(); ++i) {
      if (s.doc_offsets[i] >= static_cast<uint64_t>(s.num_tokens) ||
          (i > 0 && s.doc_offsets[i] <= s.doc_offsets[i - 1])) {
        throw DataError(fmt::format("{}: /doc_offsets[{}] = {} is out of order or beyond {} tokens", name, i,
                                    s.doc_offsets[i], s.num_tokens));
      }
    }
    offset = H5Dget_offset(tokens.id());
  }
  if (s.num_tokens == 0) {
    return;
  }
  if (offset == HADDR_UNDEF) {
    throw DataError(fmt::format("{}: /tokens has no storage in the file (corrupt or truncated shard)", name));
  }
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    throw IoError(fmt::format("{}: cannot open: {}", name, std::strerror(errno)));
  }
  struct stat st {};
  ::fstat(fd, &st);
  const uint64_t end = offset + static_cast<uint64_t>(s.num_tokens * s.bytes_per_token);
  if (end > static_cast<uint64_t>(st.st_size)) {
    ::close(fd);
    throw DataError(fmt::format("{}: truncated: the tokens end at byte {} but the file has {}", name, end, st.st_size));
  }
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t aligned = offset / page * page;
  s.map_length = static_cast<size_t>(end - aligned);
  s.map = mmap(nullptr, s.map_length, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(aligned));
  ::close(fd);
  if (s.map == MAP_FAILED) {
    s.map = nullptr;
    throw IoError(fmt::format("{}: mmap failed: {}", name, std::strerror(errno)));
  }
  s.tokens = static_cast<const uint8_t*>(s.map) + (offset - aligned);
}

ShardReader::~ShardReader() = default;
ShardReader::ShardReader(ShardReader&&) noexcept = default;
ShardReader& ShardReader::operator=(ShardReader&&) noexcept = default;

const std::filesystem::path& ShardReader::path() const {
  return state_->path;
}
const ShardInfo& ShardReader::info() const {
  return state_->info;
}
int64_t ShardReader::num_tokens() const {
  return state_->num_tokens;
}
const std::vector<uint64_t>& ShardReader::doc_offsets() const {
  return state_->doc_offsets;
}

void ShardReader::read(int64_t start, std::span<int64_t> out) const {
  const State& s = *state_;
  const auto count = static_cast<int64_t>(out.size());
  if (start < 0 || start + count > s.num_tokens) {
    throw DataError(
        fmt::format("{}: tokens [{}, {}) requested of {}", s.path.string(), start, start + count, s.num_tokens));
  }
  // A widening copy that also finds the largest id, so that a token outside the vocabulary is reported here, naming
  // the file and position, instead of failing inside an embedding lookup.
  const uint8_t* in = s.tokens + start * s.bytes_per_token;
  const int64_t largest =
      s.bytes_per_token == 2 ? widen_u16(in, out.data(), count) : widen<uint32_t>(in, out.data(), count);
  if (largest >= s.info.vocab_size) {
    const auto bad = std::find_if(out.begin(), out.end(), [&](int64_t t) { return t >= s.info.vocab_size; });
    throw DataError(fmt::format("{}: token {} at position {} is >= vocab_size {}", s.path.string(), *bad,
                                start + (bad - out.begin()), s.info.vocab_size));
  }
}

void ShardReader::check_token_range() const {
  std::vector<int64_t> block(1 << 16);
  for (int64_t start = 0; start < state_->num_tokens; start += static_cast<int64_t>(block.size())) {
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(block.size()), state_->num_tokens - start);
    read(start, std::span<int64_t>(block.data(), static_cast<size_t>(n)));  // throws on an id >= vocab_size
  }
}

}  // namespace mlagpt::data
