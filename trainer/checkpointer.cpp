#include "trainer/checkpointer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/GradMode.h>
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <regex>

#include "data/file_io.h"
#include "data/hdf5_file.h"
#include "launch/error.h"

namespace mlagpt::trainer {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMetadata = "metadata.json";
constexpr const char* kFormat = "mlagpt.checkpoint";
constexpr int64_t kVersion = 1;

std::string step_name(int64_t step) {
  return fmt::format("step_{:08d}", step);
}
std::string rank_file(int rank) {
  return fmt::format("rank_{:05d}.h5", rank);
}

void write_tensor(data::h5::File& file, const std::string& name, const at::Tensor& tensor) {
  const at::Tensor t = tensor.detach().to(at::kCPU, at::kFloat).contiguous();
  const std::vector<uint64_t> shape(t.sizes().begin(), t.sizes().end());
  auto dataset = file.create_dataset<float>(name, shape);
  dataset.write(std::span<const float>(t.data_ptr<float>(), static_cast<size_t>(t.numel())),
                std::vector<uint64_t>(shape.size(), 0), shape);
}

at::Tensor read_tensor(const data::h5::File& file, const std::string& name, at::IntArrayRef expected_shape) {
  if (!file.exists(name)) {
    throw IoError(fmt::format("[ckpt] {}: tensor {} is missing", file.path(), name));
  }
  const auto dataset = file.open_dataset(name);
  const std::vector<uint64_t> shape = dataset.shape();
  if (!std::equal(shape.begin(), shape.end(), expected_shape.begin(), expected_shape.end(),
                  [](uint64_t a, int64_t b) { return static_cast<int64_t>(a) == b; })) {
    throw ConfigError(fmt::format("[ckpt] {}: {} has shape [{}], the model expects [{}]", file.path(), name,
                                  fmt::join(shape, ", "), fmt::join(expected_shape, ", ")));
  }
  std::vector<float> values = dataset.read_all<float>();
  return at::from_blob(values.data(), expected_shape, at::kFloat).clone();
}

void write_bytes(data::h5::File& file, const std::string& name, const at::Tensor& bytes) {
  const at::Tensor t = bytes.contiguous();
  auto dataset = file.create_dataset<uint8_t>(name, {static_cast<uint64_t>(t.numel())});
  dataset.write(std::span<const uint8_t>(t.data_ptr<uint8_t>(), static_cast<size_t>(t.numel())), {0},
                {static_cast<uint64_t>(t.numel())});
}

at::Tensor read_bytes(const data::h5::File& file, const std::string& name) {
  std::vector<uint8_t> values = file.open_dataset(name).read_all<uint8_t>();
  return at::from_blob(values.data(), {static_cast<int64_t>(values.size())}, at::kByte).clone();
}

// /rng/cpu always; /rng/cuda, the generator of the model's device, when training on a GPU. The Trainer reseeds both
// before every step (dropout's masks derive from the seed, the rank and the step), so its steps do not depend on
// these; they restore the generators as they were for anything drawn between steps.
void write_rng_states(data::h5::File& file, const c10::Device& model_device) {
  const auto write = [&](at::Generator generator, const std::string& name) {
    const std::lock_guard<std::mutex> lock(generator.mutex());
    write_bytes(file, name, generator.get_state());
  };
  write(at::detail::getDefaultCPUGenerator(), "/rng/cpu");
  if (model_device.is_cuda()) {
    write(at::globalContext().defaultGenerator(model_device), "/rng/cuda");
  }
}

// A checkpoint written on the CPU and resumed on a GPU has no CUDA state: that generator keeps its seeding.
void read_rng_states(const data::h5::File& file, const c10::Device& model_device) {
  const auto read = [&](at::Generator generator, const std::string& name) {
    const std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(read_bytes(file, name));
  };
  read(at::detail::getDefaultCPUGenerator(), "/rng/cpu");
  if (model_device.is_cuda() && file.exists("/rng/cuda")) {
    read(at::globalContext().defaultGenerator(model_device), "/rng/cuda");
  }
}

nlohmann::json read_metadata(const fs::path& step_dir) {
  const fs::path path = step_dir / kMetadata;
  std::ifstream in(path);
  if (!in) {
    throw IoError(fmt::format("[ckpt] {}: no such file (the checkpoint is incomplete)", path.string()));
  }
  try {
    nlohmann::json json = nlohmann::json::parse(in);
    if (json.value("format", "") != kFormat || json.value("version", 0) != kVersion) {
      throw IoError(fmt::format("[ckpt] {}: not an {} version {} file", path.string(), kFormat, kVersion));
    }
    return json;
  } catch (const nlohmann::json::exception& e) {
    throw IoError(fmt::format("[ckpt] {}: unreadable: {}", path.string(), e.what()));
  }
}

}  // namespace

Checkpointer::Checkpointer(fs::path dir, int64_t keep, launch::Communicator& comm)
    : dir_(std::move(dir)), keep_(keep), comm_(comm) {}

bool Checkpointer::is_complete(const fs::path& step_dir) {
  std::error_code ignored;
  return fs::is_regular_file(step_dir / kMetadata, ignored);
}

fs::path Checkpointer::save(const TrainingState& state, model::Gpt& model, torch::optim::AdamW& optimizer,
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
  if (writer) {
    fs::remove_all(staging);
    fs::create_directories(staging);
    const std::string file_name = rank_file(0);
    const fs::path temporary = staging / (file_name + ".tmp");
    {
      data::h5::File file = data::h5::File::create(temporary, /*overwrite=*/true);
      const auto record = [&](const std::string& name, const at::Tensor& t) {
        tensors[name] = {{"shape", t.sizes().vec()},
                         {"dtype", "float32"},
                         {"file", file_name},
                         {"offset", std::vector<int64_t>(static_cast<size_t>(t.dim()), 0)}};
      };
      for (const auto& item : model.named_parameters()) {
        write_tensor(file, "/params/" + item.key(), item.value());
        record("params/" + item.key(), item.value());
        const auto it = optimizer.state().find(item.value().unsafeGetTensorImpl());
        if (it != optimizer.state().end()) {
          const auto& adam = static_cast<const torch::optim::AdamWParamState&>(*it->second);
          const std::string group = "/optim/" + item.key();
          write_tensor(file, group + "/exp_avg", adam.exp_avg());
          write_tensor(file, group + "/exp_avg_sq", adam.exp_avg_sq());
          file.set_attribute("step", adam.step(), group);
          record("optim/" + item.key() + "/exp_avg", adam.exp_avg());
          record("optim/" + item.key() + "/exp_avg_sq", adam.exp_avg_sq());
        }
      }
      write_rng_states(file, model.parameters().front().device());
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
    };
    if (staging != step_dir) {
      // Replacing a complete checkpoint of the same step: the new one is whole before the old one goes.
      data::write_file_atomically(staging / kMetadata, metadata.dump(2));
      const fs::path old = step_dir.string() + ".old";
      fs::remove_all(old);
      fs::rename(step_dir, old);
      fs::rename(staging, step_dir);
      fs::remove_all(old);
      data::fsync_directory(dir_);
    } else {
      data::write_file_atomically(step_dir / kMetadata, metadata.dump(2));
    }
    data::write_file_atomically(dir_ / "latest", step_name(state.step) + "\n");

    // Keep the newest `keep` complete checkpoints.
    std::vector<fs::path> complete;
    for (const auto& entry : fs::directory_iterator(dir_)) {
      if (std::regex_match(entry.path().filename().string(), std::regex("step_[0-9]{8}")) &&
          is_complete(entry.path())) {
        complete.push_back(entry.path());
      }
    }
    std::sort(complete.begin(), complete.end());
    for (size_t i = 0; i + static_cast<size_t>(keep_) < complete.size(); ++i) {
      fs::remove_all(complete[i]);
    }
    spdlog::info("[ckpt] saved step {} to {}", state.step, step_dir.string());
  }
  comm_.barrier();
  return step_dir;
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
  if (!fs::is_directory(dir_)) {
    return std::nullopt;
  }
  std::ifstream latest(dir_ / "latest");
  std::string name;
  if (latest >> name && is_complete(dir_ / name)) {
    return dir_ / name;
  }
  std::optional<fs::path> newest;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    if (std::regex_match(entry.path().filename().string(), std::regex("step_[0-9]{8}")) && is_complete(entry.path()) &&
        (!newest || entry.path() > *newest)) {
      newest = entry.path();
    }
  }
  return newest;
}

TrainConfig Checkpointer::stored_config(const fs::path& checkpoint) {
  return train_config_from_json(read_metadata(checkpoint).at("config"), (checkpoint / kMetadata).string());
}

void Checkpointer::load_weights(const fs::path& checkpoint, model::Gpt& model) {
  read_metadata(checkpoint);
  const data::h5::File file = data::h5::File::open(checkpoint / rank_file(0));
  const c10::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    item.value().copy_(read_tensor(file, "/params/" + item.key(), item.value().sizes()));
  }
}

TrainingState Checkpointer::load(const fs::path& checkpoint, model::Gpt& model, torch::optim::AdamW& optimizer,
                                 const TrainConfig& config, const DatasetIdentity& dataset) {
  const nlohmann::json metadata = read_metadata(checkpoint);
  const TrainConfig stored = train_config_from_json(metadata.at("config"), (checkpoint / kMetadata).string());
  std::string differences = model::describe_differences(stored.model, config.model);
  const auto& stored_data = metadata.at("dataset");
  if (stored_data.at("tokenizer_sha256").get<std::string>() != dataset.tokenizer_sha256) {
    differences += fmt::format("{}tokenizer: {} ({}) != {} ({})", differences.empty() ? "" : "; ",
                               stored_data.at("tokenizer").get<std::string>(),
                               stored_data.at("tokenizer_sha256").get<std::string>().substr(0, 12), dataset.tokenizer,
                               dataset.tokenizer_sha256.substr(0, 12));
  }
  if (!differences.empty()) {
    throw ConfigError(
        fmt::format("[ckpt] {} was written for another model or dataset: {}", checkpoint.string(), differences));
  }
  const data::h5::File file = data::h5::File::open(checkpoint / rank_file(0));
  {
    const c10::NoGradGuard no_grad;
    for (auto& item : model.named_parameters()) {
      const at::Tensor stored_param = read_tensor(file, "/params/" + item.key(), item.value().sizes());
      item.value().copy_(stored_param);
      const std::string group = "/optim/" + item.key();
      if (file.exists(group)) {
        auto adam = std::make_unique<torch::optim::AdamWParamState>();
        adam->step(file.int_attribute("step", group));
        adam->exp_avg(read_tensor(file, group + "/exp_avg", item.value().sizes()).to(item.value().device()));
        adam->exp_avg_sq(read_tensor(file, group + "/exp_avg_sq", item.value().sizes()).to(item.value().device()));
        optimizer.state()[item.value().unsafeGetTensorImpl()] = std::move(adam);
      }
    }
  }
  read_rng_states(file, model.parameters().front().device());
  TrainingState state;
  state.step = metadata.at("step").get<int64_t>();
  state.tokens_seen = metadata.at("tokens_seen").get<int64_t>();
  state.loader_position = metadata.at("loader_position").get<int64_t>();
  spdlog::info("[ckpt] resumed from {} (step {})", checkpoint.string(), state.step);
  return state;
}

}  // namespace mlagpt::trainer
