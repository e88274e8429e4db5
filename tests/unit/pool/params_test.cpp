// Parameter lists and the SQL that brings a pooled server connection to a client's parameters.
#include "pgrelay/pool/params.hpp"

#include <gtest/gtest.h>

#include "pgrelay/pool/pool.hpp"

namespace pgrelay::pool {
namespace {

ParamList list(std::initializer_list<std::pair<std::string, std::string>> items) {
  ParamList out;
  for (const auto& [name, value] : items) out.set(name, value);
  return out;
}

TEST(ParamList, NamesCompareCaseInsensitively) {
  ParamList params;
  EXPECT_TRUE(params.set("DateStyle", "ISO, MDY"));
  EXPECT_FALSE(params.set("datestyle", "ISO, MDY"));
  ASSERT_NE(params.find("DATESTYLE"), nullptr);
  EXPECT_EQ(*params.find("DATESTYLE"), "ISO, MDY");
  EXPECT_TRUE(params.set("DATESTYLE", "German"));
  EXPECT_EQ(params.items().size(), 1u);
  params.erase("dateSTYLE");
  EXPECT_TRUE(params.empty());
}

TEST(ParamSync, NothingWhenStatesMatch) {
  const auto reported = list({{"application_name", "app"}, {"TimeZone", "UTC"}});
  const auto set = list({{"search_path", "a, public"}});
  EXPECT_EQ(param_sync_sql(reported, set, reported, set), "");
  EXPECT_EQ(param_sync_sql({}, {}, reported, {}), "");  // nothing the client asks for
}

TEST(ParamSync, ReportedParametersThatDifferAreSet) {
  const auto client = list({{"application_name", "mine"}, {"TimeZone", "UTC"}});
  const auto server = list({{"application_name", "other"}, {"TimeZone", "UTC"}});
  EXPECT_EQ(param_sync_sql(client, {}, server, {}),
            "SELECT pg_catalog.set_config('application_name', 'mine', false)");
}

TEST(ParamSync, ReportedButNotSettableParametersAreLeftAlone) {
  const auto client = list({{"server_version", "15.1"}, {"is_superuser", "on"}});
  const auto server = list({{"server_version", "15.2"}, {"is_superuser", "off"}});
  EXPECT_EQ(param_sync_sql(client, {}, server, {}), "");
}

TEST(ParamSync, OtherParametersAreSetWhenMissingOrDifferent) {
  const auto client = list({{"search_path", "s1, public"}, {"statement_timeout", "5s"}});
  const auto server = list({{"statement_timeout", "1s"}});
  EXPECT_EQ(param_sync_sql({}, client, {}, server),
            "SELECT pg_catalog.set_config('search_path', 's1, public', false), "
            "pg_catalog.set_config('statement_timeout', '5s', false)");
}

TEST(ParamSync, ParametersOnlyTheServerHasAreReset) {
  const auto server = list({{"work_mem", "64MB"}, {"myapp.user_id", "42"}});
  EXPECT_EQ(param_sync_sql({}, {}, {}, server), "RESET \"work_mem\";RESET \"myapp\".\"user_id\";");
}

TEST(ParamSync, ResetsComeBeforeSets) {
  const auto client = list({{"search_path", "x"}});
  const auto server = list({{"work_mem", "64MB"}});
  EXPECT_EQ(param_sync_sql({}, client, {}, server),
            "RESET \"work_mem\";SELECT pg_catalog.set_config('search_path', 'x', false)");
}

TEST(ParamSync, ValuesAndNamesAreQuoted) {
  const auto client = list({{"application_name", "it's"}});
  EXPECT_EQ(param_sync_sql(client, {}, {}, {}),
            "SELECT pg_catalog.set_config('application_name', 'it''s', false)");
  EXPECT_EQ(quote_guc_name("we\"ird"), "\"we\"\"ird\"");
  EXPECT_EQ(quote_literal(""), "''");
}

TEST(ParamSync, ReportedNamesAreKnown) {
  EXPECT_TRUE(is_reported("application_name"));
  EXPECT_TRUE(is_reported("timezone"));
  EXPECT_TRUE(is_reported("in_hot_standby"));
  EXPECT_FALSE(is_reported("search_path"));
  EXPECT_FALSE(is_reported("statement_timeout"));
}

TEST(PreparedCache, EvictsTheLeastRecentlyUsed) {
  PreparedCache cache;
  EXPECT_EQ(cache.insert(1, 2), std::nullopt);
  EXPECT_EQ(cache.insert(2, 2), std::nullopt);
  cache.touch(1);                     // 2 is now the least recently used
  EXPECT_EQ(cache.insert(3, 2), 2u);  // evicted
  EXPECT_TRUE(cache.contains(1));
  EXPECT_FALSE(cache.contains(2));
  EXPECT_TRUE(cache.contains(3));
  EXPECT_EQ(cache.insert(3, 2), std::nullopt);  // already there: only touched
  EXPECT_EQ(cache.insert(4, 2), 1u);
  cache.erase(3);
  EXPECT_EQ(cache.size(), 1u);
  cache.clear();
  EXPECT_EQ(cache.size(), 0u);
}

}  // namespace
}  // namespace pgrelay::pool
