// The routing policy as tables: intents from classified queries, and decisions over topology
// snapshots (roles, eligibility, replay positions, load and weights).
#include "pgrelay/routing/policy.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pgrelay::routing {
namespace {

using cluster::NodeRole;
using cluster::Topology;
using sql::QueryClass;
using sql::StatementKind;

QueryClass query(StatementKind first, bool read_only = true, std::optional<bool> tx = {},
                 bool hint = false) {
  QueryClass q;
  q.first = first;
  q.read_only = read_only;
  q.tx_read_only = tx;
  q.force_primary = hint;
  return q;
}

TEST(RoutingIntent, Table) {
  struct Row {
    const char* name;
    QueryClass query;
    bool default_read_only;
    Intent want;
    Reason write_reason;
  };
  const Row rows[] = {
      {"autocommit read", query(StatementKind::kRead), false, Intent::kRead, Reason::kWrite},
      {"read then write", query(StatementKind::kRead, false), false, Intent::kWrite,
       Reason::kWrite},
      {"write", query(StatementKind::kWrite, false), false, Intent::kWrite, Reason::kWrite},
      {"hinted read", query(StatementKind::kRead, true, {}, true), false, Intent::kWrite,
       Reason::kWriteHint},
      {"plain BEGIN", query(StatementKind::kBegin), false, Intent::kWrite, Reason::kWrite},
      {"BEGIN READ ONLY", query(StatementKind::kBegin, true, true), false, Intent::kRead,
       Reason::kWrite},
      {"BEGIN READ WRITE", query(StatementKind::kBegin, true, false), false, Intent::kWrite,
       Reason::kWrite},
      {"BEGIN in a read-only session", query(StatementKind::kBegin), true, Intent::kRead,
       Reason::kWrite},
      {"BEGIN READ WRITE in a read-only session", query(StatementKind::kBegin, true, false), true,
       Intent::kWrite, Reason::kWrite},
      {"SET TRANSACTION READ ONLY", query(StatementKind::kSetTransaction, true, true), false,
       Intent::kRead, Reason::kWrite},
      {"write in a read-only session", query(StatementKind::kWrite, false), true, Intent::kRead,
       Reason::kWrite},
      {"hint beats a read-only session", query(StatementKind::kRead, true, {}, true), true,
       Intent::kWrite, Reason::kWriteHint},
      {"SET alone", query(StatementKind::kSession), false, Intent::kRead, Reason::kWrite},
      {"COMMIT outside a transaction", query(StatementKind::kEnd), false, Intent::kWrite,
       Reason::kWrite},
      {"empty query", query(StatementKind::kEmpty), false, Intent::kWrite, Reason::kWrite},
  };
  for (const auto& row : rows) {
    const auto decision = intent_of(row.query, SessionIntent{row.default_read_only});
    EXPECT_EQ(decision.intent, row.want) << row.name;
    if (row.want == Intent::kWrite) {
      EXPECT_EQ(decision.write_reason, row.write_reason) << row.name;
    }
  }
}

/// node1 primary at LSN 1000; node2 and node3 standbys replayed to `replay2` / `replay3`.
Topology cluster3(bool eligible2 = true, bool eligible3 = true, std::uint64_t replay2 = 1000,
                  std::uint64_t replay3 = 1000) {
  Topology t;
  t.nodes.resize(3);
  t.nodes[0].name = "node1";
  t.nodes[0].role = NodeRole::kPrimary;
  t.nodes[0].current_lsn = 1000;
  t.nodes[1].name = "node2";
  t.nodes[1].role = NodeRole::kStandby;
  t.nodes[1].eligible = eligible2;
  t.nodes[1].replay_lsn = replay2;
  t.nodes[2].name = "node3";
  t.nodes[2].role = NodeRole::kStandby;
  t.nodes[2].eligible = eligible3;
  t.nodes[2].replay_lsn = replay3;
  t.primary = 0;
  return t;
}

ReadOptions split_off() {
  ReadOptions options;
  options.split = false;
  return options;
}

ReadOptions watermark(std::uint64_t lsn) {
  ReadOptions options;
  options.min_lsn = lsn;
  return options;
}

const IntentDecision kRead{Intent::kRead, Reason::kWrite};
const IntentDecision kWriteIntent{Intent::kWrite, Reason::kWrite};

TEST(RoutingDecision, Table) {
  struct Row {
    const char* name;
    Topology topology;
    IntentDecision intent;
    ReadOptions options;
    std::vector<std::uint32_t> outstanding;
    std::vector<std::uint32_t> weights;
    int want_backend;
    Reason want_reason;
  };
  std::vector<Row> rows;
  rows.push_back(
      {"write goes to the primary", cluster3(), kWriteIntent, {}, {}, {}, 0, Reason::kWrite});
  rows.push_back({"hinted write names its reason",
                  cluster3(),
                  IntentDecision{Intent::kWrite, Reason::kWriteHint},
                  {},
                  {},
                  {},
                  0,
                  Reason::kWriteHint});
  rows.push_back(
      {"read goes to a standby", cluster3(), kRead, {}, {0, 0, 0}, {}, 1, Reason::kReadStandby});
  rows.push_back(
      {"least outstanding standby", cluster3(), kRead, {}, {0, 5, 1}, {}, 2, Reason::kReadStandby});
  rows.push_back({"weight doubles a standby's share",
                  cluster3(),
                  kRead,
                  {},
                  {0, 3, 1},
                  {1, 4, 1},
                  1,
                  Reason::kReadStandby});
  rows.push_back({"weight 0 takes no reads",
                  cluster3(),
                  kRead,
                  {},
                  {0, 0, 9},
                  {1, 0, 1},
                  2,
                  Reason::kReadStandby});
  rows.push_back({"only weight-0 standbys: primary",
                  cluster3(),
                  kRead,
                  {},
                  {},
                  {1, 0, 0},
                  0,
                  Reason::kReadPrimaryNoEligible});
  rows.push_back({"ineligible standby skipped",
                  cluster3(false, true),
                  kRead,
                  {},
                  {},
                  {},
                  2,
                  Reason::kReadStandby});
  rows.push_back({"no eligible standby: primary",
                  cluster3(false, false),
                  kRead,
                  {},
                  {},
                  {},
                  0,
                  Reason::kReadPrimaryNoEligible});
  rows.push_back({"split off: primary",
                  cluster3(),
                  kRead,
                  split_off(),
                  {},
                  {},
                  0,
                  Reason::kReadPrimarySplitOff});
  rows.push_back({"watermark reached by node3 only",
                  cluster3(true, true, 900, 1000),
                  kRead,
                  watermark(950),
                  {},
                  {},
                  2,
                  Reason::kReadStandby});
  rows.push_back({"watermark exactly at replay is enough",
                  cluster3(true, false, 950, 0),
                  kRead,
                  watermark(950),
                  {},
                  {},
                  1,
                  Reason::kReadStandby});
  rows.push_back({"watermark not reached: ryw wait",
                  cluster3(true, true, 900, 940),
                  kRead,
                  watermark(950),
                  {},
                  {},
                  0,
                  Reason::kReadPrimaryRywWait});
  rows.push_back({"behind watermark and ineligible: no-eligible",
                  cluster3(false, false, 900, 900),
                  kRead,
                  watermark(950),
                  {},
                  {},
                  0,
                  Reason::kReadPrimaryNoEligible});
  {
    auto t = cluster3();
    t.primary = -1;
    t.nodes[0].role = NodeRole::kDown;
    rows.push_back(
        {"write without a primary: wait", t, kWriteIntent, {}, {}, {}, -1, Reason::kWrite});
    rows.push_back({"read without a primary still uses a standby",
                    t,
                    kRead,
                    {},
                    {},
                    {},
                    1,
                    Reason::kReadStandby});
  }
  {
    auto t = cluster3();
    t.nodes[1].role = NodeRole::kFenced;  // a stale flag must not matter
    rows.push_back({"fenced node gets no reads", t, kRead, {}, {}, {}, 2, Reason::kReadStandby});
  }
  for (auto& row : rows) {
    row.options.outstanding = row.outstanding;
    row.options.weights = row.weights;
    const auto decision = route(row.topology, row.intent, row.options);
    EXPECT_EQ(decision.backend, row.want_backend) << row.name;
    EXPECT_EQ(decision.reason, row.want_reason) << row.name << ": " << to_string(decision.reason);
  }
}

TEST(RoutingDecision, EquallyLoadedStandbysTakeTurns) {
  const auto topology = cluster3();
  int counts[3] = {0, 0, 0};
  for (std::uint32_t i = 0; i < 100; ++i) {
    ReadOptions options;
    options.tiebreak = i;
    ++counts[route(topology, kRead, options).backend];
  }
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[1], 50);
  EXPECT_EQ(counts[2], 50);
}

TEST(RoutingDecision, ReasonNames) {
  EXPECT_EQ(to_string(Reason::kReadStandby), "read:standby");
  EXPECT_EQ(to_string(Reason::kReadPrimaryNoEligible), "read:primary:no-eligible");
  EXPECT_EQ(to_string(Reason::kReadPrimaryRywWait), "read:primary:ryw-wait");
  EXPECT_EQ(to_string(Reason::kWrite), "write");
  EXPECT_EQ(to_string(Reason::kPinned), "pinned");
}

}  // namespace
}  // namespace pgrelay::routing
