// Session parameter lists and the SQL that synchronises a server connection with a client.
#include "pgrelay/pool/params.hpp"

#include <algorithm>
#include <cctype>

namespace pgrelay::pool {

namespace {

constexpr std::string_view kReportedOther[] = {"in_hot_standby",        "is_superuser",
                                               "session_authorization", "server_version",
                                               "server_encoding",       "integer_datetimes"};

}  // namespace

const std::string* ParamList::find(std::string_view name) const {
  for (const auto& [key, value] : items_) {
    if (iequals(key, name)) return &value;
  }
  return nullptr;
}

bool ParamList::set(std::string_view name, std::string_view value) {
  for (auto& [key, current] : items_) {
    if (iequals(key, name)) {
      if (current == value) return false;
      current.assign(value);
      return true;
    }
  }
  items_.emplace_back(std::string(name), std::string(value));
  return true;
}

void ParamList::erase(std::string_view name) {
  std::erase_if(items_, [&](const auto& item) { return iequals(item.first, name); });
}

bool is_reported(std::string_view name) {
  const auto match = [&](std::string_view r) { return iequals(r, name); };
  return std::any_of(std::begin(kReportedSettable), std::end(kReportedSettable), match) ||
         std::any_of(std::begin(kReportedOther), std::end(kReportedOther), match);
}

std::string quote_literal(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out.push_back('\'');
    out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

std::string quote_guc_name(std::string_view name) {
  std::string out;
  std::size_t start = 0;
  while (true) {
    const auto dot = name.find('.', start);
    const auto part = name.substr(start, dot == std::string_view::npos ? name.npos : dot - start);
    out.push_back('"');
    for (char c : part) {
      if (c == '"') out.push_back('"');
      out.push_back(c);
    }
    out.push_back('"');
    if (dot == std::string_view::npos) break;
    out.push_back('.');
    start = dot + 1;
  }
  return out;
}

std::string param_sync_sql(const ParamList& client_reported, const ParamList& client_set,
                           const ParamList& server_reported, const ParamList& server_set) {
  std::string sets;
  const auto add_set = [&sets](std::string_view name, std::string_view value) {
    sets += sets.empty() ? "SELECT " : ", ";
    sets +=
        "pg_catalog.set_config(" + quote_literal(name) + ", " + quote_literal(value) + ", false)";
  };
  for (auto name : kReportedSettable) {
    const std::string* want = client_reported.find(name);
    const std::string* have = server_reported.find(name);
    if (want != nullptr && (have == nullptr || *have != *want)) add_set(name, *want);
  }
  for (const auto& [name, value] : client_set.items()) {
    const std::string* have = server_set.find(name);
    if (have == nullptr || *have != value) add_set(name, value);
  }
  std::string resets;
  for (const auto& [name, value] : server_set.items()) {
    if (client_set.find(name) == nullptr) resets += "RESET " + quote_guc_name(name) + ";";
  }
  return resets + sets;
}

}  // namespace pgrelay::pool
