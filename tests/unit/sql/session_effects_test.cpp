// Tests analyze_session_effects: settings, prepared statements and pins, including look-alikes in
// strings, comments and identifiers, multi-statement texts, name ranges and malformed input.
#include "pgrelay/sql/session_effects.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <string_view>
#include <vector>

// Counts allocations so a test can check the analyser allocates nothing when it reports nothing.
namespace {
std::atomic<std::size_t> allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t /*size*/) noexcept { std::free(p); }

namespace pgrelay::sql {
namespace {

struct Expected {
  std::vector<std::string> params{};
  bool reset_all = false;
  bool deallocate_all = false;
  bool discard_all = false;
  std::vector<std::string> prepares{};
  std::vector<std::string> executes{};
  std::vector<std::string> deallocates{};
  PinReason pin = PinReason::kNone;
  std::uint32_t statements = 1;
};

struct Case {
  std::string_view sql;
  Expected expected;
};

std::vector<std::string> names_of(const std::vector<NameRef>& refs) {
  std::vector<std::string> names;
  for (const auto& ref : refs) names.push_back(ref.name);
  return names;
}

// Each range holds exactly one name token whose value is the reported name.
void check_ranges(std::string_view sql, const std::vector<NameRef>& refs) {
  for (const auto& ref : refs) {
    ASSERT_LT(ref.begin, ref.end);
    ASSERT_LE(ref.end, sql.size());
    const std::string_view text = sql.substr(ref.begin, ref.end - ref.begin);
    Lexer lexer(text);
    const Token token = lexer.next();
    EXPECT_EQ(token.begin, 0U) << text;
    EXPECT_EQ(token.end, text.size()) << text;
    EXPECT_EQ(identifier_value(token, text), ref.name) << text;
  }
}

void check(const std::vector<Case>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.sql));
    const SessionEffects effects = analyze_session_effects(c.sql);
    const Expected& e = c.expected;
    EXPECT_EQ(effects.params, e.params);
    EXPECT_EQ(effects.reset_all, e.reset_all);
    EXPECT_EQ(effects.deallocate_all, e.deallocate_all);
    EXPECT_EQ(effects.discard_all, e.discard_all);
    EXPECT_EQ(names_of(effects.prepares), e.prepares);
    EXPECT_EQ(names_of(effects.executes), e.executes);
    EXPECT_EQ(names_of(effects.deallocates), e.deallocates);
    EXPECT_EQ(to_string(effects.pin), to_string(e.pin));
    EXPECT_EQ(effects.statements, e.statements);
    check_ranges(c.sql, effects.prepares);
    check_ranges(c.sql, effects.executes);
    check_ranges(c.sql, effects.deallocates);
    const bool nothing = e.params.empty() && !e.reset_all && !e.deallocate_all && !e.discard_all &&
                         e.prepares.empty() && e.executes.empty() && e.deallocates.empty() &&
                         e.pin == PinReason::kNone;
    EXPECT_EQ(effects.empty(), nothing);
    // The word scan that lets the session skip the analysis must not miss any of these.
    if (!nothing) {
      EXPECT_TRUE(scan_words(c.sql).may_have_effects);
    }
  }
}

TEST(SessionEffects, Set) {
  check({
      {"SET search_path TO app, public", {.params = {"search_path"}}},
      {"set Search_Path = 'x'", {.params = {"search_path"}}},
      {"SET SESSION statement_timeout = 0", {.params = {"statement_timeout"}}},
      {"SET myapp.user_id = 42", {.params = {"myapp.user_id"}}},
      {"SET MyApp . User_Id TO '42'", {.params = {"myapp.user_id"}}},
      {"SET \"MyApp\".\"User\" TO 'x'", {.params = {"myapp.user"}}},
      {"SET \"search_path\" = x", {.params = {"search_path"}}},
      {"SET search_path FROM CURRENT", {.params = {"search_path"}}},
      {"SET work_mem TO DEFAULT", {.params = {"work_mem"}}},
      {"SET session TO 'x'", {.params = {"session"}}},  // a setting called "session"
      {"SET local = 1", {.params = {"local"}}},
      {"SET role.x = 1; SET schema.y TO 2; RESET time.zone",
       {.params = {"role.x", "schema.y", "time.zone"}, .statements = 3}},
      {"SET statement_timeout", {}},  // no value: the server refuses it
      {"SET", {}},
  });
}

TEST(SessionEffects, SetSpecialForms) {
  check({
      {"SET TIME ZONE 'UTC'", {.params = {"timezone"}}},
      {"SET SESSION TIME ZONE LOCAL", {.params = {"timezone"}}},
      {"SET timezone = 'UTC'", {.params = {"timezone"}}},
      {"SET NAMES 'UTF8'", {.params = {"client_encoding"}}},
      {"SET SCHEMA 'app'", {.params = {"search_path"}}},
      {"SET ROLE app_user", {.params = {"role"}}},
      {"SET SESSION ROLE NONE", {.params = {"role"}}},
      {"SET role TO admin", {.params = {"role"}}},
      {"SET XML OPTION DOCUMENT", {.params = {"xmloption"}}},
      {"SET xmloption = content", {.params = {"xmloption"}}},
  });
}

TEST(SessionEffects, TransactionScopedSetIsNotASessionParam) {
  check({
      {"SET LOCAL statement_timeout = 0", {}},
      {"SET LOCAL TIME ZONE 'UTC'", {}},
      {"SET LOCAL ROLE admin", {}},
      {"set local myapp.user_id = 1", {}},
      {"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", {}},
      {"SET SESSION TRANSACTION READ ONLY", {}},
      {"SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", {}},
      {"SET CONSTRAINTS ALL DEFERRED", {}},
      {"SET CONSTRAINTS a, b IMMEDIATE", {}},
      {"BEGIN; SET LOCAL search_path = x; COMMIT", {.statements = 3}},
  });
}

TEST(SessionEffects, SessionCharacteristics) {
  check({
      {"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
       {.params = {"default_transaction_read_only"}}},
      {"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
       {.params = {"default_transaction_isolation"}}},
      {"set session characteristics as transaction isolation level repeatable read, read write, "
       "not deferrable",
       {.params = {"default_transaction_isolation", "default_transaction_read_only",
                   "default_transaction_deferrable"}}},
      {"SET SESSION CHARACTERISTICS AS TRANSACTION DEFERRABLE ISOLATION LEVEL SERIALIZABLE",
       {.params = {"default_transaction_deferrable", "default_transaction_isolation"}}},
      {"SET LOCAL SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", {}},
  });
}

TEST(SessionEffects, SessionAuthorization) {
  check({
      {"SET SESSION AUTHORIZATION 'bob'", {.pin = PinReason::kSessionAuthorization}},
      {"set session authorization default", {.pin = PinReason::kSessionAuthorization}},
      {"SET SESSION SESSION AUTHORIZATION bob", {.pin = PinReason::kSessionAuthorization}},
      {"RESET SESSION AUTHORIZATION", {.pin = PinReason::kSessionAuthorization}},
      {"SET LOCAL SESSION AUTHORIZATION 'bob'", {}},
  });
}

TEST(SessionEffects, Reset) {
  check({
      {"RESET statement_timeout", {.params = {"statement_timeout"}}},
      {"RESET myapp.User_Id", {.params = {"myapp.user_id"}}},
      {"RESET TIME ZONE", {.params = {"timezone"}}},
      {"RESET ROLE", {.params = {"role"}}},
      {"RESET ALL", {.reset_all = true}},
      {"reset all", {.reset_all = true}},
      {"RESET TRANSACTION ISOLATION LEVEL", {}},
      {"RESET \"all\"", {.params = {"all"}}},
      {"RESET session.x; RESET role.y", {.params = {"session.x", "role.y"}, .statements = 2}},
  });
}

TEST(SessionEffects, ParamsKeepOrderWithoutDuplicates) {
  check({
      {"SET work_mem = '64MB'; SET work_mem = '1GB'; SET Work_Mem TO DEFAULT",
       {.params = {"work_mem"}, .statements = 3}},
      {"SET b = 2; SET a = 1; RESET b; SET TIME ZONE 'UTC'; SET timezone = 'UTC'",
       {.params = {"b", "a", "timezone"}, .statements = 5}},
      {"DISCARD ALL; SET a = 1",
       {.params = {"a"},
        .reset_all = true,
        .deallocate_all = true,
        .discard_all = true,
        .statements = 2}},
  });
}

TEST(SessionEffects, Discard) {
  check({
      {"DISCARD ALL", {.reset_all = true, .deallocate_all = true, .discard_all = true}},
      {"discard all;", {.reset_all = true, .deallocate_all = true, .discard_all = true}},
      {"DISCARD PLANS", {}},
      {"DISCARD SEQUENCES", {}},
      {"DISCARD TEMP", {}},
      {"DISCARD TEMPORARY", {}},
      {"DISCARD", {}},
  });
}

TEST(SessionEffects, PreparedStatements) {
  check({
      {"PREPARE q1 AS SELECT 1", {.prepares = {"q1"}}},
      {"PREPARE Q2 (int, text) AS SELECT $1, $2", {.prepares = {"q2"}}},
      {"PREPARE \"My Stmt\" AS SELECT 1", {.prepares = {"My Stmt"}}},
      {"prepare prepare as select 1", {.prepares = {"prepare"}}},
      {"PREPARE transaction AS SELECT 1", {.prepares = {"transaction"}}},
      {"PREPARE TRANSACTION 'gid-1'", {}},
      {"PREPARE q1", {}},  // no statement: the server refuses it
      {"EXECUTE q1", {.executes = {"q1"}}},
      {"execute Q1(1, 'a', (2))", {.executes = {"q1"}}},
      {"EXECUTE \"Q1\" (1)", {.executes = {"Q1"}}},
      {"DEALLOCATE q1", {.deallocates = {"q1"}}},
      {"DEALLOCATE PREPARE q1", {.deallocates = {"q1"}}},
      {"DEALLOCATE prepare", {.deallocates = {"prepare"}}},
      {"DEALLOCATE ALL", {.deallocate_all = true}},
      {"DEALLOCATE PREPARE ALL", {.deallocate_all = true}},
      {"DEALLOCATE \"ALL\"", {.deallocates = {"ALL"}}},
      {"SELECT 1; PREPARE a AS SELECT 2; EXECUTE a; DEALLOCATE a",
       {.prepares = {"a"}, .executes = {"a"}, .deallocates = {"a"}, .statements = 4}},
      {"PREPARE a AS SELECT 1; PREPARE b(int) AS SELECT $1",
       {.prepares = {"a", "b"}, .statements = 2}},
  });
}

TEST(SessionEffects, ExecuteInsideExplainAndCreateTableAs) {
  check({
      {"EXPLAIN EXECUTE q1", {.executes = {"q1"}}},
      {"EXPLAIN ANALYZE EXECUTE q1(1)", {.executes = {"q1"}}},
      {"explain analyse verbose execute q1", {.executes = {"q1"}}},
      {"EXPLAIN VERBOSE EXECUTE q1", {.executes = {"q1"}}},
      {"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE q1", {.executes = {"q1"}}},
      {"EXPLAIN (ANALYZE (true)) EXECUTE q1", {.executes = {"q1"}}},
      {"CREATE TABLE t AS EXECUTE q1", {.executes = {"q1"}}},
      {"CREATE TABLE IF NOT EXISTS t (a, b) AS EXECUTE q1 (1, 2) WITH NO DATA",
       {.executes = {"q1"}}},
      {"CREATE TEMP TABLE t AS EXECUTE q1(2)", {.executes = {"q1"}, .pin = PinReason::kTempObject}},
      {"EXPLAIN ANALYZE CREATE TABLE t AS EXECUTE q1", {.executes = {"q1"}}},
      {"EXPLAIN SELECT 1", {}},
      {"EXPLAIN ANALYZE SELECT * FROM execute", {}},
      {"CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", {}},
      {"CREATE VIEW v AS SELECT 1 AS execute", {}},
      {"SELECT 'EXECUTE q1'", {}},
      {"DO $$BEGIN EXECUTE 'SELECT 1'; END$$", {}},
  });
}

TEST(SessionEffects, Listen) {
  check({
      {"LISTEN chan", {.pin = PinReason::kListen}},
      {"listen \"Chan\";", {.pin = PinReason::kListen}},
      {"SELECT 1; LISTEN chan", {.pin = PinReason::kListen, .statements = 2}},
      {"UNLISTEN chan", {}},
      {"UNLISTEN *", {}},
      {"NOTIFY chan, 'LISTEN'", {}},
      {"SELECT pg_notify('c', 'LISTEN x')", {}},
      {"-- LISTEN x\nSELECT 1", {}},
      {"/* LISTEN x; */ SELECT 1", {}},
      {"SELECT \"listen\" FROM t", {}},
      {"SELECT 1 AS listen", {}},
  });
}

TEST(SessionEffects, TempObjects) {
  check({
      {"CREATE TEMP TABLE t (id int)", {.pin = PinReason::kTempObject}},
      {"create temporary table t (id int)", {.pin = PinReason::kTempObject}},
      {"CREATE LOCAL TEMP TABLE t (id int)", {.pin = PinReason::kTempObject}},
      {"CREATE GLOBAL TEMPORARY TABLE t (id int) ON COMMIT DELETE ROWS",
       {.pin = PinReason::kTempObject}},
      {"CREATE TEMP VIEW v AS SELECT 1", {.pin = PinReason::kTempObject}},
      {"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", {.pin = PinReason::kTempObject}},
      {"CREATE OR REPLACE TEMPORARY RECURSIVE VIEW v (n) AS SELECT 1",
       {.pin = PinReason::kTempObject}},
      {"CREATE TEMP SEQUENCE s", {.pin = PinReason::kTempObject}},
      {"CREATE TEMPORARY TABLE t AS SELECT 1", {.pin = PinReason::kTempObject}},
      {"CREATE TABLE pg_temp.t (id int)", {.pin = PinReason::kTempObject}},
      {"CREATE FUNCTION pg_temp.f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
       {.pin = PinReason::kTempObject}},
      {"CREATE VIEW v AS SELECT * FROM PG_TEMP_3.t", {.pin = PinReason::kTempObject}},
      {"SELECT 1; SELECT 2; CREATE TEMP TABLE t (a int)",
       {.pin = PinReason::kTempObject, .statements = 3}},
      {"CREATE TABLE temp (id int)", {}},
      {"CREATE TABLE t (temp int, temporary int)", {}},
      {"CREATE UNLOGGED TABLE t (id int)", {}},
      {"CREATE FUNCTION f() RETURNS int SET search_path = pg_temp AS 'SELECT 1' LANGUAGE sql", {}},
      {"SELECT * FROM pg_temp.t", {}},
      {"select 'create temp table x'", {}},
      {"SELECT $$; CREATE TEMP TABLE x (a int); $$", {}},
      {"DISCARD TEMP", {}},
  });
}

TEST(SessionEffects, SelectIntoTemp) {
  check({
      {"SELECT * INTO TEMP t FROM x", {.pin = PinReason::kTempObject}},
      {"SELECT * INTO TEMPORARY TABLE t FROM x", {.pin = PinReason::kTempObject}},
      {"select a, b into local temp t from x", {.pin = PinReason::kTempObject}},
      {"SELECT 1 INTO TEMP t", {.pin = PinReason::kTempObject}},
      {"SELECT * INTO pg_temp.t FROM x", {.pin = PinReason::kTempObject}},
      {"WITH a AS (SELECT 1) SELECT * INTO TEMP t FROM a", {.pin = PinReason::kTempObject}},
      {"(SELECT 1 INTO TEMP t)", {.pin = PinReason::kTempObject}},
      {"EXPLAIN ANALYZE SELECT 1 INTO TEMP t", {.pin = PinReason::kTempObject}},
      {"SELECT * INTO t FROM temp", {}},
      {"SELECT * INTO temp FROM x", {}},  // a table called "temp"
      {"SELECT 1 INTO temp", {}},
      {"SELECT * INTO t FROM x WHERE y = 'INTO TEMP z'", {}},
      {"INSERT INTO temp VALUES (1)", {}},
      {"INSERT INTO temporary (a) SELECT 1", {}},
      {"WITH a AS (INSERT INTO temp VALUES (1) RETURNING *) SELECT * FROM a", {}},
      {"MERGE INTO temp t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", {}},
  });
}

TEST(SessionEffects, AdvisoryLocks) {
  check({
      {"SELECT pg_advisory_lock(1)", {.pin = PinReason::kAdvisoryLock}},
      {"SELECT pg_advisory_lock_shared(1, 2)", {.pin = PinReason::kAdvisoryLock}},
      {"SELECT PG_TRY_ADVISORY_LOCK (42)", {.pin = PinReason::kAdvisoryLock}},
      {"select pg_try_advisory_lock_shared(hashtext('x'))", {.pin = PinReason::kAdvisoryLock}},
      {"SELECT pg_catalog.pg_advisory_lock(1)", {.pin = PinReason::kAdvisoryLock}},
      {"SELECT \"pg_advisory_lock\"(1)", {.pin = PinReason::kAdvisoryLock}},
      {"SELECT pg_advisory_lock /* why not */ (1)", {.pin = PinReason::kAdvisoryLock}},
      {"UPDATE jobs SET locked = pg_try_advisory_lock(id) WHERE id = 1",
       {.pin = PinReason::kAdvisoryLock}},
      {"INSERT INTO t VALUES ((SELECT pg_advisory_lock(1)))", {.pin = PinReason::kAdvisoryLock}},
      {"SELECT 1; SELECT 2; SELECT pg_advisory_lock(7)",
       {.pin = PinReason::kAdvisoryLock, .statements = 3}},
      {"SELECT pg_advisory_xact_lock(1)", {}},
      {"SELECT pg_advisory_xact_lock_shared(1)", {}},
      {"SELECT pg_try_advisory_xact_lock(1)", {}},
      {"SELECT pg_try_advisory_xact_lock_shared(1)", {}},
      {"SELECT pg_advisory_unlock(1)", {}},
      {"SELECT pg_advisory_unlock_all()", {}},
      {"SELECT 'pg_advisory_lock(1)'", {}},
      {"SELECT $x$ pg_advisory_lock(1) $x$", {}},
      {"SELECT pg_advisory_lock FROM t", {}},  // a column, not a call
      {"SELECT \"PG_ADVISORY_LOCK\"(1)", {}},  // quoted: a different name
      {"SELECT my_pg_advisory_lock(1)", {}},
      {"-- pg_advisory_lock(1)\nSELECT 1", {}},
  });
}

TEST(SessionEffects, WithHoldCursors) {
  check({
      {"DECLARE c CURSOR WITH HOLD FOR SELECT 1", {.pin = PinReason::kWithHoldCursor}},
      {"declare c binary insensitive no scroll cursor with hold for select 1",
       {.pin = PinReason::kWithHoldCursor}},
      {"DECLARE c ASENSITIVE SCROLL CURSOR WITH HOLD FOR SELECT 1",
       {.pin = PinReason::kWithHoldCursor}},
      {"BEGIN; DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT 1; COMMIT",
       {.pin = PinReason::kWithHoldCursor, .statements = 3}},
      {"DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", {}},
      {"DECLARE c CURSOR FOR SELECT 1", {}},
      {"DECLARE c CURSOR FOR SELECT 'WITH HOLD'", {}},
      {"DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold", {}},
      {"DECLARE hold CURSOR FOR SELECT 1", {}},
      {"EXPLAIN DECLARE c CURSOR WITH HOLD FOR SELECT 1", {}},
  });
}

TEST(SessionEffects, FirstPinWins) {
  check({
      {"LISTEN a; SELECT pg_advisory_lock(1)", {.pin = PinReason::kListen, .statements = 2}},
      {"SELECT pg_advisory_lock(1); LISTEN a", {.pin = PinReason::kAdvisoryLock, .statements = 2}},
      {"CREATE TEMP TABLE t (a int); DECLARE c CURSOR WITH HOLD FOR SELECT 1",
       {.pin = PinReason::kTempObject, .statements = 2}},
  });
}

TEST(SessionEffects, StatementSplitting) {
  check({
      {"", {.statements = 0}},
      {"   \n", {.statements = 0}},
      {";;  ;", {.statements = 0}},
      {"-- only a comment", {.statements = 0}},
      {"/* LISTEN a */", {.statements = 0}},
      {"SELECT 1;;SELECT 2;", {.statements = 2}},
      {"(SELECT 1)", {}},
      {"((SELECT 1)); LISTEN a", {.pin = PinReason::kListen, .statements = 2}},
      {"SELECT ';'; LISTEN a", {.pin = PinReason::kListen, .statements = 2}},
      {"SELECT ';'; SELECT \";\"; SELECT $$;$$; LISTEN a",
       {.pin = PinReason::kListen, .statements = 4}},
      {"SELECT 1 -- ; LISTEN a", {}},
      {"SELECT 1 /* ; LISTEN a */", {}},
      {"SELECT 1 /* /* */ ; LISTEN a */", {}},
      {"SELECT 1; /* c */ LISTEN a", {.pin = PinReason::kListen, .statements = 2}},
      // ';' inside parentheses (CREATE RULE ... DO (...)) does not end the statement.
      {"CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; LISTEN b); SELECT 1", {.statements = 2}},
      // Nor inside an SQL-standard function body.
      {"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; LISTEN x; END; "
       "SELECT 2",
       {.statements = 2}},
      {"CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 "
       "END; SELECT 2; END; LISTEN y",
       {.pin = PinReason::kListen, .statements = 2}},
      {"BEGIN; LISTEN a; END", {.pin = PinReason::kListen, .statements = 3}},
  });
}

TEST(SessionEffects, LookAlikesInStringsCommentsAndIdentifiers) {
  check({
      {"SELECT 'SET a = 1'", {}},
      {"SELECT E'\\'; SET a = 1; --'", {}},
      {"SELECT $$; SET a = 1; $$", {}},
      {"SELECT $t$ $$; DISCARD ALL; $$ $t$", {}},
      {"SELECT \"; SET a = 1; \"", {}},
      {"/* SET a = 1; */ SELECT 1", {}},
      {"SELECT 1 -- ; SET a = 1", {}},
      {"SELECT \"set\", \"prepare\" FROM t", {}},
      {"\"SET\" a = 1", {}},
      {"'LISTEN' x", {}},
  });
}

TEST(SessionEffects, UnterminatedInput) {
  check({
      {"SELECT 'abc; LISTEN x", {}},
      {"SELECT $$abc; LISTEN x", {}},
      {"SELECT \"abc; LISTEN x", {}},
      {"SELECT 1 /* ; LISTEN x", {}},
      {"PREPARE \"abc", {}},
      {"EXECUTE \"abc", {.executes = {"abc"}}},
      {"SET a = 'x; LISTEN b", {.params = {"a"}}},
      {"SELECT (1; LISTEN x", {}},  // the server refuses the whole text
      {"SELECT 1); LISTEN x", {.pin = PinReason::kListen, .statements = 2}},
      {"SET \"a", {}},
      {"EXPLAIN (ANALYZE", {}},
      {"DECLARE", {}},
      {"CREATE", {}},
  });
}

TEST(SessionEffects, StandardConformingStringsOff) {
  const std::string_view sql = "SELECT 'a\\'; LISTEN x; --'";
  EXPECT_EQ(analyze_session_effects(sql).pin, PinReason::kListen);
  const SessionEffects off =
      analyze_session_effects(sql, LexerOptions{.standard_conforming_strings = false});
  EXPECT_EQ(off.pin, PinReason::kNone);
  EXPECT_EQ(off.statements, 1U);
}

TEST(SessionEffects, NameRangesPointAtTheNames) {
  const std::string_view sql =
      "PREPARE \"My Stmt\" AS SELECT 1;\n"
      "EXECUTE  Foo (1); DEALLOCATE PREPARE \"a\"\"b\";\n"
      "EXPLAIN ANALYZE EXECUTE s1; CREATE TABLE t AS EXECUTE \"S2\"";
  const SessionEffects effects = analyze_session_effects(sql);
  const auto text = [&](const NameRef& ref) { return sql.substr(ref.begin, ref.end - ref.begin); };
  ASSERT_EQ(effects.prepares.size(), 1U);
  EXPECT_EQ(effects.prepares[0], (NameRef{8, 17, "My Stmt"}));
  EXPECT_EQ(text(effects.prepares[0]), "\"My Stmt\"");
  ASSERT_EQ(effects.executes.size(), 3U);
  EXPECT_EQ(text(effects.executes[0]), "Foo");
  EXPECT_EQ(effects.executes[0].name, "foo");
  EXPECT_EQ(text(effects.executes[1]), "s1");
  EXPECT_EQ(text(effects.executes[2]), "\"S2\"");
  EXPECT_EQ(effects.executes[2].name, "S2");
  ASSERT_EQ(effects.deallocates.size(), 1U);
  EXPECT_EQ(text(effects.deallocates[0]), "\"a\"\"b\"");
  EXPECT_EQ(effects.deallocates[0].name, "a\"b");
  EXPECT_EQ(effects.statements, 5U);
}

// What the pooler does with the ranges: rename statements in the text, back to front.
TEST(SessionEffects, RangesAllowRewritingNames) {
  const std::string_view sql = "PREPARE \"p\" AS SELECT 1; EXECUTE P; EXECUTE p; DEALLOCATE p";
  const SessionEffects effects = analyze_session_effects(sql);
  std::vector<NameRef> refs = effects.prepares;
  refs.insert(refs.end(), effects.executes.begin(), effects.executes.end());
  refs.insert(refs.end(), effects.deallocates.begin(), effects.deallocates.end());
  std::sort(refs.begin(), refs.end(),
            [](const NameRef& a, const NameRef& b) { return a.begin > b.begin; });
  std::string rewritten(sql);
  for (const auto& ref : refs)
    rewritten.replace(ref.begin, ref.end - ref.begin, "pgr_1_" + ref.name);
  EXPECT_EQ(rewritten,
            "PREPARE pgr_1_p AS SELECT 1; EXECUTE pgr_1_p; EXECUTE pgr_1_p; DEALLOCATE pgr_1_p");
}

TEST(SessionEffects, PinReasonNames) {
  EXPECT_EQ(to_string(PinReason::kNone), "none");
  EXPECT_EQ(to_string(PinReason::kListen), "listen");
  EXPECT_EQ(to_string(PinReason::kTempObject), "temp_object");
  EXPECT_EQ(to_string(PinReason::kAdvisoryLock), "advisory_lock");
  EXPECT_EQ(to_string(PinReason::kWithHoldCursor), "with_hold_cursor");
  EXPECT_EQ(to_string(PinReason::kSessionAuthorization), "session_authorization");
}

TEST(SessionEffects, EmptyIgnoresStatementCount) {
  SessionEffects effects;
  EXPECT_TRUE(effects.empty());
  effects.statements = 3;
  EXPECT_TRUE(effects.empty());
  effects.deallocate_all = true;
  EXPECT_FALSE(effects.empty());
  EXPECT_TRUE(analyze_session_effects("SELECT 1; SELECT 2").empty());
  EXPECT_FALSE(analyze_session_effects("SELECT 1; RESET ALL").empty());
}

// The pooler runs this on every Query: nothing to report must mean nothing allocated.
TEST(SessionEffects, AllocatesNothingWhenThereIsNothingToReport) {
  std::string long_text;
  for (int i = 0; i < 200; ++i) {
    long_text += "SELECT \"col\", 'it''s', $q$ LISTEN $q$ /* SET a = 1 */ FROM t WHERE x = $1; ";
  }
  const std::vector<std::string_view> texts = {
      "SELECT 1",
      "",
      ";;",
      "SELECT \"LISTEN\", 'SET a = 1', $$PREPARE p AS SELECT 1$$ -- DISCARD ALL",
      "BEGIN; SET LOCAL search_path = x; SET TRANSACTION READ ONLY; COMMIT",
      "EXPLAIN ANALYZE SELECT * FROM t WHERE a IN (SELECT b FROM u)",
      "DECLARE c CURSOR WITHOUT HOLD FOR SELECT pg_advisory_xact_lock(1)",
      "CREATE TABLE t (temp int) ; INSERT INTO temp VALUES (1)",
      "SELECT * INTO t FROM x; DISCARD PLANS; UNLISTEN *; SET statement_timeout",
      "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
      "PREPARE TRANSACTION 'x'; SELECT U&\"\\0061\" FROM \"unterminated",
      long_text,
  };
  for (const auto text : texts) {
    const std::size_t before = allocations.load();
    const SessionEffects effects = analyze_session_effects(text);
    const std::size_t after = allocations.load();
    EXPECT_TRUE(effects.empty()) << text;
    EXPECT_EQ(after - before, 0U) << text;
  }
  const std::size_t before = allocations.load();
  const SessionEffects effects = analyze_session_effects("SET a = 1");
  EXPECT_GT(allocations.load() - before, 0U);  // the counter does count
  EXPECT_FALSE(effects.empty());
}

TEST(SessionEffects, ManyDistinctParamsStayInOrderWithoutDuplicates) {
  std::string sql;
  std::vector<std::string> expected;
  for (int i = 0; i < 2000; ++i) {
    const std::string name = "app" + std::to_string(i % 700) + ".x";
    sql += "SET " + name + " = 1; ";
    if (i < 700) expected.push_back(name);
  }
  const SessionEffects effects = analyze_session_effects(sql);
  EXPECT_EQ(effects.params, expected);
  EXPECT_EQ(effects.statements, 2000U);
}

// Every prefix of a busy text is "unterminated" somewhere; none may crash (run under ASan and
// UBSan) or report a range outside the text.
TEST(SessionEffects, EveryPrefixIsSafe) {
  const std::string sql =
      "SET SESSION \"MyApp\".x = E'a\\'b'; PREPARE U&\"p\\0031\" (int) AS SELECT $1::int;\n"
      "EXECUTE p1(1); /* c /* d */ */ DEALLOCATE PREPARE ALL; SELECT $t$x$t$, pg_advisory_lock(1);"
      "DECLARE c CURSOR WITH HOLD FOR SELECT 1; CREATE TEMP TABLE t AS EXECUTE p1 -- end";
  for (std::size_t length = 0; length <= sql.size(); ++length) {
    const std::string_view prefix = std::string_view(sql).substr(0, length);
    SCOPED_TRACE(std::string(prefix));
    const SessionEffects effects = analyze_session_effects(prefix);
    check_ranges(prefix, effects.prepares);
    check_ranges(prefix, effects.executes);
    check_ranges(prefix, effects.deallocates);
  }
  const SessionEffects all = analyze_session_effects(sql);
  EXPECT_EQ(all.params, (std::vector<std::string>{"myapp.x"}));
  EXPECT_EQ(names_of(all.prepares), (std::vector<std::string>{"p1"}));
  EXPECT_EQ(names_of(all.executes), (std::vector<std::string>{"p1", "p1"}));
  EXPECT_TRUE(all.deallocate_all);
  EXPECT_EQ(all.pin, PinReason::kAdvisoryLock);
  EXPECT_EQ(all.statements, 7U);
}

TEST(SessionEffects, RandomInputNeverBreaksIt) {
  std::mt19937 random(424242);
  const std::vector<std::string_view> pieces = {"SET ",
                                                "LOCAL ",
                                                "SESSION ",
                                                "RESET ",
                                                "ALL ",
                                                "DISCARD ",
                                                "PREPARE ",
                                                "EXECUTE ",
                                                "DEALLOCATE ",
                                                "LISTEN ",
                                                "CREATE ",
                                                "TEMP ",
                                                "TABLE ",
                                                "SELECT ",
                                                "INTO ",
                                                "DECLARE ",
                                                "CURSOR ",
                                                "WITH ",
                                                "HOLD ",
                                                "FOR ",
                                                "EXPLAIN ",
                                                "AS ",
                                                "pg_advisory_lock",
                                                "UPDATE ",
                                                "INSERT ",
                                                "pg_try_advisory_lock_shared",
                                                "\"pg_advisory_lock_shared\"",
                                                "pg_try_advisory_lock",
                                                "1",
                                                "0x",
                                                "(",
                                                ")",
                                                ";",
                                                ".",
                                                "=",
                                                "TO ",
                                                "'",
                                                "\"",
                                                "$$",
                                                "$a$",
                                                "--",
                                                "/*",
                                                "*/",
                                                "\n",
                                                "x ",
                                                "BEGIN ",
                                                "END ",
                                                "FUNCTION ",
                                                "\\",
                                                "E'",
                                                "U&\"",
                                                "1 ",
                                                "$1"};
  for (int round = 0; round < 3000; ++round) {
    std::string sql;
    const std::size_t count = random() % 24;
    for (std::size_t i = 0; i < count; ++i) {
      if (random() % 8 == 0) {
        sql += static_cast<char>(random() % 256);
      } else {
        sql += pieces[random() % pieces.size()];
      }
    }
    SCOPED_TRACE(sql);
    const SessionEffects effects = analyze_session_effects(sql);
    check_ranges(sql, effects.prepares);
    check_ranges(sql, effects.executes);
    check_ranges(sql, effects.deallocates);
    EXPECT_LE(effects.statements, sql.size());
    if (!effects.empty()) {
      EXPECT_TRUE(scan_words(sql).may_have_effects);
    }
    EXPECT_EQ(scan_words(sql).may_end_transaction, may_end_transaction(sql));
  }
}

}  // namespace
}  // namespace pgrelay::sql

namespace pgrelay::sql {
namespace {

TEST(MayEndTransaction, FindsTheWordsThatCanCommitABlock) {
  EXPECT_TRUE(may_end_transaction("COMMIT"));
  EXPECT_TRUE(may_end_transaction("end;"));
  EXPECT_TRUE(may_end_transaction("  Commit AND CHAIN"));
  EXPECT_TRUE(may_end_transaction("PREPARE TRANSACTION 'x'"));
  EXPECT_TRUE(may_end_transaction("UPDATE t SET a = 1; COMMIT"));
  // Conservative: the words count anywhere, even quoted.
  EXPECT_TRUE(may_end_transaction("SELECT 'commit'"));
  EXPECT_TRUE(may_end_transaction("SELECT CASE WHEN a THEN 1 END FROM t"));
}

TEST(ScanWords, SkipsTheAnalysisOnlyForTextsWithoutItsWords) {
  // What pgbench runs, and everyday reads and writes: nothing to analyse.
  for (const std::string_view sql :
       {"SELECT abalance FROM pgbench_accounts WHERE aid = 123;",
        "UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = 5;",
        "INSERT INTO t VALUES (1, 'x')", "SELECT $1::int, 42, 4.5", "DELETE FROM t WHERE id = $1",
        "BEGIN", "SELECT pg_advisory_xact_lock(1)"}) {
    SCOPED_TRACE(std::string(sql));
    EXPECT_FALSE(scan_words(sql).may_have_effects);
  }
  // Each word the analysis starts from, in any case, quoted or in a comment.
  for (const std::string_view sql :
       {"set x = 1", "Reset x", "DISCARD ALL", "prepare p as select 1", "DEALLOCATE p", "LISTEN c",
        "declare c cursor with hold for select 1", "explain select 1", "EXECUTE p",
        "create temp table t ()", "select 1 into temp t", "SELECT pg_advisory_lock(1)",
        "SELECT \"pg_try_advisory_lock_shared\"(1)", "SELECT PG_ADVISORY_LOCK_SHARED(1)",
        "SELECT pg_try_advisory_lock(1)", "/* set */ SELECT 1", "SELECT 'into'"}) {
    SCOPED_TRACE(std::string(sql));
    EXPECT_TRUE(scan_words(sql).may_have_effects);
  }
  // A run that starts with a digit and goes on with a letter may hide a word in its tail.
  EXPECT_TRUE(scan_words("SELECT 1into temp t").may_have_effects);
  EXPECT_TRUE(scan_words("SELECT 0xffset").may_have_effects);
  EXPECT_FALSE(scan_words("SELECT 12345").may_have_effects);
  // Longer or shorter words that contain them do not count.
  EXPECT_FALSE(scan_words("SELECT settings, preset, intox, created_at FROM t").may_have_effects);
  EXPECT_FALSE(scan_words("").may_have_effects);
}

TEST(ScanWords, OneInsertUpdateOrDeleteCountsOnlyLockFunctions) {
  // pgbench -N's writes: nothing to analyse although SET and INTO are there.
  for (const std::string_view sql :
       {"UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 77;",
        "  insert into pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 77, 5, "
        "CURRENT_TIMESTAMP);  \n",
        "DELETE FROM t WHERE id IN (SELECT id FROM u INTO)"}) {
    SCOPED_TRACE(std::string(sql));
    EXPECT_FALSE(scan_words(sql).may_have_effects);
    EXPECT_TRUE(analyze_session_effects(sql).empty());
  }
  // The lock functions count in any statement, also behind a number.
  for (const std::string_view sql : {"UPDATE t SET a = pg_advisory_lock(1)",
                                     "INSERT INTO t SELECT pg_try_advisory_lock_shared(2)",
                                     "UPDATE t SET a = 1pg_advisory_lock(1)"}) {
    SCOPED_TRACE(std::string(sql));
    EXPECT_TRUE(scan_words(sql).may_have_effects);
  }
  // Anything before the first word, another statement, or a ';' with more after it: the words
  // count again.
  for (const std::string_view sql :
       {"/* x */ UPDATE t SET a = 1", "(UPDATE t SET a = 1)", "UPDATE t SET a = 1; SET b = 2",
        "UPDATE t SET a = ';' WHERE b = 1", "INSERT INTO t VALUES (1);;x", "UPSERT t SET a = 1",
        "SELECT 1 INTO t"}) {
    SCOPED_TRACE(std::string(sql));
    EXPECT_TRUE(scan_words(sql).may_have_effects);
  }
  const std::string_view both = "UPDATE t SET a = 1; SET search_path = x";
  EXPECT_FALSE(analyze_session_effects(both).empty());
  EXPECT_TRUE(scan_words(both).may_have_effects);
}

TEST(ScanWords, TellsTransactionEndsAsMayEndTransactionDoes) {
  for (const std::string_view sql :
       {"COMMIT", "end;", "PREPARE TRANSACTION 'x'", "SELECT 1", "ROLLBACK",
        "SELECT committed FROM t", "SET x = 1; COMMIT", "1commit"}) {
    SCOPED_TRACE(std::string(sql));
    EXPECT_EQ(scan_words(sql).may_end_transaction, may_end_transaction(sql));
  }
  EXPECT_TRUE(scan_words("SET x = 1; COMMIT").may_end_transaction);
  EXPECT_TRUE(scan_words("SET x = 1; COMMIT").may_have_effects);
}

TEST(MayEndTransaction, IgnoresOtherWordsThatContainThem) {
  EXPECT_FALSE(may_end_transaction(""));
  EXPECT_FALSE(may_end_transaction("UPDATE pgbench_accounts SET abalance = abalance + 1"));
  EXPECT_FALSE(may_end_transaction("SELECT committed, endpoint, spend, prepared_x FROM t"));
  EXPECT_FALSE(may_end_transaction("INSERT INTO append_end_ VALUES (1)"));
  EXPECT_FALSE(may_end_transaction("ROLLBACK"));
  EXPECT_FALSE(may_end_transaction("SAVEPOINT s1"));
}

}  // namespace
}  // namespace pgrelay::sql

namespace pgrelay::sql {
namespace {

TEST(TransactionControl, TellsLoneCommitAndRollbackFromEverythingElse) {
  EXPECT_EQ(transaction_control("COMMIT"), TxControl::kCommit);
  EXPECT_EQ(transaction_control("end work;"), TxControl::kCommit);
  EXPECT_EQ(transaction_control("commit transaction and no chain"), TxControl::kCommit);
  EXPECT_EQ(transaction_control(" /* c */ ROLLBACK;"), TxControl::kRollback);
  EXPECT_EQ(transaction_control("abort"), TxControl::kRollback);
  EXPECT_EQ(transaction_control("ROLLBACK TO SAVEPOINT s"), TxControl::kOther);
  EXPECT_EQ(transaction_control("ROLLBACK AND CHAIN"), TxControl::kOther);
  EXPECT_EQ(transaction_control("COMMIT PREPARED 'x'"), TxControl::kOther);
  EXPECT_EQ(transaction_control("ROLLBACK; SELECT 1"), TxControl::kOther);
  EXPECT_EQ(transaction_control("SELECT 1"), TxControl::kOther);
  EXPECT_EQ(transaction_control(""), TxControl::kOther);
}

}  // namespace
}  // namespace pgrelay::sql
