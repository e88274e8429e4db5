// The cluster as pgrelay last saw it: an immutable snapshot of every backend's role, position,
// replay lag and eligibility for reads.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrelay::cluster {

enum class NodeRole {
  kUnknown,  ///< not probed successfully yet
  kPrimary,
  kStandby,
  kDown,    ///< failure_threshold consecutive probes failed
  kFenced,  ///< claims to be primary on an older timeline (or on the same one as another)
};

[[nodiscard]] std::string_view to_string(NodeRole role);

/// One backend as probed.
struct NodeStatus {
  std::string name;
  std::string host;
  std::uint16_t port = 0;
  NodeRole role = NodeRole::kUnknown;

  // What the node itself reported at its last successful probe.
  bool probed = false;  ///< at least one probe succeeded
  bool in_recovery = false;
  std::uint32_t timeline = 0;
  std::uint64_t system_identifier = 0;
  std::uint64_t current_lsn = 0;  ///< primary: pg_current_wal_lsn()
  std::uint64_t receive_lsn = 0;  ///< standby: pg_last_wal_receive_lsn()
  std::uint64_t replay_lsn = 0;   ///< standby: pg_last_wal_replay_lsn()
  bool streaming = false;         ///< standby: its WAL receiver is streaming
  std::chrono::steady_clock::time_point probed_at{};
  std::uint32_t rtt_us = 0;  ///< round trip of the last probe query

  // Derived when the snapshot is built.
  std::uint64_t replay_lag_bytes = 0;
  std::uint64_t replay_lag_ms = 0;
  bool eligible = false;  ///< may serve reads now

  std::uint32_t consecutive_failures = 0;
  std::uint64_t probes_total = 0;
  std::uint64_t probe_failures_total = 0;
  std::string last_error;

  /// The LSN shown to operators: the primary's current position, a standby's replay position.
  [[nodiscard]] std::uint64_t lsn() const { return in_recovery ? replay_lsn : current_lsn; }
};

/// Immutable once published; readers hold it through a shared_ptr.
struct Topology {
  std::uint64_t generation = 0;
  std::vector<NodeStatus> nodes;
  int primary = -1;                ///< index into nodes, -1 when no primary is known
  std::uint64_t failovers = 0;     ///< times the primary moved to another node
  std::uint64_t role_changes = 0;  ///< role transitions of any node

  [[nodiscard]] const NodeStatus* primary_node() const {
    return primary >= 0 ? &nodes[static_cast<std::size_t>(primary)] : nullptr;
  }
  [[nodiscard]] const NodeStatus* find(std::string_view name) const {
    for (const auto& node : nodes) {
      if (node.name == name) return &node;
    }
    return nullptr;
  }
};

/// Assigns roles from the nodes' own reports: the node out of recovery with the highest
/// timeline is the primary; others out of recovery on older timelines are fenced; two on the
/// same highest timeline leave the cluster without a primary (both are fenced). A node out of
/// recovery on a timeline below `highest_timeline_seen` (the highest any node ever reported) is
/// fenced even when the newer primary is down, so an old primary never takes writes again.
/// Nodes with `failure_threshold` or more consecutive failures are down. Pure, for unit tests.
void assign_roles(Topology& topology, std::uint32_t failure_threshold,
                  std::uint32_t highest_timeline_seen = 0);

/// PostgreSQL's text form of an LSN: "16/B374D848".
[[nodiscard]] std::string format_lsn(std::uint64_t lsn);
/// "X/Y" (hex, as PostgreSQL prints an LSN) back to a number; nullopt when malformed.
[[nodiscard]] std::optional<std::uint64_t> parse_lsn(std::string_view text);

}  // namespace pgrelay::cluster
