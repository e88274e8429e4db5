#include "pgrelay/routing/policy.hpp"

namespace pgrelay::routing {

std::string_view to_string(Reason reason) {
  switch (reason) {
    case Reason::kReadStandby:
      return "read:standby";
    case Reason::kReadPrimaryNoEligible:
      return "read:primary:no-eligible";
    case Reason::kReadPrimaryRywWait:
      return "read:primary:ryw-wait";
    case Reason::kReadPrimarySplitOff:
      return "read:primary:split-off";
    case Reason::kWrite:
      return "write";
    case Reason::kWriteHint:
      return "write:hint";
    case Reason::kPinned:
      return "pinned";
  }
  return "?";
}

IntentDecision intent_of(const sql::QueryClass& query, const SessionIntent& session) {
  using sql::StatementKind;
  IntentDecision decision;
  if (query.force_primary) {
    decision.write_reason = Reason::kWriteHint;
    return decision;
  }
  // READ WRITE said explicitly wins over the session default.
  if (query.tx_read_only == false) return decision;
  const bool read = [&] {
    switch (query.first) {
      case StatementKind::kBegin:
      case StatementKind::kSetTransaction:
        // A transaction declared read only (or read only by the session's default) is routed
        // as a read; a plain BEGIN goes to the primary: a later write in it would fail on a
        // standby.
        return query.tx_read_only == true || session.default_read_only;
      case StatementKind::kRead:
      case StatementKind::kSession:
        return query.read_only || session.default_read_only;
      case StatementKind::kWrite:
        // The server refuses writes in a read-only session anyway.
        return session.default_read_only;
      case StatementKind::kEnd:
      case StatementKind::kEmpty:
        return false;
    }
    return false;
  }();
  if (read) decision.intent = Intent::kRead;
  return decision;
}

Decision route(const cluster::Topology& topology, const IntentDecision& intent,
               const ReadOptions& options) {
  Decision decision;
  decision.backend = topology.primary;
  if (intent.intent == Intent::kWrite) {
    decision.reason = intent.write_reason;
    return decision;
  }
  if (!options.split) {
    decision.reason = Reason::kReadPrimarySplitOff;
    return decision;
  }
  const auto load = [&](std::size_t i) -> std::uint64_t {
    return i < options.outstanding.size() ? options.outstanding[i] : 0;
  };
  const auto weight = [&](std::size_t i) -> std::uint64_t {
    return i < options.weights.size() ? options.weights[i] : 1;
  };
  bool behind_watermark = false;
  int best = -1;
  std::uint32_t ties = 0;
  // First pass: the best score; (load+1)/weight compared by cross-multiplying.
  for (std::size_t i = 0; i < topology.nodes.size(); ++i) {
    const auto& node = topology.nodes[i];
    if (!node.eligible || node.role != cluster::NodeRole::kStandby || weight(i) == 0) continue;
    if (options.min_lsn != 0 && node.replay_lsn < options.min_lsn) {
      behind_watermark = true;
      continue;
    }
    if (best < 0) {
      best = static_cast<int>(i);
      ties = 1;
      continue;
    }
    const auto b = static_cast<std::size_t>(best);
    const auto lhs = (load(i) + 1) * weight(b);
    const auto rhs = (load(b) + 1) * weight(i);
    if (lhs < rhs) {
      best = static_cast<int>(i);
      ties = 1;
    } else if (lhs == rhs) {
      ++ties;
    }
  }
  if (best < 0) {
    decision.reason =
        behind_watermark ? Reason::kReadPrimaryRywWait : Reason::kReadPrimaryNoEligible;
    return decision;
  }
  if (ties > 1) {
    // Equally good standbys take turns.
    const auto b = static_cast<std::size_t>(best);
    std::uint32_t pick = options.tiebreak % ties;
    for (std::size_t i = 0; i < topology.nodes.size(); ++i) {
      const auto& node = topology.nodes[i];
      if (!node.eligible || node.role != cluster::NodeRole::kStandby || weight(i) == 0) continue;
      if (options.min_lsn != 0 && node.replay_lsn < options.min_lsn) continue;
      if ((load(i) + 1) * weight(b) != (load(b) + 1) * weight(i)) continue;
      if (pick == 0) {
        best = static_cast<int>(i);
        break;
      }
      --pick;
    }
  }
  decision.backend = best;
  decision.reason = Reason::kReadStandby;
  return decision;
}

}  // namespace pgrelay::routing
