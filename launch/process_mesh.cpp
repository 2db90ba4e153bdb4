#include "launch/process_mesh.h"

#include <mpi.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "launch/backend_versions.h"
#include "launch/error.h"
#include "launch/mpi_check.h"
#include "launch/mpi_communicator.h"
#include "launch/watched_communicator.h"

#ifdef MLAGPT_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>

#include "launch/nccl_communicator.h"
#endif

namespace mlagpt::launch {
namespace {

// What each rank tells the others before any group is built; gathered as raw bytes (every rank runs this binary).
struct RankRecord {
  int32_t node = 0;
  int32_t device_type = 0;  // c10::DeviceType
  int32_t failed = 0;       // a check of this rank's own options failed; its message follows by broadcast
  std::array<char, 64> host{};
};

constexpr int kMessageChars = 1024;

// An MPI communicator from MPI_Comm_split, freed on every path out of the constructor.
struct SplitComm {
  MPI_Comm comm = MPI_COMM_NULL;
  SplitComm() = default;
  SplitComm(const SplitComm&) = delete;
  SplitComm& operator=(const SplitComm&) = delete;
  ~SplitComm() {
    if (comm != MPI_COMM_NULL) {
      MPI_Comm_free(&comm);
    }
  }
};

// The rules that need no other rank: the same values, so the same verdict, everywhere.
void check_sizes(int world_size, int64_t tp) {
  if (tp < 1) {
    throw ConfigError(fmt::format("parallel.tp must be at least 1, got {}", tp));
  }
  if (world_size % tp != 0) {
    std::vector<int> divisors;
    for (int d = 1; d <= world_size; ++d) {
      if (world_size % d == 0) {
        divisors.push_back(d);
      }
    }
    throw ConfigError(fmt::format(
        "parallel.tp = {} does not divide the world size {}: the ranks must form dp x tp (parallel.tp one of {})", tp,
        world_size, fmt::join(divisors, ", ")));
  }
}

// This rank's device, which only this rank can judge (how many devices its node has).
std::optional<std::string> device_problem(const c10::Device& device, const std::string& host) {
  if (device.is_cpu()) {
    return std::nullopt;
  }
  if (!device.is_cuda()) {
    return fmt::format("the process mesh runs on CPU or CUDA devices, not {}", device.str());
  }
#ifdef MLAGPT_WITH_CUDA
  if (!device.has_index()) {
    return fmt::format("the process mesh needs a CUDA device with an index (cuda:N), got {}", device.str());
  }
  const int visible = cuda_device_count();
  if (device.index() >= visible) {
    return fmt::format("device {} does not exist: host {} has {} visible CUDA device(s)", device.str(), host, visible);
  }
  return std::nullopt;
#else
  return fmt::format("device {}: this build has no CUDA (MLAGPT_WITH_CUDA=OFF)", device.str());
#endif
}

std::string host_of(const RankRecord& record) {
  return std::string(record.host.data(), strnlen(record.host.data(), record.host.size()));
}

// The first rule the gathered ranks break, decided from values every rank holds alike.
std::optional<std::string> layout_problem(const std::vector<RankRecord>& ranks, int64_t tp, bool tp_across_nodes) {
  for (size_t r = 1; r < ranks.size(); ++r) {
    if (ranks[r].device_type != ranks[0].device_type) {
      return fmt::format("rank 0 runs on {} but rank {} on {}: every rank must use the same device type",
                         c10::DeviceTypeName(static_cast<c10::DeviceType>(ranks[0].device_type)), r,
                         c10::DeviceTypeName(static_cast<c10::DeviceType>(ranks[r].device_type)));
    }
  }
  if (tp_across_nodes) {
    return std::nullopt;
  }
  std::map<int32_t, int> ranks_on_node;
  for (const auto& record : ranks) {
    ++ranks_on_node[record.node];
  }
  for (const auto& record : ranks) {
    const int local = ranks_on_node[record.node];
    if (local < tp) {
      return fmt::format(
          "parallel.tp = {} is larger than the {} rank(s) on host {}, so a tensor-parallel group would span nodes; "
          "lower parallel.tp or set parallel.tp_across_nodes = true",
          tp, local, host_of(record));
    }
  }
  const auto world = static_cast<int64_t>(ranks.size());
  for (int64_t first = 0; first < world; first += tp) {
    for (int64_t r = first + 1; r < first + tp; ++r) {
      if (ranks[r].node != ranks[first].node) {
        return fmt::format(
            "tensor-parallel group {} (world ranks {}..{}) spans hosts {} (rank {}) and {} (rank {}): each run of "
            "parallel.tp = {} consecutive ranks must share a node; place ranks node by node (not mpirun --map-by "
            "node) with a multiple of parallel.tp ranks per node, or set parallel.tp_across_nodes = true",
            first / tp, first, first + tp - 1, host_of(ranks[first]), first, host_of(ranks[r]), r, tp);
      }
    }
  }
  return std::nullopt;
}

// One all-gather of every rank's record, then the same verdict on every rank: throws everywhere or nowhere.
void agree_on_layout(const ProcessInfo& process, const MeshOptions& options, const NodeIdentity& node,
                     const std::optional<std::string>& own_problem) {
  RankRecord mine;
  mine.node = node.id;
  mine.device_type = static_cast<int32_t>(options.device.type());
  mine.failed = own_problem ? 1 : 0;
  std::strncpy(mine.host.data(), node.host.c_str(), mine.host.size() - 1);
  std::vector<RankRecord> ranks(static_cast<size_t>(process.world_size));
  MLAGPT_MPI_CHECK(
      MPI_Allgather(&mine, sizeof(RankRecord), MPI_BYTE, ranks.data(), sizeof(RankRecord), MPI_BYTE, MPI_COMM_WORLD));
  const auto failed = std::find_if(ranks.begin(), ranks.end(), [](const RankRecord& r) { return r.failed != 0; });
  if (failed != ranks.end()) {
    const int root = static_cast<int>(failed - ranks.begin());
    std::array<char, kMessageChars> message{};
    if (root == process.rank) {
      std::strncpy(message.data(), own_problem->c_str(), message.size() - 1);
    }
    MLAGPT_MPI_CHECK(MPI_Bcast(message.data(), kMessageChars, MPI_CHAR, root, MPI_COMM_WORLD));
    throw ConfigError(fmt::format("rank {} on host {}: {}", root, host_of(*failed), message.data()));
  }
  if (auto problem = layout_problem(ranks, options.tp, options.tp_across_nodes)) {
    throw ConfigError(*problem);
  }
}

std::unique_ptr<Communicator> make_group(MPI_Comm comm, const c10::Device& device) {
  int size = 0;
  MLAGPT_MPI_CHECK(MPI_Comm_size(comm, &size));
  if (size == 1) {
    return std::make_unique<LocalCommunicator>();
  }
#ifdef MLAGPT_WITH_CUDA
  if (device.is_cuda()) {
    return std::make_unique<NcclCommunicator>(comm, device.index());
  }
#endif
  return std::make_unique<MpiCommunicator>(comm);
}

// `group` under `watchdog` when there is one and the group has more than one rank (a group of one cannot hang).
std::unique_ptr<Communicator> watched(std::unique_ptr<Communicator> group, const char* name,
                                      CollectiveWatchdog* watchdog) {
  if (watchdog == nullptr || group->size() == 1) {
    return group;
  }
  return std::make_unique<WatchedCommunicator>(std::move(group), name, *watchdog);
}

// `group` counted into `meter` when there is one and the group has more than one rank.
std::unique_ptr<Communicator> metered(std::unique_ptr<Communicator> group, const char* name, CollectiveMeter* meter) {
  if (meter == nullptr || group->size() == 1) {
    return group;
  }
  return std::make_unique<MeteredCommunicator>(std::move(group), name, *meter);
}

}  // namespace

NodeIdentity this_node(const Runtime& runtime) {
  const ProcessInfo& process = runtime.info();
  if (!process.mpi) {
    return {0, process.host};
  }
  MPI_Comm node = MPI_COMM_NULL;
  MLAGPT_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, process.rank, MPI_INFO_NULL, &node));
  // Keyed by world rank, so the node's rank 0 is its lowest world rank.
  int lowest = process.rank;
  const int status = MPI_Bcast(&lowest, 1, MPI_INT, 0, node);
  MPI_Comm_free(&node);
  MLAGPT_MPI_CHECK(status);
  return {lowest, process.host};
}

ProcessMesh::ProcessMesh(const Runtime& runtime, const MeshOptions& options)
    : ProcessMesh(runtime, options, std::optional<NodeIdentity>()) {}

ProcessMesh::ProcessMesh(const Runtime& runtime, const MeshOptions& options, const NodeIdentity& node)
    : ProcessMesh(runtime, options, std::optional<NodeIdentity>(node)) {}

ProcessMesh::ProcessMesh(const Runtime& runtime, const MeshOptions& options, const std::optional<NodeIdentity>& node)
    : world_rank_(runtime.info().rank), world_size_(runtime.info().world_size), device_(options.device) {
  const ProcessInfo& process = runtime.info();
  check_sizes(world_size_, options.tp);
  const CollectiveWatchdog::Guard setup(process.mpi ? options.watchdog : nullptr, "world", world_size_,
                                        "process mesh set-up");
  const auto own_problem = device_problem(options.device, process.host);
  if (process.mpi) {
    agree_on_layout(process, options, node ? *node : this_node(runtime), own_problem);
  } else if (own_problem) {
    throw ConfigError(*own_problem);
  }
#ifdef MLAGPT_WITH_CUDA
  if (device_.is_cuda()) {
    c10::cuda::set_device(device_.index());
  }
#endif
  if (!process.mpi) {
    dp_ = std::make_unique<LocalCommunicator>();
    tp_ = std::make_unique<LocalCommunicator>();
    return;
  }
  const auto tp = static_cast<int>(options.tp);
  SplitComm tp_group;
  SplitComm dp_group;
  MLAGPT_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, world_rank_ / tp, world_rank_, &tp_group.comm));
  MLAGPT_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, world_rank_ % tp, world_rank_, &dp_group.comm));
  // Every rank builds its tensor-parallel group first: NCCL's initialization of a group waits for all its members.
  tp_ = metered(watched(make_group(tp_group.comm, device_), "tp", options.watchdog), "tp", options.meter);
  dp_ = metered(watched(make_group(dp_group.comm, device_), "dp", options.watchdog), "dp", options.meter);
}

ProcessMesh::~ProcessMesh() = default;

std::string ProcessMesh::describe() const {
  const std::string dp_backend = dp_->backend();
  const std::string tp_backend = tp_->backend();
  const std::string backends =
      dp_backend == tp_backend ? dp_backend : fmt::format("dp {}, tp {}", dp_backend, tp_backend);
  return fmt::format("world {} = dp {} x tp {}, {}", world_size_, dp_size(), tp_size(), backends);
}

}  // namespace mlagpt::launch
