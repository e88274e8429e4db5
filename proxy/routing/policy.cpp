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
  const auto candidate = [&](std::size_t i) {
    const auto& node = topology.nodes[i];
    if (!node.eligible || node.role != cluster::NodeRole::kStandby || weight(i) == 0) return false;
    if (options.min_lsn != 0 && node.replay_lsn < options.min_lsn) {
      behind_watermark = true;
      return false;
    }
    return true;
  };
  // (load+1)/weight, compared by cross-multiplying: -1 better, 0 equal, 1 worse.
  const auto compare = [&](std::size_t a, std::size_t b) {
    const auto lhs = (load(a) + 1) * weight(b);
    const auto rhs = (load(b) + 1) * weight(a);
    return lhs < rhs ? -1 : (lhs == rhs ? 0 : 1);
  };
  // Two passes, no allocation: the best score and how many share it, then the turn's pick.
  std::size_t best = topology.nodes.size();
  std::uint32_t ties = 0;
  for (std::size_t i = 0; i < topology.nodes.size(); ++i) {
    if (!candidate(i)) continue;
    const int order = ties == 0 ? -1 : compare(i, best);
    if (order < 0) {
      best = i;
      ties = 1;
    } else if (order == 0) {
      ++ties;
    }
  }
  if (ties == 0) {
    decision.reason =
        behind_watermark ? Reason::kReadPrimaryRywWait : Reason::kReadPrimaryNoEligible;
    return decision;
  }
  // Equally good standbys take turns.
  std::uint32_t pick = options.tiebreak % ties;
  for (std::size_t i = best; i < topology.nodes.size(); ++i) {
    if (!candidate(i) || compare(i, best) != 0) continue;
    if (pick-- == 0) {
      decision.backend = static_cast<int>(i);
      break;
    }
  }
  decision.reason = Reason::kReadStandby;
  return decision;
}

}  // namespace pgrelay::routing
