// Role assignment over a set of probed nodes: primary election and fencing.
#include "pgrelay/cluster/topology.hpp"

#include <array>
#include <charconv>
#include <cstdio>

namespace pgrelay::cluster {

std::string_view to_string(NodeRole role) {
  switch (role) {
    case NodeRole::kUnknown:
      return "unknown";
    case NodeRole::kPrimary:
      return "primary";
    case NodeRole::kStandby:
      return "standby";
    case NodeRole::kDown:
      return "down";
    case NodeRole::kFenced:
      return "fenced";
  }
  return "unknown";
}

void assign_roles(Topology& topology, std::uint32_t failure_threshold,
                  std::uint32_t highest_timeline_seen) {
  topology.primary = -1;
  std::uint32_t best_timeline = 0;
  int best = -1;
  int claims_at_best = 0;
  for (std::size_t i = 0; i < topology.nodes.size(); ++i) {
    NodeStatus& node = topology.nodes[i];
    if (node.consecutive_failures >= failure_threshold) {
      node.role = NodeRole::kDown;
      continue;
    }
    if (!node.probed) {
      node.role = NodeRole::kUnknown;
      continue;
    }
    node.role = node.in_recovery ? NodeRole::kStandby : NodeRole::kPrimary;
    if (node.in_recovery) continue;
    if (node.timeline > best_timeline) {
      best_timeline = node.timeline;
      best = static_cast<int>(i);
      claims_at_best = 1;
    } else if (node.timeline == best_timeline) {
      ++claims_at_best;
    }
  }
  for (auto& node : topology.nodes) {
    if (node.role != NodeRole::kPrimary) continue;
    // Older timeline: an old primary that came back. Same timeline twice: split brain, serve
    // neither for writes.
    if (node.timeline < best_timeline || node.timeline < highest_timeline_seen ||
        claims_at_best > 1) {
      node.role = NodeRole::kFenced;
    }
  }
  if (claims_at_best == 1 && best_timeline >= highest_timeline_seen) topology.primary = best;
}

std::string format_lsn(std::uint64_t lsn) {
  // By hand, not snprintf: every commit's LSN is told to its client in this form.
  constexpr char kDigits[] = "0123456789ABCDEF";
  std::array<char, 17> text{};  // two 8-digit halves and the '/'
  std::size_t size = 0;
  const auto append_hex = [&](std::uint32_t value) {
    int shift = 28;
    while (shift > 0 && (value >> shift) == 0) shift -= 4;  // no leading zeros, as %X
    for (; shift >= 0; shift -= 4) text[size++] = kDigits[(value >> shift) & 0xF];
  };
  append_hex(static_cast<std::uint32_t>(lsn >> 32));
  text[size++] = '/';
  append_hex(static_cast<std::uint32_t>(lsn & 0xffffffffU));
  return {text.data(), size};
}

std::optional<std::uint64_t> parse_lsn(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 >= text.size()) {
    return std::nullopt;
  }
  std::uint64_t high = 0;
  std::uint64_t low = 0;
  const auto* begin = text.data();
  const auto r1 = std::from_chars(begin, begin + slash, high, 16);
  const auto r2 = std::from_chars(begin + slash + 1, begin + text.size(), low, 16);
  if (r1.ec != std::errc{} || r1.ptr != begin + slash || r2.ec != std::errc{} ||
      r2.ptr != begin + text.size() || high > 0xffffffffULL || low > 0xffffffffULL) {
    return std::nullopt;
  }
  return (high << 32) | low;
}

}  // namespace pgrelay::cluster
