#include "trainer/checkpointer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/core/GradMode.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <exception>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>

#include "data/file_io.h"
#include "data/hdf5_file.h"
#include "data/sha256.h"
#include "launch/error.h"

namespace mlagpt::trainer {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMetadata = "metadata.json";
constexpr const char* kFormat = "mlagpt.checkpoint";
// 2: metadata.json records the SHA-256 of every tensor (RNG states included) and every optimizer step count.
// Version 1 checkpoints still load, unverified, with a warning.
constexpr int64_t kVersion = 2;
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

std::string sha256_of(const at::Tensor& contiguous) {
  data::Sha256 hash;
  hash.update(std::string_view(static_cast<const char*>(contiguous.const_data_ptr()), contiguous.nbytes()));
  return data::to_hex(hash.finish());
}

// Writes a float32 (or, for RNG states, uint8) tensor and returns the SHA-256 of the bytes written.
std::string write_tensor(data::h5::File& file, const std::string& name, const at::Tensor& tensor) {
  const bool bytes = tensor.scalar_type() == at::kByte;
  const at::Tensor t = bytes ? tensor.contiguous() : tensor.detach().to(at::kCPU, at::kFloat).contiguous();
  const std::vector<uint64_t> shape(t.sizes().begin(), t.sizes().end());
  const std::vector<uint64_t> origin(shape.size(), 0);
  auto dataset = bytes ? file.create_dataset<uint8_t>(name, shape) : file.create_dataset<float>(name, shape);
  if (bytes) {
    dataset.write(std::span<const uint8_t>(t.const_data_ptr<uint8_t>(), static_cast<size_t>(t.numel())), origin, shape);
  } else {
    dataset.write(std::span<const float>(t.const_data_ptr<float>(), static_cast<size_t>(t.numel())), origin, shape);
  }
  dataset.flush();  // or a failure to write what HDF5 buffers for it would go unreported when it closes
  return sha256_of(t);
}

// What metadata.json says, parsed and type-checked once.
struct TensorRecord {
  std::vector<int64_t> shape;
  std::string file;
  std::string sha256;  // empty in a version 1 checkpoint
};
struct Metadata {
  std::string path;
  int64_t version = 0;
  TrainingState state;
  DatasetIdentity dataset;
  nlohmann::json config;
  std::map<std::string, TensorRecord> tensors;  // "params/wte.weight", "optim/wte.weight/exp_avg", "rng/cpu"
  std::map<std::string, int64_t> optimizer_steps;
};

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
      stored.file = record.at("file").get<std::string>();
      if (metadata.version >= 2) {
        stored.sha256 = record.at("sha256").get<std::string>();
      }
    }
    if (metadata.version >= 2) {
      metadata.optimizer_steps = json.at("optimizer_steps").get<std::map<std::string, int64_t>>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw IoError(fmt::format("[ckpt] {}: unreadable: {}", metadata.path, e.what()));
  }
  if (metadata.version < kVersion) {
    spdlog::warn("[ckpt] {}: format version {} has no checksums: its tensors are not verified", metadata.path,
                 metadata.version);
  }
  return metadata;
}

// Reads dataset `name` ("/params/wte.weight") of `file` into a new CPU tensor after checking it against
// `metadata`: recorded, of the recorded shape and of the expected type; then the SHA-256 of its bytes must be the
// recorded one. Throws IoError / DataError naming the file and the tensor.
at::Tensor read_verified(const data::h5::File& file, const Metadata& metadata, const std::string& name,
                         at::ScalarType dtype) {
  const std::string key = name.substr(1);
  const auto record = metadata.tensors.find(key);
  const bool verified = metadata.version >= 2;
  if (verified && record == metadata.tensors.end()) {
    throw IoError(fmt::format("[ckpt] {}: records no tensor {}", metadata.path, key));
  }
  if (verified && record->second.file != fs::path(file.path()).filename()) {
    throw IoError(fmt::format("[ckpt] {}: records tensor {} in {}, not in {}", metadata.path, key, record->second.file,
                              file.path()));
  }
  if (!file.exists(name)) {
    throw IoError(fmt::format("[ckpt] {}: tensor {} is missing", file.path(), name));
  }
  try {
    const auto dataset = file.open_dataset(name);
    const std::vector<uint64_t> dims = dataset.shape();
    const std::vector<int64_t> shape(dims.begin(), dims.end());
    if (verified && shape != record->second.shape) {
      throw IoError(fmt::format("[ckpt] {}: tensor {} has shape [{}], {} records [{}]", file.path(), name,
                                fmt::join(shape, ", "), metadata.path, fmt::join(record->second.shape, ", ")));
    }
    const bool bytes = dtype == at::kByte;
    if (dataset.type_class() != (bytes ? H5T_INTEGER : H5T_FLOAT) || dataset.element_bytes() != (bytes ? 1 : 4)) {
      throw IoError(fmt::format("[ckpt] {}: tensor {} is not {}", file.path(), name, bytes ? "uint8" : "float32"));
    }
    at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(dtype));
    const std::vector<uint64_t> origin(dims.size(), 0);
    if (bytes) {
      dataset.read(std::span<uint8_t>(tensor.data_ptr<uint8_t>(), static_cast<size_t>(tensor.numel())), origin, dims);
    } else {
      dataset.read(std::span<float>(tensor.data_ptr<float>(), static_cast<size_t>(tensor.numel())), origin, dims);
    }
    if (verified) {
      const std::string digest = sha256_of(tensor);
      if (digest != record->second.sha256) {
        throw DataError(fmt::format("[ckpt] {}: tensor {} is corrupt: its bytes have SHA-256 {}, {} records {}",
                                    file.path(), name, digest, metadata.path, record->second.sha256));
      }
    }
    return tensor;
  } catch (const Hdf5Error& e) {
    throw IoError(fmt::format("[ckpt] {}: cannot read tensor {}: {}", file.path(), name, e.what()));
  }
}

data::h5::File open_rank_file(const fs::path& path) {
  try {
    return data::h5::File::open(path);
  } catch (const Hdf5Error& e) {
    throw IoError(fmt::format("[ckpt] {}: unreadable (truncated or damaged): {}", path.string(), e.what()));
  } catch (const IoError& e) {
    throw IoError(fmt::format("[ckpt] {}", e.what()));
  }
}

// Everything a checkpoint restores, read and verified before any of it is.
struct AdamState {
  at::Tensor exp_avg;
  at::Tensor exp_avg_sq;
  int64_t step = 0;
};
struct StoredTensors {
  std::map<std::string, at::Tensor> params;
  std::map<std::string, AdamState> optimizer;
  std::map<std::string, at::Tensor> rng;  // "/rng/cpu", "/rng/cuda"
};

at::Tensor read_param(const data::h5::File& file, const Metadata& metadata, const std::string& name,
                      at::IntArrayRef model_shape) {
  at::Tensor tensor = read_verified(file, metadata, name, at::kFloat);
  if (tensor.sizes() != model_shape) {
    throw ConfigError(fmt::format("[ckpt] {}: {} has shape [{}], the model expects [{}]", file.path(), name,
                                  fmt::join(tensor.sizes(), ", "), fmt::join(model_shape, ", ")));
  }
  return tensor;
}

// /rng/cpu always; /rng/cuda, the generator of the model's device, when training on a GPU and the checkpoint has
// one (a checkpoint written on the CPU and resumed on a GPU has none: that generator keeps its seeding).
StoredTensors read_stored(const fs::path& checkpoint, const Metadata& metadata, model::Gpt& model, bool everything) {
  const data::h5::File file = open_rank_file(checkpoint / rank_file(0));
  StoredTensors stored;
  for (const auto& item : model.named_parameters()) {
    stored.params[item.key()] = read_param(file, metadata, "/params/" + item.key(), item.value().sizes());
    const std::string group = "/optim/" + item.key();
    if (!everything || !file.exists(group)) {
      continue;
    }
    AdamState& adam = stored.optimizer[item.key()];
    adam.exp_avg = read_param(file, metadata, group + "/exp_avg", item.value().sizes());
    adam.exp_avg_sq = read_param(file, metadata, group + "/exp_avg_sq", item.value().sizes());
    try {
      adam.step = file.int_attribute("step", group);
    } catch (const Hdf5Error& e) {
      throw IoError(fmt::format("[ckpt] {}: cannot read the step of {}: {}", file.path(), group, e.what()));
    }
    if (metadata.version >= 2) {
      const auto recorded = metadata.optimizer_steps.find(item.key());
      if (recorded == metadata.optimizer_steps.end() || recorded->second != adam.step) {
        throw DataError(fmt::format(
            "[ckpt] {}: {} has optimizer step {}, {} records {}", file.path(), group, adam.step, metadata.path,
            recorded == metadata.optimizer_steps.end() ? "none" : std::to_string(recorded->second)));
      }
    }
  }
  if (everything) {
    stored.rng["/rng/cpu"] = read_verified(file, metadata, "/rng/cpu", at::kByte);
    if (model.parameters().front().device().is_cuda() && file.exists("/rng/cuda")) {
      stored.rng["/rng/cuda"] = read_verified(file, metadata, "/rng/cuda", at::kByte);
    }
  }
  return stored;
}

// The Trainer reseeds the generators before every step (dropout's masks derive from the seed, the rank and the
// step), so its steps do not depend on these; they restore the generators as they were for anything drawn between
// steps.
void write_rng_states(data::h5::File& file, const c10::Device& model_device, nlohmann::json& tensors,
                      const std::string& file_name) {
  const auto write = [&](at::Generator generator, const std::string& name) {
    const std::lock_guard<std::mutex> lock(generator.mutex());
    const at::Tensor state = generator.get_state();
    tensors[name.substr(1)] = {{"shape", state.sizes().vec()},
                               {"dtype", "uint8"},
                               {"file", file_name},
                               {"offset", std::vector<int64_t>{0}},
                               {"sha256", write_tensor(file, name, state)}};
  };
  write(at::detail::getDefaultCPUGenerator(), "/rng/cpu");
  if (model_device.is_cuda()) {
    write(at::globalContext().defaultGenerator(model_device), "/rng/cuda");
  }
}

void restore_rng_states(const StoredTensors& stored, const c10::Device& model_device) {
  for (const auto& [name, state] : stored.rng) {
    at::Generator generator =
        name == "/rng/cpu" ? at::detail::getDefaultCPUGenerator() : at::globalContext().defaultGenerator(model_device);
    const std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(state);
  }
}

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

Checkpointer::Checkpointer(fs::path dir, int64_t keep, launch::Communicator& comm)
    : dir_(std::move(dir)), keep_(keep), comm_(comm) {}

bool Checkpointer::is_complete(const fs::path& step_dir) {
  std::error_code ignored;
  return fs::is_regular_file(step_dir / kMetadata, ignored);
}

fs::path Checkpointer::save(const TrainingState& state, model::Gpt& model, FlatAdamW& optimizer,
                            const TrainConfig& config, const DatasetIdentity& dataset) {
  const fs::path step_dir = dir_ / step_name(state.step);
  const bool writer = comm_.rank() == 0;
  if (writer) {
    fs::create_directories(dir_);
    // A directory without metadata is a crashed attempt at this step; a complete one is replaced only after the
    // new files are written (below), so a failure now never destroys it.
    if (fs::exists(step_dir) && !is_complete(step_dir)) {
      fs::remove_all(step_dir);
    }
  }
  comm_.barrier();
  const fs::path staging = is_complete(step_dir) ? fs::path(step_dir.string() + ".new") : step_dir;
  nlohmann::json tensors = nlohmann::json::object();
  nlohmann::json optimizer_steps = nlohmann::json::object();
  if (writer) {
    fs::remove_all(staging);
    fs::create_directories(staging);
    const std::string file_name = rank_file(0);
    const fs::path temporary = staging / (file_name + ".tmp");
    {
      data::h5::File file = data::h5::File::create(temporary, /*overwrite=*/true);
      const auto write = [&](const std::string& name, const at::Tensor& t) {
        tensors[name] = {{"shape", t.sizes().vec()},
                         {"dtype", "float32"},
                         {"file", file_name},
                         {"offset", std::vector<int64_t>(static_cast<size_t>(t.dim()), 0)},
                         {"sha256", write_tensor(file, "/" + name, t)}};
      };
      if (optimizer.zero()) {
        throw Error("[ckpt] saving ZeRO-1 optimizer state is not supported by this checkpoint format");
      }
      const int64_t steps = optimizer.step_count();
      for (const StateSlice& slice : optimizer.held_slices()) {
        const auto& parameter = optimizer.parameters()[static_cast<size_t>(slice.param)];
        write("params/" + parameter.name, parameter.tensor);
        const at::IntArrayRef shape = parameter.tensor.sizes();
        write("optim/" + parameter.name + "/exp_avg", slice.exp_avg.view(shape));
        write("optim/" + parameter.name + "/exp_avg_sq", slice.exp_avg_sq.view(shape));
        file.set_attribute("step", steps, "/optim/" + parameter.name);
        optimizer_steps[parameter.name] = steps;
      }
      write_rng_states(file, model.parameters().front().device(), tensors, file_name);
      file.flush();  // closing would flush too, but could not report a failure (a full disk)
    }
    data::fsync_file(temporary);
    fs::rename(temporary, staging / file_name);

    nlohmann::json metadata = {
        {"format", kFormat},
        {"version", kVersion},
        {"step", state.step},
        {"tokens_seen", state.tokens_seen},
        {"loader_position", state.loader_position},
        {"mesh", {{"world_size", comm_.size()}, {"dp", comm_.size()}, {"tp", 1}, {"writers", 1}}},
        {"dataset",
         {{"tokenizer", dataset.tokenizer},
          {"tokenizer_sha256", dataset.tokenizer_sha256},
          {"vocab_size", dataset.vocab_size}}},
        {"config", to_json(config)},
        {"tensors", tensors},
        {"optimizer_steps", optimizer_steps},
    };
    if (staging != step_dir) {
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
    spdlog::info("[ckpt] saved step {} to {}", state.step, step_dir.string());
  }
  comm_.barrier();
  return step_dir;
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
  const StoredTensors stored = read_stored(checkpoint, read_metadata(checkpoint), model, /*everything=*/false);
  const c10::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    item.value().copy_(stored.params.at(item.key()));
  }
}

void Checkpointer::verify_weights(const fs::path& checkpoint) {
  const Metadata metadata = read_metadata(checkpoint);
  const data::h5::File file = open_rank_file(checkpoint / rank_file(0));
  for (const auto& [name, record] : metadata.tensors) {
    if (name.starts_with("params/")) {
      read_verified(file, metadata, "/" + name, at::kFloat);
    }
  }
}

TrainingState Checkpointer::load(const fs::path& checkpoint, model::Gpt& model, FlatAdamW& optimizer,
                                 const TrainConfig& config, const DatasetIdentity& dataset) {
  const c10::Device device = model.parameters().front().device();
  // Every rank reads and verifies on its own; then they agree, so that none restores what another could not read.
  // The outcome ranks as: 0 another model or dataset (fatal everywhere), 1 damaged (skippable), 2 verified.
  std::exception_ptr failure;
  int outcome = 2;
  Metadata metadata;
  StoredTensors stored;
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
    stored = read_stored(checkpoint, metadata, model, /*everything=*/true);
  } catch (const ConfigError&) {
    failure = std::current_exception();
    outcome = 0;
  } catch (...) {
    failure = std::current_exception();
    outcome = 1;
  }
  if (comm_.size() > 1) {
    at::Tensor agreed = at::full(
        {1}, outcome,
        at::TensorOptions().dtype(at::kInt).device(comm_.backend() == "nccl" ? device : c10::Device(c10::kCPU)));
    comm_.all_reduce(agreed, launch::ReduceOp::kMin);
    const int worst = agreed.item<int>();
    if (worst < outcome) {
      const std::string why =
          fmt::format("[ckpt] {}: another rank could not load it (see its log)", checkpoint.string());
      if (worst == 0) {
        throw ConfigError(why);
      }
      throw IoError(why);
    }
  }
  if (failure) {
    std::rethrow_exception(failure);
  }

  {
    const c10::NoGradGuard no_grad;
    for (auto& item : model.named_parameters()) {
      item.value().copy_(stored.params.at(item.key()));
    }
    if (optimizer.zero()) {
      throw Error("[ckpt] loading into a ZeRO-1 optimizer is not supported by this checkpoint format");
    }
    for (const StateSlice& slice : optimizer.held_slices()) {
      const std::string& name = optimizer.parameters()[static_cast<size_t>(slice.param)].name;
      const auto it = stored.optimizer.find(name);
      if (it != stored.optimizer.end()) {
        slice.exp_avg.copy_(it->second.exp_avg.reshape({-1}));
        slice.exp_avg_sq.copy_(it->second.exp_avg_sq.reshape({-1}));
        optimizer.set_step_count(it->second.step);
      }
    }
  }
  restore_rng_states(stored, device);
  spdlog::info("[ckpt] resumed from {} (step {})", checkpoint.string(), metadata.state.step);
  return metadata.state;
}

std::optional<TrainingState> Checkpointer::resume(const std::string& resume, model::Gpt& model, FlatAdamW& optimizer,
                                                  const TrainConfig& config, const DatasetIdentity& dataset) {
  if (resume != "auto") {
    return load(*find(resume), model, optimizer, config, dataset);
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
      return load(checkpoint, model, optimizer, config, dataset);
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
