// ProcessMesh: the job's ranks arranged as data-parallel x tensor-parallel, with one communicator per group.
//
// Layout (world = dp x tp): the tensor-parallel group of world rank r is the tp consecutive ranks
// [g * tp, (g + 1) * tp) with g = r / tp, and r's tp rank is r % tp; its data-parallel group is the ranks with the
// same tp rank (r % tp, r % tp + tp, ...), and r's dp rank is r / tp. With 4 ranks and tp = 2: tp groups {0, 1} and
// {2, 3}, dp groups {0, 2} and {1, 3}. Consecutive ranks are what launchers place on one node, so tensor-parallel
// traffic (every layer) stays on a node and only the gradient reduction (every step) crosses nodes.
//
// Errors, all mlagpt::ConfigError naming the values and the config field, and thrown by every rank alike (no rank
// goes on into a collective that another has abandoned):
//   - parallel.tp < 1, or the world size not divisible by parallel.tp;
//   - unless parallel.tp_across_nodes: parallel.tp larger than the ranks of some node, or a tensor-parallel group
//     whose ranks are not all on one node (ranks not placed node by node, or nodes not holding a multiple of tp);
//   - a device that is unusable on some rank (a CUDA device this build or this node does not have), or ranks that
//     do not all use the same device type.
// The checks that need other ranks' values are made in one all-gather every rank runs before any group is built;
// every rank then decides from the same gathered values.
//
// Transports: without MPI (one process) both groups are LocalCommunicators. With MPI, MPI_COMM_WORLD is split once
// per group type; on CPU each group gets an MpiCommunicator, on CUDA (MLAGPT_WITH_CUDA builds) an NcclCommunicator
// (one NCCL unique id per group, broadcast over the group's MPI communicator), except that groups of one rank are
// LocalCommunicators on every device. On CUDA the mesh makes options.device the current device of the process
// (once, here); choosing which device a rank uses is the caller's business. Construction is collective over
// MPI_COMM_WORLD: every rank makes its mesh at the same point. With MeshOptions::watchdog the construction is
// recorded as one phase ("process mesh set-up") and the groups' collectives are watched (launch/watchdog.h); with
// MeshOptions::meter they are counted.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "launch/communicator.h"
#include "launch/metered_communicator.h"
#include "launch/runtime.h"
#include "launch/watchdog.h"

namespace mlagpt::launch {

struct MeshOptions {
  int64_t tp = 1;                // parallel.tp
  bool tp_across_nodes = false;  // parallel.tp_across_nodes
  c10::Device device = c10::Device(c10::kCPU);
  // When set (it must outlive the mesh): the set-up is one guarded phase and the groups of more than one rank are
  // WatchedCommunicators ("dp", "tp"), so that their collectives are under its deadlines.
  CollectiveWatchdog* watchdog = nullptr;
  // When set (it must outlive the mesh): the groups of more than one rank are MeteredCommunicators ("dp", "tp") that
  // count their collectives' bytes and blocked seconds into it (launch/metered_communicator.h).
  CollectiveMeter* meter = nullptr;
};

// The node a rank runs on, as the mesh compares ranks: ranks with equal ids share a node; `host` names it in
// messages.
struct NodeIdentity {
  int id = 0;
  std::string host;
};

// This rank's node: id = the lowest world rank among the processes that share its memory (MPI_COMM_TYPE_SHARED,
// the split that gives ProcessInfo::local_size), host = ProcessInfo::host. Collective over MPI_COMM_WORLD when MPI
// is up; {0, host} without MPI.
NodeIdentity this_node(const Runtime& runtime);

class ProcessMesh {
 public:
  ProcessMesh(const Runtime& runtime, const MeshOptions& options);
  // As above with `node` standing for this rank's node instead of this_node(runtime): how tests lay ranks that
  // share one machine out over several nodes.
  ProcessMesh(const Runtime& runtime, const MeshOptions& options, const NodeIdentity& node);
  ~ProcessMesh();
  ProcessMesh(const ProcessMesh&) = delete;
  ProcessMesh& operator=(const ProcessMesh&) = delete;

  // The data-parallel group (gradient reduction, ZeRO sharding) and the tensor-parallel group (every layer).
  Communicator& dp() const { return *dp_; }
  Communicator& tp() const { return *tp_; }
  int dp_rank() const { return dp_->rank(); }
  int dp_size() const { return dp_->size(); }
  int tp_rank() const { return tp_->rank(); }
  int tp_size() const { return tp_->size(); }
  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  c10::Device device() const { return device_; }
  // One line for the log: "world 4 = dp 2 x tp 2, nccl" (both groups' backends when they differ).
  std::string describe() const;

 private:
  ProcessMesh(const Runtime& runtime, const MeshOptions& options, const std::optional<NodeIdentity>& node);

  int world_rank_ = 0;
  int world_size_ = 1;
  c10::Device device_;
  std::unique_ptr<Communicator> dp_;
  std::unique_ptr<Communicator> tp_;
};

}  // namespace mlagpt::launch
