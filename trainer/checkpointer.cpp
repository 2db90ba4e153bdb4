#include "trainer/checkpointer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/div.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/remainder.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <numeric>
#include <regex>
#include <span>
#include <utility>

#include "data/file_io.h"
#include "data/hdf5_file.h"
#include "data/sha256.h"
#include "launch/error.h"

namespace mlagpt::trainer {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kMetadata = "metadata.json";
constexpr const char* kFormat = "mlagpt.checkpoint";
// 4: every rank of the dp x tp mesh writes its shard of the flat buffers of its chunk of the split parameters (and,
//    on tp rank 0, of the replicated ones) as pieces; every tensor records its full shape and split, every piece its
//    part.
// 3: every data-parallel rank writes its shard of the flat buffers as pieces; one optimizer step count.
// 2: rank 0 wrote every tensor whole, with the SHA-256 of each and every parameter's optimizer step count.
// 1: as 2 without checksums; loads unverified, with a warning.
constexpr int64_t kVersion = 4;
constexpr int64_t kUnverifiedVersion = 1;

std::string step_name(int64_t step) {
  return fmt::format("step_{:08d}", step);
}
std::string rank_file(int rank) {
  return fmt::format("rank_{:05d}.h5", rank);
}
bool is_step_name(const std::string& name) {
  static const std::regex pattern("step_[0-9]{8}");
  return std::regex_match(name, pattern);
}
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string sha256_of(const at::Tensor& contiguous) {
  data::Sha256 hash;
  hash.update(std::string_view(static_cast<const char*>(contiguous.const_data_ptr()), contiguous.nbytes()));
  return data::to_hex(hash.finish());
}

// ---- Agreement between the ranks -------------------------------------------------------------------------------

// Where `comm`'s collectives take their tensors: the model's device for NCCL, the CPU otherwise.
c10::Device collective_device(const launch::Communicator& comm, const c10::Device& model_device) {
  return comm.backend() == "nccl" ? model_device : c10::Device(c10::kCPU);
}

// Every rank's `text`, the same vector on every rank: an all_gather of the lengths, then (when any is non-empty)
// one of the bytes, padded to the longest. How the ranks agree on an outcome (every rank's error, "" for none) and
// how world rank 0 gets the piece tables.
std::vector<std::string> all_gather_strings(launch::Communicator& comm, const std::string& text,
                                            const c10::Device& model_device) {
  const int ranks = comm.size();
  if (ranks == 1) {
    return {text};
  }
  const c10::Device device = collective_device(comm, model_device);
  const at::TensorOptions on = at::TensorOptions().device(device);
  const at::Tensor length = at::full({1}, static_cast<int64_t>(text.size()), on.dtype(at::kLong));
  at::Tensor lengths = at::empty({ranks}, on.dtype(at::kLong));
  comm.all_gather(length, lengths);
  const at::Tensor sizes = lengths.cpu();
  const int64_t* n = sizes.const_data_ptr<int64_t>();
  const int64_t longest = *std::max_element(n, n + ranks);
  std::vector<std::string> texts(static_cast<size_t>(ranks));
  if (longest == 0) {
    return texts;
  }
  at::Tensor mine = at::zeros({longest}, at::kByte);
  std::memcpy(mine.data_ptr(), text.data(), text.size());
  mine = mine.to(device);
  at::Tensor all = at::empty({ranks * longest}, on.dtype(at::kByte));
  comm.all_gather(mine, all);
  const at::Tensor bytes = all.cpu();
  const char* data = static_cast<const char*>(bytes.const_data_ptr());
  for (int r = 0; r < ranks; ++r) {
    texts[static_cast<size_t>(r)].assign(data + static_cast<ptrdiff_t>(r * longest), static_cast<size_t>(n[r]));
  }
  return texts;
}

// The dp x tp mesh as one group, for the few exchanges that must reach every rank (agreement, piece tables) without
// a world communicator: a gather over the tp group, then of the tp groups' results over the dp group (which holds
// one rank of every tp group), so every rank ends with every rank's text, by world rank (dp_rank * tp + tp_rank).
struct World {
  launch::Communicator& dp;
  launch::Communicator& tp;
  c10::Device device;  // the model's
  int rank() const { return dp.rank() * tp.size() + tp.rank(); }
  int size() const { return dp.size() * tp.size(); }
};

std::string join_lengths_prefixed(const std::vector<std::string>& texts) {
  std::string joined;
  for (const std::string& text : texts) {
    joined += std::to_string(text.size()) + ":" + text;
  }
  return joined;
}
std::vector<std::string> split_lengths_prefixed(const std::string& joined) {
  std::vector<std::string> texts;
  size_t at = 0;
  while (at < joined.size()) {
    const size_t colon = joined.find(':', at);
    const size_t length = std::stoul(joined.substr(at, colon - at));
    texts.push_back(joined.substr(colon + 1, length));
    at = colon + 1 + length;
  }
  return texts;
}

std::vector<std::string> all_gather_strings(const World& world, const std::string& text) {
  if (world.tp.size() == 1) {
    return all_gather_strings(world.dp, text, world.device);
  }
  const std::vector<std::string> group = all_gather_strings(world.tp, text, world.device);
  if (world.dp.size() == 1) {
    return group;
  }
  std::vector<std::string> all;
  for (const std::string& groups : all_gather_strings(world.dp, join_lengths_prefixed(group), world.device)) {
    for (std::string& one : split_lengths_prefixed(groups)) {
      all.push_back(std::move(one));
    }
  }
  return all;
}

// Throws IoError on every rank when any rank's `error` is not empty: this rank's own, or the first failed rank's.
void agree_or_throw(const World& world, const std::string& error, const std::string& what) {
  const std::vector<std::string> errors = all_gather_strings(world, error);
  if (!error.empty()) {
    throw IoError(error);
  }
  for (size_t r = 0; r < errors.size(); ++r) {
    if (!errors[r].empty()) {
      throw IoError(fmt::format("[ckpt] {}: rank {} failed: {}", what, r, errors[r]));
    }
  }
}

void check_mesh(const launch::Communicator& dp, FlatAdamW& optimizer) {
  if (optimizer.comm().size() != dp.size() || optimizer.comm().rank() != dp.rank() ||
      optimizer.layout().shards != dp.size()) {
    throw Error(fmt::format(
        "Checkpointer: the optimizer's data-parallel group (rank {} of {}, {} shards) is not the checkpointer's "
        "(rank {} of {})",
        optimizer.comm().rank(), optimizer.comm().size(), optimizer.layout().shards, dp.rank(), dp.size()));
  }
}

// How parameter `name` is laid out over a tensor-parallel group of `tp` ranks: the dimension cut into `parts`
// chunks, or -1 and 1 part (whole on every rank, or a group of one).
struct Split {
  int64_t dim = -1;
  int64_t parts = 1;
};
Split split_of(const ParameterSplits& splits, const std::string& name, int64_t tp) {
  const auto found = splits.find(name);
  if (found == splits.end() || !found->second.split() || tp == 1) {
    return {};
  }
  return {found->second.dim, tp};
}

// The full shape of a parameter whose tensor-parallel-local shape is `local`.
std::vector<int64_t> full_shape(const std::string& name, std::vector<int64_t> local, const Split& split) {
  if (split.parts == 1) {
    return local;
  }
  if (split.dim >= static_cast<int64_t>(local.size())) {
    throw Error(fmt::format("Checkpointer: parameter {} of shape [{}] is split along dimension {}, which it lacks",
                            name, fmt::join(local, ", "), split.dim));
  }
  local[static_cast<size_t>(split.dim)] *= split.parts;
  return local;
}

// ---- Writing ---------------------------------------------------------------------------------------------------

// Writes a 1-D float32 (or, for RNG states, uint8) piece and returns its entry of the piece table.
nlohmann::json write_piece(data::h5::File& file, const std::string& tensor, const std::string& dataset_name,
                           const at::Tensor& data, int64_t begin, const std::string& file_name) {
  const bool bytes = data.scalar_type() == at::kByte;
  const at::Tensor t = (bytes ? data.cpu() : data.detach().to(at::kCPU, at::kFloat)).contiguous().reshape({-1});
  const std::vector<uint64_t> shape{static_cast<uint64_t>(t.numel())};
  auto dataset =
      bytes ? file.create_dataset<uint8_t>(dataset_name, shape) : file.create_dataset<float>(dataset_name, shape);
  if (bytes) {
    dataset.write(std::span<const uint8_t>(t.const_data_ptr<uint8_t>(), shape[0]), {0}, shape);
  } else {
    dataset.write(std::span<const float>(t.const_data_ptr<float>(), shape[0]), {0}, shape);
  }
  dataset.flush();  // or a failure to write what HDF5 buffers for it would go unreported when it closes
  return {{"tensor", tensor},         {"file", file_name},       {"begin", begin},
          {"end", begin + t.numel()}, {"dataset", dataset_name}, {"sha256", sha256_of(t)}};
}

// This rank's share of the checkpoint: its shard of every bucket (parameter values and both moments) of the
// parameters split over the tensor-parallel group (its chunk of them, part `tp_rank`) and, on tp rank 0, of the
// replicated ones; world rank 0 adds the generators' states. The Trainer reseeds the generators before every step
// (dropout's masks derive from the seed, the rank and the step), so its steps do not depend on these; they restore
// the generators as they were for anything drawn between steps.
nlohmann::json write_rank_file(data::h5::File& file, FlatAdamW& optimizer, const std::string& file_name,
                               const World& world, const ParameterSplits& splits) {
  nlohmann::json pieces = nlohmann::json::array();
  const FlatLayout& layout = optimizer.layout();
  const int tp_rank = world.tp.rank();
  for (const StateSlice& slice : optimizer.written_slices()) {
    const std::string& name = layout.params[static_cast<size_t>(slice.param)].name;
    const bool split = split_of(splits, name, world.tp.size()).parts > 1;
    if (!split && tp_rank != 0) {
      continue;  // tp rank 0 writes it, and this rank holds the same bits
    }
    const std::string at = fmt::format("{}/{}", name, slice.begin);
    const size_t first = pieces.size();
    pieces.push_back(write_piece(file, "params/" + name, "/params/" + at, slice.value, slice.begin, file_name));
    pieces.push_back(write_piece(file, "optim/" + name + "/exp_avg", "/optim/" + at + "/exp_avg", slice.exp_avg,
                                 slice.begin, file_name));
    pieces.push_back(write_piece(file, "optim/" + name + "/exp_avg_sq", "/optim/" + at + "/exp_avg_sq",
                                 slice.exp_avg_sq, slice.begin, file_name));
    for (size_t i = first; i < pieces.size(); ++i) {
      pieces[i]["part"] = split ? tp_rank : 0;
    }
  }
  if (world.rank() == 0) {
    const c10::Device device = optimizer.parameters().front().tensor.device();
    const auto write = [&](at::Generator generator, const std::string& name) {
      const std::lock_guard<std::mutex> lock(generator.mutex());
      const at::Tensor state = generator.get_state();
      nlohmann::json piece = write_piece(file, name, "/" + name, state, 0, file_name);
      piece["part"] = 0;
      piece["shape"] = state.sizes().vec();
      piece["dtype"] = "uint8";
      pieces.push_back(std::move(piece));
    };
    write(at::detail::getDefaultCPUGenerator(), "rng/cpu");
    if (device.is_cuda()) {
      write(at::globalContext().defaultGenerator(device), "rng/cuda");
    }
  }
  file.flush();  // closing would flush too, but could not report a failure (a full disk)
  return pieces;
}

// ---- metadata.json ---------------------------------------------------------------------------------------------

// One stored piece of a tensor: elements [begin, end) of part `part` of it (of the tensor whole when it has one
// part), flattened, in dataset `dataset` of `file`.
struct Piece {
  std::string file;
  int64_t part = 0;
  int64_t begin = 0;
  int64_t end = 0;
  std::string dataset;
  std::string sha256;          // empty: unverified (version 1)
  std::vector<int64_t> shape;  // the dataset's: [end - begin], or the tensor's (versions 1, 2); empty: any
};
struct TensorRecord {
  std::vector<int64_t> shape;  // full
  std::string dtype;
  Split split;                // versions 1 to 3: one part
  std::vector<Piece> pieces;  // by part, then begin, covering each part's [0, part_numel()) once
  int64_t numel() const { return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>()); }
  int64_t part_numel() const { return numel() / split.parts; }
};
struct Metadata {
  std::string path;
  int64_t version = 0;
  TrainingState state;
  DatasetIdentity dataset;
  nlohmann::json config;
  std::map<std::string, TensorRecord> tensors;     // "params/wte.weight", "optim/wte.weight/exp_avg", "rng/cpu"
  int64_t optimizer_step = 0;                      // version 3
  std::map<std::string, int64_t> optimizer_steps;  // version 2: per parameter
};

// Throws IoError naming `path` unless the split of `name` cuts its shape into equal parts and the pieces of `name`,
// sorted, cover each part's [0, part_numel) exactly once, each in a file of the checkpoint's directory.
void check_coverage(const std::string& path, const std::string& name, TensorRecord& record) {
  const Split& split = record.split;
  const int64_t rank = static_cast<int64_t>(record.shape.size());
  if (split.parts < 1 || (split.parts > 1 && (split.dim < 0 || split.dim >= rank ||
                                              record.shape[static_cast<size_t>(split.dim)] % split.parts != 0))) {
    throw IoError(fmt::format("[ckpt] {}: tensor {} of shape [{}] is split along dimension {} into {} parts", path,
                              name, fmt::join(record.shape, ", "), split.dim, split.parts));
  }
  std::sort(record.pieces.begin(), record.pieces.end(),
            [](const Piece& a, const Piece& b) { return std::pair(a.part, a.begin) < std::pair(b.part, b.begin); });
  for (const Piece& piece : record.pieces) {
    if (piece.file.empty() || fs::path(piece.file).filename().string() != piece.file) {
      throw IoError(fmt::format("[ckpt] {}: tensor {} has a piece in \"{}\", not a file of the checkpoint", path, name,
                                piece.file));
    }
    if (piece.part < 0 || piece.part >= split.parts) {
      throw IoError(fmt::format("[ckpt] {}: tensor {} has a piece of part {}, but {} part(s)", path, name, piece.part,
                                split.parts));
    }
  }
  auto piece = record.pieces.begin();
  for (int64_t part = 0; part < split.parts; ++part) {
    const auto first = piece;
    int64_t next = 0;
    bool covered = true;
    for (; piece != record.pieces.end() && piece->part == part; ++piece) {
      covered = covered && piece->begin == next && piece->end > piece->begin;
      next = piece->end;
    }
    if (!covered || next != record.part_numel()) {
      std::vector<std::string> ranges;
      for (auto p = first; p != piece; ++p) {
        ranges.push_back(fmt::format("[{}, {})", p->begin, p->end));
      }
      const std::string which = split.parts == 1 ? "" : fmt::format(" (part {} of {})", part, split.parts);
      throw IoError(fmt::format("[ckpt] {}: the pieces of tensor {}{} ({}) do not cover its {} elements once", path,
                                name, which, fmt::join(ranges, " "), record.part_numel()));
    }
  }
}

Metadata read_metadata(const fs::path& step_dir) {
  Metadata metadata;
  metadata.path = (step_dir / kMetadata).string();
  std::ifstream in(metadata.path);
  if (!in) {
    throw IoError(fmt::format("[ckpt] {}: no such file (the checkpoint is incomplete)", metadata.path));
  }
  try {
    const nlohmann::json json = nlohmann::json::parse(in);
    metadata.version = json.value("version", int64_t{0});
    if (json.value("format", "") != kFormat || metadata.version < kUnverifiedVersion || metadata.version > kVersion) {
      throw IoError(fmt::format("[ckpt] {}: not an {} file of version {} to {}", metadata.path, kFormat,
                                kUnverifiedVersion, kVersion));
    }
    metadata.state.step = json.at("step").get<int64_t>();
    metadata.state.tokens_seen = json.at("tokens_seen").get<int64_t>();
    metadata.state.loader_position = json.at("loader_position").get<int64_t>();
    const auto& dataset = json.at("dataset");
    metadata.dataset = {dataset.at("tokenizer").get<std::string>(), dataset.at("tokenizer_sha256").get<std::string>(),
                        dataset.at("vocab_size").get<int64_t>()};
    metadata.config = json.at("config");
    for (const auto& [name, record] : json.at("tensors").items()) {
      TensorRecord& stored = metadata.tensors[name];
      stored.shape = record.at("shape").get<std::vector<int64_t>>();
      stored.dtype = record.value("dtype", name.starts_with("rng/") ? "uint8" : "float32");
      if (stored.dtype != "float32" && stored.dtype != "uint8") {
        throw IoError(
            fmt::format("[ckpt] {}: tensor {} has dtype {}, not float32 or uint8", metadata.path, name, stored.dtype));
      }
      if (metadata.version >= 4) {
        stored.split = {record.at("split").at("dim").get<int64_t>(), record.at("split").at("parts").get<int64_t>()};
      }
      if (metadata.version >= 3) {
        for (const auto& piece : record.at("pieces")) {
          const int64_t begin = piece.at("begin").get<int64_t>();
          const int64_t end = piece.at("end").get<int64_t>();
          stored.pieces.push_back({piece.at("file").get<std::string>(),
                                   metadata.version >= 4 ? piece.at("part").get<int64_t>() : 0,
                                   begin,
                                   end,
                                   piece.at("dataset").get<std::string>(),
                                   piece.at("sha256").get<std::string>(),
                                   {end - begin}});
        }
      } else {
        // Versions 1 and 2: the tensor whole, in the dataset of its name.
        stored.pieces.push_back({record.at("file").get<std::string>(), 0, 0, stored.numel(), "/" + name,
                                 metadata.version >= 2 ? record.at("sha256").get<std::string>() : "", stored.shape});
      }
      check_coverage(metadata.path, name, stored);
    }
    if (metadata.version >= 3) {
      metadata.optimizer_step = json.at("optimizer").at("step_count").get<int64_t>();
    } else if (metadata.version == 2) {
      metadata.optimizer_steps = json.at("optimizer_steps").get<std::map<std::string, int64_t>>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw IoError(fmt::format("[ckpt] {}: unreadable: {}", metadata.path, e.what()));
  }
  if (metadata.version < 2) {
    spdlog::warn("[ckpt] {}: format version {} has no checksums: its tensors are not verified", metadata.path,
                 metadata.version);
  }
  return metadata;
}

// ---- Reading ---------------------------------------------------------------------------------------------------

data::h5::File open_rank_file(const fs::path& path) {
  try {
    return data::h5::File::open(path);
  } catch (const Hdf5Error& e) {
    throw IoError(fmt::format("[ckpt] {}: unreadable (truncated or damaged): {}", path.string(), e.what()));
  } catch (const IoError& e) {
    throw IoError(fmt::format("[ckpt] {}", e.what()));
  }
}

// Reads and verifies pieces of one checkpoint, opening each rank file the first time a piece of it is needed, and
// counts the bytes it reads.
class PieceReader {
 public:
  PieceReader(fs::path dir, const Metadata& metadata) : dir_(std::move(dir)), metadata_(metadata) {}

  const data::h5::File& file(const std::string& name) {
    auto found = files_.find(name);
    if (found == files_.end()) {
      found = files_.emplace(name, open_rank_file(dir_ / name)).first;
    }
    return found->second;
  }

  // The piece whole, as a 1-D CPU tensor of `dtype`, after checking its shape, type and SHA-256. Throws IoError /
  // DataError naming the file and the dataset.
  at::Tensor read(const Piece& piece, at::ScalarType dtype) {
    const data::h5::File& h5 = file(piece.file);
    if (!h5.exists(piece.dataset)) {
      throw IoError(fmt::format("[ckpt] {}: tensor {} is missing", h5.path(), piece.dataset));
    }
    try {
      const auto dataset = h5.open_dataset(piece.dataset);
      const std::vector<uint64_t> dims = dataset.shape();
      const std::vector<int64_t> shape(dims.begin(), dims.end());
      if (!piece.shape.empty() && shape != piece.shape) {
        throw IoError(fmt::format("[ckpt] {}: tensor {} has shape [{}], {} records [{}]", h5.path(), piece.dataset,
                                  fmt::join(shape, ", "), metadata_.path, fmt::join(piece.shape, ", ")));
      }
      const bool bytes = dtype == at::kByte;
      if (dataset.type_class() != (bytes ? H5T_INTEGER : H5T_FLOAT) || dataset.element_bytes() != (bytes ? 1 : 4)) {
        throw IoError(
            fmt::format("[ckpt] {}: tensor {} is not {}", h5.path(), piece.dataset, bytes ? "uint8" : "float32"));
      }
      at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(dtype));
      const std::vector<uint64_t> origin(dims.size(), 0);
      if (bytes) {
        dataset.read(std::span<uint8_t>(tensor.data_ptr<uint8_t>(), static_cast<size_t>(tensor.numel())), origin, dims);
      } else {
        dataset.read(std::span<float>(tensor.data_ptr<float>(), static_cast<size_t>(tensor.numel())), origin, dims);
      }
      bytes_ += static_cast<int64_t>(tensor.nbytes());
      if (!piece.sha256.empty()) {
        const std::string digest = sha256_of(tensor);
        if (digest != piece.sha256) {
          throw DataError(fmt::format("[ckpt] {}: tensor {} is corrupt: its bytes have SHA-256 {}, {} records {}",
                                      h5.path(), piece.dataset, digest, metadata_.path, piece.sha256));
        }
      }
      return tensor.reshape({-1});
    } catch (const Hdf5Error& e) {
      throw IoError(fmt::format("[ckpt] {}: cannot read tensor {}: {}", h5.path(), piece.dataset, e.what()));
    }
  }

  int64_t bytes() const { return bytes_; }

 private:
  fs::path dir_;
  const Metadata& metadata_;
  std::map<std::string, data::h5::File> files_;
  int64_t bytes_ = 0;
};

const TensorRecord& record_of(const Metadata& metadata, const std::string& name) {
  const auto found = metadata.tensors.find(name);
  if (found == metadata.tensors.end()) {
    throw IoError(fmt::format("[ckpt] {}: records no tensor {}", metadata.path, name));
  }
  return found->second;
}

// Elements [lo, hi) of part `part` of tensor `name`, flattened, from the pieces that overlap them (each read whole
// and verified).
at::Tensor read_part_range(PieceReader& reader, const Metadata& metadata, const std::string& name, int64_t part,
                           int64_t lo, int64_t hi) {
  const TensorRecord& record = record_of(metadata, name);
  const at::ScalarType dtype = record.dtype == "uint8" ? at::kByte : at::kFloat;
  at::Tensor out = at::empty({hi - lo}, at::TensorOptions().dtype(dtype));
  for (const Piece& piece : record.pieces) {
    if (piece.part != part || piece.end <= lo || piece.begin >= hi) {
      continue;
    }
    const at::Tensor data = reader.read(piece, dtype);
    const int64_t from = std::max(lo, piece.begin);
    const int64_t to = std::min(hi, piece.end);
    out.narrow(0, from - lo, to - from).copy_(data.narrow(0, from - piece.begin, to - from));
  }
  return out;
}

int64_t product(std::span<const int64_t> dims) {
  return std::accumulate(dims.begin(), dims.end(), int64_t{1}, std::multiplies<>());
}

// A tensor viewed as [outer, extent, inner] around the dimension it is split along: chunk k of `parts` is rows
// [k * rows(), (k + 1) * rows()) of the middle dimension, and its flat index i is (a * rows() + x) * inner + b.
// A tensor in one part is [1, numel, 1].
struct Chunking {
  int64_t outer = 1;
  int64_t extent = 1;
  int64_t inner = 1;
  int64_t parts = 1;
  int64_t rows() const { return extent / parts; }
  // Where chunk k starts within one outer slice of the full tensor, flat.
  int64_t chunk_offset(int64_t k) const { return k * rows() * inner; }
  bool operator==(const Chunking&) const = default;
};

Chunking chunking(const std::vector<int64_t>& shape, const Split& split) {
  if (split.parts == 1) {
    return {.extent = product(shape)};
  }
  const auto dim = static_cast<size_t>(split.dim);
  const std::span<const int64_t> dims(shape);
  return {.outer = product(dims.first(dim)),
          .extent = shape[dim],
          .inner = product(dims.subspan(dim + 1)),
          .parts = split.parts};
}

// The piece of a float32 tensor one rank needs: elements [lo, hi) of its chunk `chunk` of `chunking` (the current
// mesh's) of the tensor whose full shape is `shape`, flattened.
struct Wanted {
  std::vector<int64_t> shape;
  Chunking chunking;
  int64_t chunk = 0;
  int64_t lo = 0;
  int64_t hi = 0;
};

// What `wanted` asks of tensor `name`, from the stored pieces that hold any element of it (each read whole and
// verified), whatever the split the checkpoint was written with. ConfigError when the full shapes differ.
at::Tensor read_wanted(PieceReader& reader, const Metadata& metadata, const std::string& name, const Wanted& wanted) {
  const TensorRecord& record = record_of(metadata, name);
  if (record.shape != wanted.shape) {
    throw ConfigError(fmt::format("[ckpt] {}: {} has shape [{}], the model expects [{}]", metadata.path, name,
                                  fmt::join(record.shape, ", "), fmt::join(wanted.shape, ", ")));
  }
  const Chunking stored = chunking(record.shape, record.split);
  if (stored == wanted.chunking) {
    return read_part_range(reader, metadata, name, wanted.chunk, wanted.lo, wanted.hi);
  }
  at::Tensor out = at::empty({wanted.hi - wanted.lo}, at::kFloat);
  if (wanted.hi == wanted.lo) {
    return out;
  }
  // Every wanted element's flat index in the full tensor, then its stored part and its flat index in that part
  // (both maps keep the order, so each part's indices come out sorted).
  const Chunking& w = wanted.chunking;
  const at::Tensor local = at::arange(wanted.lo, wanted.hi, at::kLong);
  const at::Tensor full = at::div(local, w.rows() * w.inner, "floor") * (w.extent * w.inner) +
                          w.chunk_offset(wanted.chunk) + at::remainder(local, w.rows() * w.inner);
  const at::Tensor within = at::remainder(full, stored.extent * stored.inner);  // (y * inner + b), y the row
  const at::Tensor part = at::div(within, stored.rows() * stored.inner, "floor");
  const at::Tensor index = at::div(full, stored.extent * stored.inner, "floor") * (stored.rows() * stored.inner) +
                           within - part * (stored.rows() * stored.inner);
  for (int64_t k = 0; k < stored.parts; ++k) {
    const at::Tensor positions = (part == k).nonzero().reshape({-1});
    if (positions.numel() == 0) {
      continue;
    }
    const at::Tensor in_part = index.index_select(0, positions);
    for (const Piece& piece : record.pieces) {
      if (piece.part != k) {
        continue;
      }
      const int64_t from = at::searchsorted(in_part, piece.begin).item<int64_t>();
      const int64_t to = at::searchsorted(in_part, piece.end).item<int64_t>();
      if (from == to) {
        continue;
      }
      const at::Tensor data = reader.read(piece, at::kFloat);
      out.index_copy_(0, positions.narrow(0, from, to - from),
                      data.index_select(0, in_part.narrow(0, from, to - from) - piece.begin));
    }
  }
  return out;
}

// Whether the checkpoint has tensor `name`: recorded (version 2 and later), or in rank 0's file (version 1, whose
// metadata may leave the generators out).
bool has_tensor(PieceReader& reader, const Metadata& metadata, const std::string& name) {
  if (metadata.tensors.contains(name)) {
    return true;
  }
  return metadata.version < 2 && reader.file(rank_file(0)).exists("/" + name);
}

// A generator's state: one piece, written by rank 0.
at::Tensor read_rng(PieceReader& reader, const Metadata& metadata, const std::string& name) {
  const auto found = metadata.tensors.find(name);
  if (found == metadata.tensors.end()) {  // version 1: unrecorded, whatever rank 0's file holds
    return reader.read({rank_file(0), 0, 0, 0, "/" + name, "", {}}, at::kByte);
  }
  return read_part_range(reader, metadata, name, 0, 0, found->second.numel());
}

// Everything a checkpoint restores, read and verified before any of it is.
struct Stored {
  std::vector<at::Tensor> params;  // per parameter, this rank's chunk of it flattened, on the CPU
  // Per held slice: its range of the moments; undefined where the checkpoint has no state (versions 1 and 2, a
  // parameter that had not been stepped).
  std::vector<at::Tensor> exp_avg;
  std::vector<at::Tensor> exp_avg_sq;
  int64_t step_count = 0;
  std::vector<std::pair<std::string, at::Tensor>> rng;  // "rng/cpu", "rng/cuda"
};

// A parameter as the current mesh lays it out: its full shape and which chunk of it this rank holds.
struct ParamLayout {
  std::string name;
  std::vector<int64_t> shape;  // full
  Chunking chunking;
  int64_t chunk = 0;
  int64_t numel = 0;  // of the chunk
  Wanted range(int64_t lo, int64_t hi) const { return {shape, chunking, chunk, lo, hi}; }
};

std::vector<ParamLayout> param_layouts(const FlatLayout& layout, const ParameterSplits& splits, int64_t tp_rank,
                                       int64_t tp_size) {
  std::vector<ParamLayout> params;
  for (const FlatParam& param : layout.params) {
    const Split split = split_of(splits, param.name, tp_size);
    std::vector<int64_t> shape = full_shape(param.name, param.shape, split);
    const Chunking chunks = chunking(shape, split);
    params.push_back({param.name, std::move(shape), chunks, split.parts > 1 ? tp_rank : 0, param.numel});
  }
  return params;
}

std::vector<at::Tensor> read_params(PieceReader& reader, const Metadata& metadata,
                                    const std::vector<ParamLayout>& params) {
  std::vector<at::Tensor> out;
  for (const ParamLayout& param : params) {
    out.push_back(read_wanted(reader, metadata, "params/" + param.name, param.range(0, param.numel)));
  }
  return out;
}

// The optimizer state of the ranges this rank holds, and the step count.
void read_optimizer(PieceReader& reader, const Metadata& metadata, const FlatLayout& layout,
                    const std::vector<ParamLayout>& params, const std::vector<StateSlice>& held, Stored& stored) {
  for (const StateSlice& slice : held) {
    const ParamLayout& param = params[static_cast<size_t>(slice.param)];
    const std::string group = "optim/" + param.name;
    at::Tensor exp_avg;
    at::Tensor exp_avg_sq;
    if (metadata.version >= 3 || has_tensor(reader, metadata, group + "/exp_avg")) {
      exp_avg = read_wanted(reader, metadata, group + "/exp_avg", param.range(slice.begin, slice.end));
      exp_avg_sq = read_wanted(reader, metadata, group + "/exp_avg_sq", param.range(slice.begin, slice.end));
    }
    stored.exp_avg.push_back(exp_avg);
    stored.exp_avg_sq.push_back(exp_avg_sq);
  }
  if (metadata.version >= 3) {
    stored.step_count = metadata.optimizer_step;
    return;
  }
  // Versions 1 and 2 counted steps per parameter (torch AdamW), in an attribute of rank 0's /optim/<name>; they are
  // all the same but for a parameter never stepped.
  for (const FlatParam& param : layout.params) {
    const std::string group = "/optim/" + param.name;
    if (!has_tensor(reader, metadata, group.substr(1) + "/exp_avg")) {
      continue;
    }
    const data::h5::File& file = reader.file(rank_file(0));
    int64_t step = 0;
    try {
      step = file.int_attribute("step", group);
    } catch (const Hdf5Error& e) {
      throw IoError(fmt::format("[ckpt] {}: cannot read the step of {}: {}", file.path(), group, e.what()));
    }
    if (metadata.version >= 2) {
      const auto recorded = metadata.optimizer_steps.find(param.name);
      if (recorded == metadata.optimizer_steps.end() || recorded->second != step) {
        throw DataError(
            fmt::format("[ckpt] {}: {} has optimizer step {}, {} records {}", file.path(), group, step, metadata.path,
                        recorded == metadata.optimizer_steps.end() ? "none" : std::to_string(recorded->second)));
      }
    }
    stored.step_count = std::max(stored.step_count, step);
  }
}

// /rng/cpu always; /rng/cuda, the generator of the model's device, when training on a GPU and the checkpoint has
// one (a checkpoint written on the CPU and resumed on a GPU has none: that generator keeps its seeding).
void read_rng_states(PieceReader& reader, const Metadata& metadata, const c10::Device& device, Stored& stored) {
  stored.rng.emplace_back("rng/cpu", read_rng(reader, metadata, "rng/cpu"));
  if (device.is_cuda() && has_tensor(reader, metadata, "rng/cuda")) {
    stored.rng.emplace_back("rng/cuda", read_rng(reader, metadata, "rng/cuda"));
  }
}

void restore_rng_states(const Stored& stored, const c10::Device& device) {
  for (const auto& [name, state] : stored.rng) {
    at::Generator generator =
        name == "rng/cpu" ? at::detail::getDefaultCPUGenerator() : at::globalContext().defaultGenerator(device);
    const std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(state);
  }
}

// ---- Directories -----------------------------------------------------------------------------------------------

// The complete step directories of `dir`, oldest first.
std::vector<fs::path> complete_steps(const fs::path& dir) {
  std::vector<fs::path> complete;
  std::error_code error;
  if (!fs::is_directory(dir, error)) {
    return complete;
  }
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (is_step_name(entry.path().filename().string()) && Checkpointer::is_complete(entry.path())) {
      complete.push_back(entry.path());
    }
  }
  std::sort(complete.begin(), complete.end());
  return complete;
}

// The step directory `latest` names, or "" when there is no (readable) latest file.
std::string latest_name(const fs::path& dir) {
  std::ifstream latest(dir / "latest");
  std::string name;
  latest >> name;
  return name;
}

}  // namespace

Checkpointer::Checkpointer(fs::path dir, int64_t keep, launch::Communicator& dp)
    : dir_(std::move(dir)),
      keep_(keep),
      own_tp_(std::make_unique<launch::LocalCommunicator>()),
      dp_(dp),
      tp_(*own_tp_) {}

Checkpointer::Checkpointer(fs::path dir, int64_t keep, launch::Communicator& dp, launch::Communicator& tp,
                           ParameterSplits splits)
    : dir_(std::move(dir)), keep_(keep), dp_(dp), tp_(tp), splits_(std::move(splits)) {}

bool Checkpointer::is_complete(const fs::path& step_dir) {
  std::error_code ignored;
  return fs::is_regular_file(step_dir / kMetadata, ignored);
}

SaveReport Checkpointer::save(const TrainingState& state, FlatAdamW& optimizer, const TrainConfig& config,
                              const DatasetIdentity& dataset) {
  const auto start = Clock::now();
  check_mesh(dp_, optimizer);
  const World world{dp_, tp_, optimizer.parameters().front().tensor.device()};
  const int rank = world.rank();
  const fs::path step_dir = dir_ / step_name(state.step);
  const fs::path replacement = step_dir.string() + ".new";
  const std::string what = fmt::format("saving step {} to {}", state.step, step_dir.string());

  // World rank 0 readies the directory. One there without metadata is a crashed attempt at this step; a complete
  // one is replaced only after the new one is whole (below), so a failure now never destroys it.
  std::string error;
  int64_t replacing = 0;
  if (rank == 0) {
    try {
      fs::create_directories(dir_);
      if (fs::exists(step_dir) && !is_complete(step_dir)) {
        fs::remove_all(step_dir);
      }
      replacing = is_complete(step_dir) ? 1 : 0;
      fs::remove_all(replacement);
      fs::create_directories(replacing ? replacement : step_dir);
    } catch (const std::exception& e) {
      error = fmt::format("[ckpt] {}: cannot make the step directory: {}", step_dir.string(), e.what());
    }
  }
  // The others learn from rank 0 whether it failed, or else whether it is replacing a complete checkpoint.
  std::string outcome;
  if (rank == 0) {
    outcome = error.empty() ? std::to_string(replacing) : "E" + error;
  }
  const std::string prepared = all_gather_strings(world, outcome).front();
  if (prepared.starts_with("E")) {
    throw IoError(rank == 0 ? error : fmt::format("[ckpt] {}: rank 0 failed: {}", what, prepared.substr(1)));
  }
  replacing = prepared == "1" ? 1 : 0;
  const fs::path staging = replacing ? replacement : step_dir;

  // Every rank writes its file at once, under a temporary name.
  const std::string file_name = rank_file(rank);
  const fs::path temporary = staging / (file_name + ".tmp");
  nlohmann::json table;
  try {
    nlohmann::json pieces;
    {
      data::h5::File file = data::h5::File::create(temporary, /*overwrite=*/true);
      pieces = write_rank_file(file, optimizer, file_name, world, splits_);
    }
    data::fsync_file(temporary);
    fs::rename(temporary, staging / file_name);
    data::fsync_directory(staging);
    table = {{"bytes", static_cast<int64_t>(fs::file_size(staging / file_name))}, {"pieces", std::move(pieces)}};
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    error = fmt::format("[ckpt] {}: cannot write it: {}", (staging / file_name).string(), e.what());
  }
  // The ranks agree on whether every file is there and rank 0 learns what each holds, in one exchange: every rank
  // sends its piece table, or its error.
  const std::vector<std::string> tables = all_gather_strings(world, error.empty() ? table.dump() : "E" + error);
  const auto failed = std::find_if(tables.begin(), tables.end(), [](const std::string& t) { return t[0] == 'E'; });
  if (failed != tables.end()) {
    if (rank == 0) {
      std::error_code ignored;
      fs::remove_all(staging, ignored);  // without metadata: nobody would load it, and a retry would remove it
    }
    if (!error.empty()) {
      throw IoError(error);
    }
    throw IoError(fmt::format("[ckpt] {}: rank {} failed: {}", what, failed - tables.begin(), failed->substr(1)));
  }

  SaveReport report{.path = step_dir};
  report.bytes = table.at("bytes").get<int64_t>();
  for (const std::string& text : tables) {
    report.bytes_all_ranks += nlohmann::json::parse(text).at("bytes").get<int64_t>();
  }

  if (rank == 0) {
    try {
      nlohmann::json tensors = nlohmann::json::object();
      for (const FlatParam& param : optimizer.layout().params) {
        const Split split = split_of(splits_, param.name, tp_.size());
        const std::vector<int64_t> shape = full_shape(param.name, param.shape, split);
        for (const std::string& name :
             {"params/" + param.name, "optim/" + param.name + "/exp_avg", "optim/" + param.name + "/exp_avg_sq"}) {
          tensors[name] = {{"shape", shape},
                           {"dtype", "float32"},
                           {"split", {{"dim", split.dim}, {"parts", split.parts}}},
                           {"pieces", nlohmann::json::array()}};
        }
      }
      for (const std::string& text : tables) {
        const nlohmann::json rank_table = nlohmann::json::parse(text);
        for (nlohmann::json piece : rank_table.at("pieces")) {
          const std::string name = piece.at("tensor").get<std::string>();
          piece.erase("tensor");
          if (piece.contains("shape")) {  // the generators' states: rank 0 says what they are
            tensors[name] = {{"shape", piece["shape"]},
                             {"dtype", piece["dtype"]},
                             {"split", {{"dim", -1}, {"parts", 1}}},
                             {"pieces", nlohmann::json::array()}};
            piece.erase("shape");
            piece.erase("dtype");
          }
          tensors.at(name).at("pieces").push_back(std::move(piece));
        }
      }
      for (auto& [name, record] : tensors.items()) {
        auto& pieces = record.at("pieces");
        std::sort(pieces.begin(), pieces.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
          return std::pair(a.at("part").get<int64_t>(), a.at("begin").get<int64_t>()) <
                 std::pair(b.at("part").get<int64_t>(), b.at("begin").get<int64_t>());
        });
      }
      const nlohmann::json metadata = {
          {"format", kFormat},
          {"version", kVersion},
          {"step", state.step},
          {"tokens_seen", state.tokens_seen},
          {"loader_position", state.loader_position},
          {"mesh",
           {{"world_size", world.size()},
            {"dp", dp_.size()},
            {"tp", tp_.size()},
            {"zero", optimizer.zero() ? 1 : 0},
            {"writers", world.size()}}},
          {"dataset",
           {{"tokenizer", dataset.tokenizer},
            {"tokenizer_sha256", dataset.tokenizer_sha256},
            {"vocab_size", dataset.vocab_size}}},
          {"config", to_json(config)},
          {"optimizer", {{"type", "adamw"}, {"step_count", optimizer.step_count()}}},
          {"tensors", tensors},
      };
      if (replacing) {
        // Replacing a complete checkpoint of the same step: the new one is whole before the old one goes, and the
        // old one comes back if the new one cannot take its place.
        data::write_file_atomically(staging / kMetadata, metadata.dump(2));
        const fs::path old = step_dir.string() + ".old";
        fs::remove_all(old);
        fs::rename(step_dir, old);
        try {
          fs::rename(staging, step_dir);
        } catch (...) {
          fs::rename(old, step_dir);
          throw;
        }
        fs::remove_all(old);
        data::fsync_directory(dir_);
      } else {
        data::write_file_atomically(step_dir / kMetadata, metadata.dump(2));
      }
      data::write_file_atomically(dir_ / "latest", step_name(state.step) + "\n");

      // Keep the newest `keep` complete checkpoints up to this one. Later ones, left by a run that resumed from an
      // earlier checkpoint (perhaps because they are damaged), are not counted: a save of their step replaces them.
      std::vector<fs::path> complete = complete_steps(dir_);
      std::erase_if(complete, [&](const fs::path& path) { return path > step_dir; });
      for (size_t i = 0; i + static_cast<size_t>(keep_) < complete.size(); ++i) {
        fs::remove_all(complete[i]);
      }
    } catch (const std::exception& e) {
      error = fmt::format("[ckpt] {}: cannot complete it: {}", (step_dir / kMetadata).string(), e.what());
      std::error_code ignored;
      fs::remove_all(replacement, ignored);
      if (!is_complete(step_dir)) {
        fs::remove_all(step_dir, ignored);
      }
    }
  }
  agree_or_throw(world, error, what);
  report.seconds = seconds_since(start);
  if (rank == 0) {
    spdlog::info("[ckpt] saved step {} to {} ({:.1f} MiB from {} rank(s) in {:.2f} s)", state.step, step_dir.string(),
                 static_cast<double>(report.bytes_all_ranks) / (1 << 20), world.size(), report.seconds);
  }
  return report;
}

std::vector<fs::path> Checkpointer::candidates() const {
  std::vector<fs::path> complete = complete_steps(dir_);
  std::reverse(complete.begin(), complete.end());
  const std::string latest = latest_name(dir_);
  const auto named = std::find(complete.begin(), complete.end(), dir_ / latest);
  if (is_step_name(latest) && named != complete.end()) {
    std::rotate(complete.begin(), named, named + 1);
  }
  return complete;
}

std::optional<fs::path> Checkpointer::find(const std::string& resume) const {
  if (resume != "auto") {
    const fs::path path(resume);
    if (!fs::is_directory(path)) {
      throw IoError(fmt::format("[ckpt] --resume {}: no such checkpoint directory", resume));
    }
    if (!is_complete(path)) {
      throw IoError(fmt::format("[ckpt] --resume {}: incomplete checkpoint (no {})", resume, kMetadata));
    }
    return path;
  }
  const std::vector<fs::path> found = candidates();
  if (found.empty()) {
    return std::nullopt;
  }
  return found.front();
}

TrainConfig Checkpointer::stored_config(const fs::path& checkpoint) {
  return train_config_from_json(read_metadata(checkpoint).config, (checkpoint / kMetadata).string());
}

void Checkpointer::load_weights(const fs::path& checkpoint, model::Gpt& model) {
  std::vector<NamedParameter> parameters;
  for (const auto& item : model.named_parameters()) {
    parameters.push_back({item.key(), item.value()});
  }
  load_weights(checkpoint, parameters);
}

void Checkpointer::load_weights(const fs::path& checkpoint, const std::vector<NamedParameter>& parameters) {
  const Metadata metadata = read_metadata(checkpoint);
  PieceReader reader(checkpoint, metadata);
  std::vector<at::Tensor> stored;
  for (const NamedParameter& parameter : parameters) {
    const std::vector<int64_t> shape = parameter.tensor.sizes().vec();
    const int64_t numel = parameter.tensor.numel();
    stored.push_back(
        read_wanted(reader, metadata, "params/" + parameter.name, {shape, chunking(shape, {}), 0, 0, numel}));
  }
  const c10::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters.size(); ++i) {
    at::Tensor value = parameters[i].tensor;
    value.copy_(stored[i].view(value.sizes()));
  }
}

void Checkpointer::verify_weights(const fs::path& checkpoint) {
  const Metadata metadata = read_metadata(checkpoint);
  PieceReader reader(checkpoint, metadata);
  for (const auto& [name, record] : metadata.tensors) {
    if (name.starts_with("params/")) {
      for (const Piece& piece : record.pieces) {
        reader.read(piece, at::kFloat);
      }
    }
  }
}

TrainingState Checkpointer::load(const fs::path& checkpoint, FlatAdamW& optimizer, const TrainConfig& config,
                                 const DatasetIdentity& dataset, LoadReport* report) {
  const auto start = Clock::now();
  check_mesh(dp_, optimizer);
  const c10::Device device = optimizer.parameters().front().tensor.device();
  const World world{dp_, tp_, device};
  std::vector<StateSlice> held = optimizer.held_slices();
  // Every rank reads and verifies what it needs on its own; then they agree, so that none restores what another
  // could not read. The outcome ranks as: 0 another model or dataset (fatal everywhere), 1 unreadable, 2 corrupt
  // (both skippable), 3 verified.
  std::exception_ptr failure;
  int outcome = 3;
  Metadata metadata;
  Stored stored;
  int64_t bytes = 0;
  try {
    metadata = read_metadata(checkpoint);
    const TrainConfig stored_train = train_config_from_json(metadata.config, metadata.path);
    std::string differences = model::describe_differences(stored_train.model, config.model);
    if (metadata.dataset.tokenizer_sha256 != dataset.tokenizer_sha256) {
      differences += fmt::format("{}tokenizer: {} ({}) != {} ({})", differences.empty() ? "" : "; ",
                                 metadata.dataset.tokenizer, metadata.dataset.tokenizer_sha256.substr(0, 12),
                                 dataset.tokenizer, dataset.tokenizer_sha256.substr(0, 12));
    }
    if (!differences.empty()) {
      throw ConfigError(
          fmt::format("[ckpt] {} was written for another model or dataset: {}", checkpoint.string(), differences));
    }
    PieceReader reader(checkpoint, metadata);
    const std::vector<ParamLayout> params = param_layouts(optimizer.layout(), splits_, tp_.rank(), tp_.size());
    stored.params = read_params(reader, metadata, params);
    read_optimizer(reader, metadata, optimizer.layout(), params, held, stored);
    read_rng_states(reader, metadata, device, stored);
    bytes = reader.bytes();
  } catch (const ConfigError&) {
    failure = std::current_exception();
    outcome = 0;
  } catch (const DataError&) {
    failure = std::current_exception();
    outcome = 2;
  } catch (...) {
    failure = std::current_exception();
    outcome = 1;
  }
  if (world.size() > 1) {
    std::string mine;
    if (failure) {
      try {
        std::rethrow_exception(failure);
      } catch (const std::exception& e) {
        mine = std::to_string(outcome) + e.what();
      }
    }
    const std::vector<std::string> outcomes = all_gather_strings(world, mine);
    int worst = outcome;
    size_t worst_rank = 0;
    for (size_t r = 0; r < outcomes.size(); ++r) {
      if (!outcomes[r].empty() && outcomes[r][0] - '0' < worst) {
        worst = outcomes[r][0] - '0';
        worst_rank = r;
      }
    }
    if (worst < outcome) {
      const std::string why = fmt::format("[ckpt] {}: rank {} could not load it: {}", checkpoint.string(), worst_rank,
                                          outcomes[worst_rank].substr(1));
      if (worst == 0) {
        throw ConfigError(why);
      }
      if (worst == 2) {
        throw DataError(why);
      }
      throw IoError(why);
    }
  }
  if (failure) {
    std::rethrow_exception(failure);
  }

  {
    const c10::NoGradGuard no_grad;
    const std::vector<NamedParameter>& parameters = optimizer.parameters();
    for (size_t i = 0; i < parameters.size(); ++i) {
      at::Tensor value = parameters[i].tensor;
      value.copy_(stored.params[i].view(value.sizes()));
    }
    for (size_t k = 0; k < held.size(); ++k) {
      if (stored.exp_avg[k].defined()) {
        held[k].exp_avg.copy_(stored.exp_avg[k]);
        held[k].exp_avg_sq.copy_(stored.exp_avg_sq[k]);
      } else {
        held[k].exp_avg.zero_();
        held[k].exp_avg_sq.zero_();
      }
    }
    optimizer.set_step_count(stored.step_count);
  }
  restore_rng_states(stored, device);
  if (report != nullptr) {
    *report = {.seconds = seconds_since(start), .bytes = bytes};
  }
  spdlog::info("[ckpt] resumed from {} (step {}; read {:.1f} MiB in {:.2f} s)", checkpoint.string(),
               metadata.state.step, static_cast<double>(bytes) / (1 << 20), seconds_since(start));
  return metadata.state;
}

std::optional<TrainingState> Checkpointer::resume(const std::string& resume, FlatAdamW& optimizer,
                                                  const TrainConfig& config, const DatasetIdentity& dataset,
                                                  LoadReport* report) {
  if (resume != "auto") {
    return load(*find(resume), optimizer, config, dataset, report);
  }
  const std::vector<fs::path> found = candidates();
  const std::string latest = latest_name(dir_);
  if (!latest.empty() && (found.empty() || found.front().filename() != latest)) {
    spdlog::warn("[ckpt] {} names {}, which is not a complete checkpoint: trying the newest complete one",
                 (dir_ / "latest").string(), latest);
  }
  std::vector<std::string> failures;
  for (const fs::path& checkpoint : found) {
    try {
      return load(checkpoint, optimizer, config, dataset, report);
    } catch (const ConfigError&) {
      throw;  // another model or dataset: an older checkpoint of the same run would not match either
    } catch (const IoError& e) {
      failures.emplace_back(e.what());
    } catch (const DataError& e) {
      failures.emplace_back(e.what());
    }
    spdlog::warn("[ckpt] --resume auto skips {}: {}{}", checkpoint.string(), failures.back(),
                 failures.size() < found.size() ? "; trying the checkpoint before it" : "");
  }
  if (!failures.empty()) {
    throw IoError(fmt::format(
        "[ckpt] --resume auto: none of the {} complete checkpoints in {} can be loaded, and it does not start "
        "afresh over them (move them away for that): {}",
        failures.size(), dir_.string(), fmt::join(failures, " | ")));
  }
  return std::nullopt;
}

}  // namespace mlagpt::trainer
