// Role assignment: primary election by timeline, fencing of old primaries, split brain, down nodes.
#include "pgrelay/cluster/topology.hpp"

#include <gtest/gtest.h>

namespace pgrelay::cluster {
namespace {

NodeStatus node(std::string name, bool in_recovery, std::uint32_t timeline,
                std::uint32_t failures = 0) {
  NodeStatus n;
  n.name = std::move(name);
  n.in_recovery = in_recovery;
  n.timeline = timeline;
  n.consecutive_failures = failures;
  n.probed = timeline != 0;
  return n;
}

Topology assigned(std::vector<NodeStatus> nodes, std::uint32_t threshold = 3) {
  Topology t;
  t.nodes = std::move(nodes);
  assign_roles(t, threshold);
  return t;
}

TEST(AssignRoles, TheNodeOutOfRecoveryIsThePrimary) {
  const auto t = assigned({node("a", true, 1), node("b", false, 1), node("c", true, 1)});
  ASSERT_NE(t.primary_node(), nullptr);
  EXPECT_EQ(t.primary_node()->name, "b");
  EXPECT_EQ(t.nodes[0].role, NodeRole::kStandby);
  EXPECT_EQ(t.nodes[1].role, NodeRole::kPrimary);
  EXPECT_EQ(t.nodes[2].role, NodeRole::kStandby);
}

TEST(AssignRoles, NoPrimaryWhenEveryNodeIsInRecovery) {
  const auto t = assigned({node("a", true, 1), node("b", true, 1)});
  EXPECT_EQ(t.primary, -1);
  EXPECT_EQ(t.primary_node(), nullptr);
}

TEST(AssignRoles, OldPrimaryOnAnOlderTimelineIsFenced) {
  // node a restarted as a primary on timeline 1 after b was promoted to timeline 2.
  const auto t = assigned({node("a", false, 1), node("b", false, 2), node("c", true, 2)});
  ASSERT_NE(t.primary_node(), nullptr);
  EXPECT_EQ(t.primary_node()->name, "b");
  EXPECT_EQ(t.nodes[0].role, NodeRole::kFenced);
  EXPECT_EQ(t.nodes[2].role, NodeRole::kStandby);
}

TEST(AssignRoles, TwoPrimariesOnTheSameTimelineServeNeither) {
  const auto t = assigned({node("a", false, 3), node("b", false, 3), node("c", true, 3)});
  EXPECT_EQ(t.primary, -1);
  EXPECT_EQ(t.nodes[0].role, NodeRole::kFenced);
  EXPECT_EQ(t.nodes[1].role, NodeRole::kFenced);
  EXPECT_EQ(t.nodes[2].role, NodeRole::kStandby);
}

TEST(AssignRoles, NodesPastTheFailureThresholdAreDownAndLoseTheirRole) {
  auto t = assigned({node("a", false, 1, 3), node("b", true, 1)});
  EXPECT_EQ(t.nodes[0].role, NodeRole::kDown);
  EXPECT_EQ(t.primary, -1);
  // Below the threshold a node keeps its last known role.
  t = assigned({node("a", false, 1, 2), node("b", true, 1)});
  EXPECT_EQ(t.nodes[0].role, NodeRole::kPrimary);
  EXPECT_EQ(t.primary, 0);
}

TEST(AssignRoles, ADownPrimaryDoesNotBlockThePromotedOne) {
  const auto t = assigned({node("a", false, 1, 5), node("b", false, 2)}, 3);
  EXPECT_EQ(t.nodes[0].role, NodeRole::kDown);
  ASSERT_NE(t.primary_node(), nullptr);
  EXPECT_EQ(t.primary_node()->name, "b");
}

TEST(AssignRoles, OldPrimaryStaysFencedWhenTheNewPrimaryIsDown) {
  // b was promoted to timeline 2 and then died; a, back on timeline 1, must not take writes.
  Topology t;
  t.nodes = {node("a", false, 1), node("b", false, 2, 5), node("c", true, 2)};
  assign_roles(t, 3, /*highest_timeline_seen=*/2);
  EXPECT_EQ(t.nodes[0].role, NodeRole::kFenced);
  EXPECT_EQ(t.nodes[1].role, NodeRole::kDown);
  EXPECT_EQ(t.primary, -1);
  // Without that memory (as at start-up), the old primary would be chosen.
  assign_roles(t, 3, 0);
  EXPECT_EQ(t.primary, 0);
}

TEST(AssignRoles, NeverProbedNodesAreUnknown) {
  const auto t = assigned({node("a", false, 0), node("b", true, 0)});
  EXPECT_EQ(t.nodes[0].role, NodeRole::kUnknown);
  EXPECT_EQ(t.nodes[1].role, NodeRole::kUnknown);
  EXPECT_EQ(t.primary, -1);
}

TEST(FormatLsn, MatchesPostgresTextForm) {
  EXPECT_EQ(format_lsn(0), "0/0");
  EXPECT_EQ(format_lsn(0x16B374D848ULL), "16/B374D848");
  EXPECT_EQ(format_lsn(0x3000060), "0/3000060");
  EXPECT_EQ(format_lsn(0x10000000AULL), "1/A");
  EXPECT_EQ(format_lsn(~std::uint64_t{0}), "FFFFFFFF/FFFFFFFF");
  EXPECT_EQ(parse_lsn("16/B374D848"), 0x16B374D848ULL);
  EXPECT_EQ(parse_lsn(format_lsn(0x3000060)), 0x3000060ULL);
  EXPECT_EQ(parse_lsn("0/0"), 0ULL);
  for (const char* bad : {"", "/1", "1/", "1", "x/1", "1/2/3", "100000000/0", "1/ 2"}) {
    EXPECT_FALSE(parse_lsn(bad).has_value()) << bad;
  }
}

TEST(NodeRoleNames, MatchTheTopologyVocabulary) {
  EXPECT_EQ(to_string(NodeRole::kPrimary), "primary");
  EXPECT_EQ(to_string(NodeRole::kStandby), "standby");
  EXPECT_EQ(to_string(NodeRole::kDown), "down");
  EXPECT_EQ(to_string(NodeRole::kFenced), "fenced");
}

}  // namespace
}  // namespace pgrelay::cluster
