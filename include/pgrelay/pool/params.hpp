// Session parameters of clients and server connections, and the SQL that makes a server
// connection's parameters equal a client's (transaction pooling).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgrelay::pool {

/// A small name -> value list; names compare case-insensitively (GUC names do).
class ParamList {
 public:
  [[nodiscard]] const std::string* find(std::string_view name) const;
  /// Returns true when the value changed.
  bool set(std::string_view name, std::string_view value);
  void erase(std::string_view name);
  void clear() { items_.clear(); }
  [[nodiscard]] bool empty() const { return items_.empty(); }
  [[nodiscard]] const auto& items() const { return items_; }
  friend bool operator==(const ParamList&, const ParamList&) = default;

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

/// GUC_REPORT parameters (PostgreSQL 15) a client can set: the server reports their changes in
/// ParameterStatus, so pgrelay follows them from there.
inline constexpr std::string_view kReportedSettable[] = {"application_name",
                                                         "client_encoding",
                                                         "DateStyle",
                                                         "IntervalStyle",
                                                         "TimeZone",
                                                         "standard_conforming_strings",
                                                         "default_transaction_read_only"};

/// ASCII case-insensitive equality, as PostgreSQL compares parameter names.
[[nodiscard]] inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto x = static_cast<unsigned char>(a[i]);
    auto y = static_cast<unsigned char>(b[i]);
    if (x == y) continue;
    if (x >= 'A' && x <= 'Z') x = static_cast<unsigned char>(x + ('a' - 'A'));
    if (y >= 'A' && y <= 'Z') y = static_cast<unsigned char>(y + ('a' - 'A'));
    if (x != y) return false;
  }
  return true;
}

/// True for every GUC_REPORT parameter of PostgreSQL 15 (settable or not).
[[nodiscard]] bool is_reported(std::string_view name);

/// `text` as an SQL string literal (standard_conforming_strings on: quotes doubled).
[[nodiscard]] std::string quote_literal(std::string_view text);

/// A parameter name for RESET: every dotted part double-quoted ("app"."user_id").
[[nodiscard]] std::string quote_guc_name(std::string_view name);

/// The SQL that brings a server connection to a client's parameters, or "" when they already
/// match: RESET for parameters set on the connection that the client does not have, then one
/// SELECT of set_config(name, value, false) for every reported settable parameter whose value
/// differs (`client_reported` vs `server_reported`) and every other parameter the client has
/// with a different or no value on the connection (`client_set` vs `server_set`).
[[nodiscard]] std::string param_sync_sql(const ParamList& client_reported,
                                         const ParamList& client_set,
                                         const ParamList& server_reported,
                                         const ParamList& server_set);

}  // namespace pgrelay::pool
