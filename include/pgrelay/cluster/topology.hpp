// The cluster as pgrelay last saw it: an immutable snapshot of every backend's role and position.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pgrelay::cluster {

enum class NodeRole {
  kUnknown,  ///< not probed successfully yet
  kPrimary,
  kStandby,
  kDown,    ///< failure_threshold consecutive probes failed
  kFenced,  ///< claims to be primary on an older timeline than the current primary
};

[[nodiscard]] std::string_view to_string(NodeRole role);

/// One backend as probed.
struct NodeStatus {
  std::string name;
  std::string host;
  std::uint16_t port = 0;
  NodeRole role = NodeRole::kUnknown;
  /// What the node itself said at its last successful probe (before fencing decisions).
  bool in_recovery = false;
  std::uint32_t timeline = 0;
  std::uint64_t lsn = 0;  ///< primary: current WAL LSN; standby: replay LSN
  std::uint32_t consecutive_failures = 0;
  std::string last_error;
};

/// Immutable once published; readers hold it through a shared_ptr.
struct Topology {
  std::uint64_t generation = 0;
  std::vector<NodeStatus> nodes;
  int primary = -1;  ///< index into nodes, -1 when no primary is known

  [[nodiscard]] const NodeStatus* primary_node() const {
    return primary >= 0 ? &nodes[static_cast<std::size_t>(primary)] : nullptr;
  }
};

/// Assigns roles from the nodes' own reports: the node out of recovery with the highest
/// timeline is the primary; others out of recovery on older timelines are fenced; two on the
/// same highest timeline leave the cluster without a primary (both are fenced). Nodes with
/// `failure_threshold` or more consecutive failures are down. Pure, for unit tests.
void assign_roles(Topology& topology, std::uint32_t failure_threshold);

}  // namespace pgrelay::cluster
