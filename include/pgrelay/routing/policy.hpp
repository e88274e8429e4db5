// Where a transaction runs: the pure routing policy (no I/O, no clocks), so it can be tested as
// a table over topology snapshots.
//
// A transaction that is proven read-only goes to an eligible standby (up, streaming on the
// primary's timeline, within both lag limits, and with read-your-writes past the client's
// watermark), chosen by fewest outstanding transactions per unit of weight. Everything else, and
// every read that finds no eligible standby, goes to the primary. Each decision carries a reason
// that is counted in /metrics and shown at debug level.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "pgrelay/cluster/topology.hpp"
#include "pgrelay/sql/classify.hpp"

namespace pgrelay::routing {

enum class Intent : std::uint8_t { kRead, kWrite };

enum class Reason : std::uint8_t {
  kReadStandby,            ///< "read:standby"
  kReadPrimaryNoEligible,  ///< "read:primary:no-eligible": no standby is eligible
  kReadPrimaryRywWait,     ///< "read:primary:ryw-wait": eligible standbys have not replayed the
                           ///< client's last commit yet
  kReadPrimarySplitOff,    ///< "read:primary:split-off": read_write_split = false
  kWrite,                  ///< "write": not proven read-only
  kWriteHint,              ///< "write:hint": /* pgrelay:primary */
  kPinned,                 ///< "pinned": the session cannot leave its server connection
};
inline constexpr std::size_t kReasonCount = 7;

[[nodiscard]] std::string_view to_string(Reason reason);

/// What the session knows besides the query.
struct SessionIntent {
  /// default_transaction_read_only is on for the session (startup option or SET).
  bool default_read_only = false;
};

/// The intent of a transaction that starts with the classified query, and why.
struct IntentDecision {
  Intent intent = Intent::kWrite;
  Reason write_reason = Reason::kWrite;  ///< kWrite or kWriteHint when intent is kWrite
};
[[nodiscard]] IntentDecision intent_of(const sql::QueryClass& query, const SessionIntent& session);

struct Decision {
  int backend = -1;  ///< index into the topology's nodes; -1: no primary known (wait for one)
  Reason reason = Reason::kWrite;
};

struct ReadOptions {
  bool split = true;          ///< [routing] read_write_split
  std::uint64_t min_lsn = 0;  ///< read-your-writes watermark (0: none)
  /// Transactions running now per node (same indexing as the topology); empty = all zero.
  std::span<const std::uint32_t> outstanding;
  /// [[backend]] weight per node; empty = all 1. Weight 0 takes no reads.
  std::span<const std::uint32_t> weights;
  /// Breaks ties between equally loaded standbys (e.g. a counter), so they take turns.
  std::uint32_t tiebreak = 0;
};

/// Picks the node for a transaction of the given intent.
[[nodiscard]] Decision route(const cluster::Topology& topology, const IntentDecision& intent,
                             const ReadOptions& options);

}  // namespace pgrelay::routing
