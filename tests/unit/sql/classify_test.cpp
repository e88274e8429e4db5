// The routing classifier: every case goes through the full parser, through the lexer pre-pass
// (which must either agree with the parser or leave the case to it) and through the cached
// Classifier (twice, so the second answer comes from the cache when the parser was needed).
#include "pgrelay/sql/classify.hpp"
#include "pgrelay/sql/session_effects.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pgrelay::sql {
namespace {

enum class Want {
  kRead,     // read-only autocommit work
  kWrite,    // primary
  kBegin,    // BEGIN without a mode
  kBeginRO,  // BEGIN READ ONLY (or followed by SET TRANSACTION READ ONLY)
  kBeginRW,  // BEGIN READ WRITE
  kSetTxRO,  // SET TRANSACTION READ ONLY first
  kEnd,      // COMMIT / ROLLBACK ...
  kSession,  // SET / RESET / SAVEPOINT ...: neutral
  kEmpty,
  kInvalid,  // the server rejects it: the parser says primary, the pre-pass may say anything
};

struct Case {
  const char* sql;
  Want want;
};

std::shared_ptr<const FunctionCatalog> test_catalog() {
  return std::make_shared<const FunctionCatalog>(
      std::vector<std::string>{"count",
                               "sum",
                               "avg",
                               "max",
                               "min",
                               "lower",
                               "upper",
                               "now",
                               "abs",
                               "length",
                               "generate_series",
                               "date_trunc",
                               "coalesce",
                               "pg_is_in_recovery",
                               "jsonb_build_object",
                               "array_agg",
                               "string_agg",
                               "row_number",
                               "txid_current",
                               "current_setting",
                               "to_char",
                               "substr",
                               "unnest",
                               "format",
                               "md5",
                               "concat"},
      std::vector<std::string>{"app.safe_fn", "Safe_Lookup"});
}

const Case kCases[] = {
    // --- plain reads ---
    {"SELECT 1", Want::kRead},
    {"select 1;", Want::kRead},
    {"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;", Want::kRead},
    {"SELECT * FROM t", Want::kRead},
    {"SELECT a, b FROM t WHERE a > 1 ORDER BY b DESC LIMIT 10 OFFSET 5", Want::kRead},
    {"SELECT DISTINCT a FROM t", Want::kRead},
    {"SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b", Want::kRead},
    {"SELECT count(*) FROM t", Want::kRead},
    {"SELECT count(*), sum(x), avg(x), max(x), min(x) FROM t GROUP BY y HAVING count(*) > 1",
     Want::kRead},
    {"SELECT lower(name), upper(name) FROM users", Want::kRead},
    {"SELECT now()", Want::kRead},
    {"SELECT * FROM t WHERE id IN (1, 2, 3)", Want::kRead},
    {"SELECT * FROM t WHERE id = ANY(ARRAY[1,2,3])", Want::kRead},
    {"SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)", Want::kRead},
    {"SELECT * FROM t JOIN u ON (t.id = u.id)", Want::kRead},
    {"SELECT * FROM t JOIN u USING (id)", Want::kRead},
    {"SELECT * FROM t LEFT JOIN u ON t.id = u.tid", Want::kRead},
    {"SELECT (a + b) * c FROM t", Want::kRead},
    {"SELECT CASE WHEN a > 0 THEN 'pos' ELSE 'neg' END FROM t", Want::kRead},
    {"SELECT CAST(a AS text) FROM t", Want::kRead},
    {"SELECT a::varchar(10) FROM t", Want::kRead},
    {"SELECT coalesce(a, 0) FROM t", Want::kRead},
    {"SELECT nullif(a, 0), greatest(a, b), least(a, b) FROM t", Want::kRead},
    {"SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t", Want::kRead},
    {"SELECT count(*) FILTER (WHERE a > 1) FROM t", Want::kRead},
    {"SELECT extract(year FROM ts) FROM t", Want::kRead},
    {"SELECT * FROM generate_series(1, 10)", Want::kRead},
    {"SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.id = t.id) s", Want::kRead},
    {"SELECT 1 UNION SELECT 2", Want::kRead},
    {"SELECT 1 UNION ALL SELECT 2 EXCEPT SELECT 3", Want::kRead},
    {"(SELECT 1)", Want::kRead},
    {"((SELECT a FROM t) UNION (SELECT b FROM u))", Want::kRead},
    {"VALUES (1, 'a'), (2, 'b')", Want::kRead},
    {"TABLE t", Want::kRead},
    {"TABLE public.t", Want::kRead},
    {"SHOW search_path", Want::kRead},
    {"SHOW ALL", Want::kRead},
    {"show transaction_read_only", Want::kRead},
    {"SELECT * FROM t WHERE a BETWEEN 1 AND 5", Want::kRead},
    {"SELECT * FROM t WHERE name LIKE 'a%'", Want::kRead},
    {"SELECT * FROM t WHERE name ILIKE 'a%' AND NOT (b IS NULL)", Want::kRead},
    {"SELECT $1::int", Want::kRead},
    {"SELECT * FROM t WHERE id = $1 AND name = $2", Want::kRead},
    {"SELECT jsonb_build_object('a', 1)", Want::kRead},
    {"SELECT array_agg(x ORDER BY x) FROM t", Want::kRead},
    {"SELECT string_agg(name, ', ') WITHIN GROUP (ORDER BY name) FROM t", Want::kRead},
    {"SELECT pg_is_in_recovery()", Want::kRead},
    {"SELECT pg_catalog.now()", Want::kRead},
    {"SELECT PG_CATALOG.LOWER('X')", Want::kRead},
    {"SELECT \"lower\"('X')", Want::kRead},
    {"SELECT date_trunc('day', ts), to_char(ts, 'YYYY') FROM t", Want::kRead},
    {"SELECT * FROM unnest(ARRAY[1,2]) AS u(x)", Want::kRead},
    {"SELECT t.* FROM t AS t(a, b)", Want::kRead},
    {"SELECT 1 FROM t GROUP BY ROLLUP (a, b)", Want::kRead},
    {"SELECT 1 FROM t GROUP BY GROUPING SETS ((a), (b))", Want::kRead},
    {"SELECT ARRAY(SELECT a FROM t)", Want::kRead},
    {"SELECT ROW(1, 2)", Want::kRead},
    {"SELECT substring('abc' FROM 2 FOR 1)", Want::kRead},
    {"SELECT current_setting('search_path')", Want::kRead},
    {"SELECT txid_current()", Want::kWrite},
    // --- comments, strings, dollar quotes, quoted identifiers ---
    {"/* leading comment */ SELECT 1", Want::kRead},
    {"-- line comment\nSELECT 1", Want::kRead},
    {"SELECT 1 -- trailing comment", Want::kRead},
    {"/* nested /* comment */ still */ SELECT 1", Want::kRead},
    {"SELECT 'INSERT INTO t VALUES (1)'", Want::kRead},
    {"SELECT 'it''s FOR UPDATE'", Want::kRead},
    {"SELECT E'\\' FOR UPDATE'", Want::kRead},
    {"SELECT E'\\\\' AS backslash", Want::kRead},
    {"SELECT $$ DELETE FROM t $$", Want::kRead},
    {"SELECT $tag$ nextval('s') $tag$", Want::kRead},
    {"SELECT \"insert\" FROM t", Want::kRead},
    {"SELECT \"for\", \"into\" FROM \"update\"", Want::kRead},
    {"SELECT 1 /* ; DELETE FROM t; */", Want::kRead},
    {"SELECT '; DELETE FROM t'", Want::kRead},
    {"SELECT U&'\\0041' AS a", Want::kRead},
    {"SELECT B'101', X'1F'", Want::kRead},
    {"SELECT 1 /* pgrelay:primary */", Want::kWrite},
    {"/* pgrelay:primary */ SELECT * FROM t", Want::kWrite},
    {"-- pgrelay:primary\nSELECT 1", Want::kWrite},
    {"/*pgrelay:primary*/SELECT 1", Want::kWrite},
    // --- locking clauses ---
    {"SELECT * FROM t FOR UPDATE", Want::kWrite},
    {"SELECT * FROM t FOR SHARE", Want::kWrite},
    {"SELECT * FROM t FOR NO KEY UPDATE", Want::kWrite},
    {"SELECT * FROM t FOR KEY SHARE", Want::kWrite},
    {"SELECT * FROM t FOR UPDATE NOWAIT", Want::kWrite},
    {"SELECT * FROM t FOR UPDATE SKIP LOCKED", Want::kWrite},
    {"SELECT * FROM t FOR UPDATE OF t", Want::kWrite},
    {"select * from t for update", Want::kWrite},
    {"SELECT * FROM (SELECT * FROM t FOR UPDATE) s", Want::kWrite},
    {"SELECT * FROM t WHERE id IN (SELECT id FROM u FOR SHARE)", Want::kWrite},
    {"WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x", Want::kWrite},
    // --- SELECT INTO ---
    {"SELECT * INTO new_table FROM t", Want::kWrite},
    {"SELECT a INTO TEMP tmp FROM t", Want::kWrite},
    {"SELECT a INTO TEMPORARY TABLE tmp FROM t", Want::kWrite},
    {"SELECT a INTO UNLOGGED u FROM t", Want::kWrite},
    // --- CTEs ---
    {"WITH x AS (SELECT 1) SELECT * FROM x", Want::kRead},
    {"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r",
     Want::kRead},
    {"WITH x AS MATERIALIZED (SELECT * FROM t) SELECT count(*) FROM x", Want::kRead},
    {"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", Want::kWrite},
    {"WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i", Want::kWrite},
    {"WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM u", Want::kWrite},
    {"WITH x AS (SELECT 1), y AS (DELETE FROM t) SELECT * FROM x", Want::kWrite},
    {"WITH x AS (SELECT nextval('s')) SELECT * FROM x", Want::kWrite},
    {"WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", Want::kWrite},
    {"WITH x AS (SELECT 1) UPDATE t SET a = (SELECT * FROM x)", Want::kWrite},
    {"WITH x AS (SELECT 1) DELETE FROM t WHERE a IN (SELECT * FROM x)", Want::kWrite},
    {"SELECT * FROM (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) s", Want::kWrite},
    // --- EXPLAIN ---
    {"EXPLAIN SELECT * FROM t", Want::kRead},
    {"EXPLAIN INSERT INTO t VALUES (1)", Want::kRead},
    {"EXPLAIN DELETE FROM t", Want::kRead},
    {"EXPLAIN (COSTS OFF) UPDATE t SET a = 1", Want::kRead},
    {"EXPLAIN ANALYZE SELECT * FROM t", Want::kRead},
    {"EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FROM t", Want::kRead},
    {"EXPLAIN ANALYZE INSERT INTO t VALUES (1)", Want::kWrite},
    {"EXPLAIN ANALYSE DELETE FROM t", Want::kWrite},
    {"EXPLAIN (ANALYZE) UPDATE t SET a = 1", Want::kWrite},
    {"EXPLAIN (ANALYZE true) UPDATE t SET a = 1", Want::kWrite},
    {"EXPLAIN (ANALYZE false) UPDATE t SET a = 1", Want::kRead},
    {"EXPLAIN (ANALYZE off) DELETE FROM t", Want::kRead},
    {"EXPLAIN ANALYZE SELECT nextval('s')", Want::kWrite},
    {"EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", Want::kWrite},
    {"EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", Want::kWrite},
    {"EXPLAIN VERBOSE SELECT 1", Want::kRead},
    {"EXPLAIN EXECUTE stmt(1)", Want::kWrite},
    // --- functions by volatility ---
    {"SELECT nextval('s')", Want::kWrite},
    {"SELECT setval('s', 10)", Want::kWrite},
    {"SELECT currval('s')", Want::kWrite},
    {"SELECT lastval()", Want::kWrite},
    {"SELECT pg_advisory_lock(1)", Want::kWrite},
    {"SELECT pg_advisory_xact_lock(1)", Want::kWrite},
    {"SELECT pg_try_advisory_lock(1)", Want::kWrite},
    {"SELECT pg_advisory_unlock_all()", Want::kWrite},
    {"SELECT pg_notify('chan', 'payload')", Want::kWrite},
    {"SELECT set_config('a.b', 'c', false)", Want::kWrite},
    {"SELECT random()", Want::kWrite},
    {"SELECT clock_timestamp()", Want::kWrite},
    {"SELECT my_function(1)", Want::kWrite},
    {"SELECT public.my_function(1)", Want::kWrite},
    {"SELECT app.safe_fn(1)", Want::kRead},
    {"SELECT APP.SAFE_FN(1)", Want::kRead},
    {"SELECT safe_lookup(2)", Want::kRead},
    {"SELECT other.safe_lookup(2)", Want::kWrite},
    {"SELECT * FROM my_set_returning_function()", Want::kWrite},
    {"SELECT count(*) FROM t WHERE a = my_function(1)", Want::kWrite},
    {"SELECT pg_catalog.nextval('s')", Want::kWrite},
    {"SELECT \"nextval\"('s')", Want::kWrite},
    {"SELECT * FROM t WHERE id = (SELECT nextval('s'))", Want::kWrite},
    {"SELECT lower(my_function(a)) FROM t", Want::kWrite},
    {"SELECT abs(-1), length('abc'), md5('x'), concat('a', 'b'), format('%s', 1)", Want::kRead},
    {"VALUES (nextval('s'))", Want::kWrite},
    {"SELECT pg_sleep(1)", Want::kWrite},
    {"SELECT pg_cancel_backend(123)", Want::kWrite},
    {"SELECT lo_import('/tmp/x')", Want::kWrite},
    // --- multi-statement ---
    {"SELECT 1; SELECT 2", Want::kRead},
    {"SELECT 1; SELECT 2;", Want::kRead},
    {"SELECT 1;; SELECT 2", Want::kRead},
    {"SELECT 1; INSERT INTO t VALUES (1)", Want::kWrite},
    {"INSERT INTO t VALUES (1); SELECT 1", Want::kWrite},
    {"SELECT 1; SELECT nextval('s')", Want::kWrite},
    {"SHOW search_path; SELECT 1", Want::kRead},
    {"SET search_path = app; SELECT * FROM t", Want::kSession},
    {"SELECT 1; CREATE TEMP TABLE x (a int)", Want::kWrite},
    {"SELECT 1; SELECT * FROM t FOR UPDATE", Want::kWrite},
    // --- writes ---
    {"INSERT INTO t VALUES (1)", Want::kWrite},
    {"insert into t select * from u", Want::kWrite},
    {"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1", Want::kWrite},
    {"DELETE FROM t WHERE a = 1", Want::kWrite},
    {"MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", Want::kWrite},
    {"TRUNCATE t", Want::kWrite},
    {"CREATE TABLE x (a int)", Want::kWrite},
    {"CREATE TEMP TABLE x (a int)", Want::kWrite},
    {"CREATE TEMPORARY TABLE x AS SELECT 1", Want::kWrite},
    {"CREATE INDEX ON t (a)", Want::kWrite},
    {"ALTER TABLE t ADD COLUMN b int", Want::kWrite},
    {"DROP TABLE t", Want::kWrite},
    {"GRANT SELECT ON t TO app", Want::kWrite},
    {"REVOKE ALL ON t FROM app", Want::kWrite},
    {"VACUUM t", Want::kWrite},
    {"ANALYZE t", Want::kWrite},
    {"CLUSTER t", Want::kWrite},
    {"REINDEX TABLE t", Want::kWrite},
    {"LOCK TABLE t IN ACCESS EXCLUSIVE MODE", Want::kWrite},
    {"LISTEN chan", Want::kWrite},
    {"NOTIFY chan, 'x'", Want::kWrite},
    {"UNLISTEN *", Want::kWrite},
    {"REFRESH MATERIALIZED VIEW mv", Want::kWrite},
    {"COMMENT ON TABLE t IS 'x'", Want::kWrite},
    {"CHECKPOINT", Want::kWrite},
    {"DO $$ BEGIN PERFORM 1; END $$", Want::kWrite},
    {"DO 'BEGIN NULL; END'", Want::kWrite},
    {"CALL my_procedure(1)", Want::kWrite},
    {"PREPARE p AS SELECT 1", Want::kWrite},
    {"EXECUTE p", Want::kWrite},
    {"DEALLOCATE p", Want::kWrite},
    {"DECLARE c CURSOR FOR SELECT * FROM t", Want::kWrite},
    {"DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t", Want::kWrite},
    {"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", Want::kWrite},
    {"SET SESSION AUTHORIZATION app", Want::kWrite},
    {"RESET SESSION AUTHORIZATION", Want::kWrite},
    {"SET session_authorization = 'app'", Want::kWrite},
    {"RESET session_authorization", Want::kWrite},
    {"COMMIT PREPARED 'gid'", Want::kWrite},
    {"ROLLBACK PREPARED 'gid'", Want::kWrite},
    {"SELEC 1", Want::kInvalid},
    {"SELECT FROM WHERE", Want::kInvalid},
    {"SELECT 'unterminated", Want::kInvalid},
    {"SELECT (1", Want::kInvalid},
    {"IMPORT FOREIGN SCHEMA s FROM SERVER x INTO y", Want::kWrite},
    {"SECURITY LABEL ON TABLE t IS 'x'", Want::kWrite},
    {"REASSIGN OWNED BY a TO b", Want::kWrite},
    {"LOAD 'plpgsql'", Want::kWrite},
    // --- COPY ---
    {"COPY t TO STDOUT", Want::kRead},
    {"COPY t (a, b) TO STDOUT WITH (FORMAT csv)", Want::kRead},
    {"COPY (SELECT * FROM t) TO STDOUT", Want::kRead},
    {"COPY (SELECT nextval('s')) TO STDOUT", Want::kWrite},
    {"COPY t FROM STDIN", Want::kWrite},
    {"COPY t FROM '/tmp/file'", Want::kWrite},
    {"COPY t TO '/tmp/file'", Want::kWrite},
    {"COPY t TO PROGRAM 'cat'", Want::kWrite},
    {"COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT", Want::kWrite},
    // --- transaction control ---
    {"BEGIN", Want::kBegin},
    {"begin;", Want::kBegin},
    {"BEGIN WORK", Want::kBegin},
    {"BEGIN TRANSACTION", Want::kBegin},
    {"START TRANSACTION", Want::kBegin},
    {"BEGIN READ ONLY", Want::kBeginRO},
    {"BEGIN TRANSACTION READ ONLY", Want::kBeginRO},
    {"START TRANSACTION READ ONLY", Want::kBeginRO},
    {"begin read only;", Want::kBeginRO},
    {"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", Want::kBeginRO},
    {"BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", Want::kBeginRO},
    {"START TRANSACTION READ ONLY, ISOLATION LEVEL READ COMMITTED", Want::kBeginRO},
    {"BEGIN READ WRITE", Want::kBeginRW},
    {"START TRANSACTION READ WRITE", Want::kBeginRW},
    {"BEGIN ISOLATION LEVEL SERIALIZABLE", Want::kBegin},
    {"BEGIN; SET TRANSACTION READ ONLY", Want::kBeginRO},
    {"BEGIN; SET TRANSACTION READ ONLY; SELECT * FROM t", Want::kBeginRO},
    {"BEGIN READ ONLY; SELECT * FROM t; COMMIT", Want::kBeginRO},
    {"SET TRANSACTION READ ONLY", Want::kSetTxRO},
    {"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", Want::kSetTxRO},
    {"COMMIT", Want::kEnd},
    {"commit;", Want::kEnd},
    {"COMMIT WORK", Want::kEnd},
    {"COMMIT AND NO CHAIN", Want::kEnd},
    {"END", Want::kEnd},
    {"END TRANSACTION", Want::kEnd},
    {"ROLLBACK", Want::kEnd},
    {"ABORT", Want::kEnd},
    {"PREPARE TRANSACTION 'gid'", Want::kEnd},
    // --- session statements (run anywhere) ---
    {"SET search_path = app, public", Want::kSession},
    {"SET LOCAL statement_timeout = '1s'", Want::kSession},
    {"SET SESSION timezone TO 'UTC'", Want::kSession},
    {"SET TIME ZONE 'UTC'", Want::kSession},
    {"RESET search_path", Want::kSession},
    {"RESET ALL", Want::kSession},
    {"SAVEPOINT a", Want::kSession},
    {"RELEASE SAVEPOINT a", Want::kSession},
    {"ROLLBACK TO SAVEPOINT a", Want::kSession},
    {"ROLLBACK TO a", Want::kSession},
    {"FETCH 10 FROM c", Want::kSession},
    {"CLOSE c", Want::kSession},
    {"DISCARD ALL", Want::kSession},
    // --- empty ---
    {"", Want::kEmpty},
    {";", Want::kEmpty},
    {"-- only a comment", Want::kEmpty},
    {"/* only */ ; /* comments */", Want::kEmpty},
};

std::string describe(const QueryClass& c) {
  std::string out = std::string(to_string(c.first));
  out += c.read_only ? " read_only" : " not_read_only";
  if (c.tx_read_only) out += *c.tx_read_only ? " tx_ro" : " tx_rw";
  if (c.force_primary) out += " force_primary";
  if (c.ends_transaction) out += " ends";
  if (!c.reason.empty()) out += " (" + c.reason + ")";
  return out;
}

/// Whether a verdict matches what the case wants.
bool matches(const QueryClass& c, Want want) {
  switch (want) {
    case Want::kRead:
      return c.first == StatementKind::kRead && c.read_only && !c.force_primary;
    case Want::kWrite:
      return c.force_primary || !c.read_only || c.first == StatementKind::kWrite;
    case Want::kBegin:
      return c.first == StatementKind::kBegin && !c.tx_read_only;
    case Want::kBeginRO:
      return c.first == StatementKind::kBegin && c.tx_read_only == true && c.read_only;
    case Want::kBeginRW:
      return c.first == StatementKind::kBegin && c.tx_read_only == false;
    case Want::kSetTxRO:
      return c.first == StatementKind::kSetTransaction && c.tx_read_only == true;
    case Want::kEnd:
      return c.first == StatementKind::kEnd && c.ends_transaction;
    case Want::kSession:
      return c.first == StatementKind::kSession && c.read_only;
    case Want::kEmpty:
      return c.first == StatementKind::kEmpty;
    case Want::kInvalid:
      return !c.parsed || (c.first == StatementKind::kWrite && !c.read_only);
  }
  return false;
}

TEST(Classify, AtLeastTwoHundredCases) { EXPECT_GE(std::size(kCases), 200U); }

TEST(Classify, ParserVerdicts) {
  const auto catalog = test_catalog();
  for (const auto& c : kCases) {
    const auto verdict = classify_parsed(c.sql, *catalog);
    EXPECT_TRUE(matches(verdict, c.want)) << c.sql << " -> " << describe(verdict);
  }
}

TEST(Classify, FastPathAgreesOrDefers) {
  const auto catalog = test_catalog();
  int settled = 0;
  for (const auto& c : kCases) {
    const auto fast = classify_fast(c.sql, *catalog);
    if (!fast) continue;
    ++settled;
    EXPECT_TRUE(matches(*fast, c.want)) << c.sql << " -> fast: " << describe(*fast);
  }
  // The pre-pass must settle the bulk of everyday statements, not defer everything.
  EXPECT_GT(settled, 120) << "the lexer pre-pass settled only " << settled << " cases";
}

TEST(Classify, FastPathSettlesCommonStatements) {
  const auto catalog = test_catalog();
  for (const char* sql :
       {"SELECT abalance FROM pgbench_accounts WHERE aid = 1;", "BEGIN;", "END;", "COMMIT",
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2;",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, "
        "CURRENT_TIMESTAMP);",
        "SELECT count(*) FROM t WHERE a = $1", "SET application_name = 'x'", "SHOW port",
        "BEGIN READ ONLY", "SELECT * FROM t WHERE id IN (1, 2)"}) {
    EXPECT_TRUE(classify_fast(sql, *catalog).has_value()) << sql;
  }
}

TEST(Classify, PlainSelectsSkipTheLexerButKeepItsVerdicts) {
  const auto catalog = test_catalog();
  // One SELECT without '(' or an unsettling word: a read, without lexing.
  for (const char* sql :
       {"SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
        "  select a, b from t where c = 'x' ", "SELECT * FROM t WHERE a = $1 -- a comment\n",
        "SELECT 1 /* pgrelay:primary */"}) {
    const auto fast = classify_fast(sql, *catalog);
    ASSERT_TRUE(fast.has_value()) << sql;
    EXPECT_EQ(fast->first, StatementKind::kRead) << sql;
    EXPECT_TRUE(fast->read_only) << sql;
    EXPECT_TRUE(fast->has_body) << sql;
    EXPECT_FALSE(fast->ends_transaction) << sql;
    EXPECT_TRUE(fast->reason.empty()) << sql;
    EXPECT_TRUE(fast->plain_select) << sql;
  }
  // The session relies on plain_select to skip its session-effects scan: words that scan
  // stops at (SET, COMMIT, LISTEN, END ...) may appear, but the one SELECT has no effects.
  for (const char* sql : {"SELECT set, commit, listen, prepare FROM t",
                          "SELECT CASE WHEN a THEN 1 END FROM t; ", "select 'reset all' as x"}) {
    const auto fast = classify_fast(sql, *catalog);
    ASSERT_TRUE(fast.has_value()) << sql;
    EXPECT_TRUE(fast->plain_select) << sql;
    EXPECT_FALSE(fast->ends_transaction) << sql;
    EXPECT_TRUE(analyze_session_effects(sql, {}).empty()) << sql;
  }
  // Lexed texts are not marked, read or not.
  for (const char* sql : {"SELECT count(*) FROM t", "SELECT 1; SELECT 2", "BEGIN", "SET a = 1"}) {
    const auto fast = classify_fast(sql, *catalog);
    ASSERT_TRUE(fast.has_value()) << sql;
    EXPECT_FALSE(fast->plain_select) << sql;
  }
  EXPECT_TRUE(classify_fast("SELECT 1 /* pgrelay:primary */", *catalog)->force_primary);
  EXPECT_FALSE(classify_fast("SELECT 1", *catalog)->force_primary);
  // What the token loop must still see: locking clauses and INTO (also behind a number), calls,
  // a second statement.
  for (const char* sql : {"SELECT * FROM t FOR UPDATE", "SELECT 1into t", "SELECT a INTO b FROM t",
                          "SELECT nextval('s')", "SELECT x FROM t FOR SHARE NOWAIT"}) {
    EXPECT_FALSE(classify_fast(sql, *catalog).has_value()) << sql;
  }
  const auto two = classify_fast("SELECT 1; DELETE FROM t", *catalog);
  ASSERT_TRUE(two.has_value());
  EXPECT_FALSE(two->read_only);
}

TEST(Classify, CachedClassifierGivesTheSameVerdictsAndCountsHits) {
  Classifier classifier(test_catalog(), 64);
  for (const auto& c : kCases) {
    const auto first = classifier.classify(c.sql);
    const auto second = classifier.classify(c.sql);
    EXPECT_TRUE(matches(first, c.want)) << c.sql << " -> " << describe(first);
    EXPECT_EQ(describe(first), describe(second)) << c.sql;
  }
  EXPECT_GT(classifier.counters().parses, 0U);
  EXPECT_GT(classifier.counters().cache_hits, 0U);
  EXPECT_GT(classifier.counters().fast, 0U);
}

TEST(Classify, CacheIsBoundedAndEvictsTheLeastRecentlyUsed) {
  Classifier classifier(test_catalog(), 2);
  const char* a = "WITH a AS (SELECT 1) SELECT * FROM a";
  const char* b = "WITH b AS (SELECT 1) SELECT * FROM b";
  const char* c = "WITH c AS (SELECT 1) SELECT * FROM c";
  classifier.classify(a);
  classifier.classify(b);
  classifier.classify(a);  // hit: a is now the most recent
  classifier.classify(c);  // evicts b
  const auto parses = classifier.counters().parses;
  classifier.classify(a);
  EXPECT_EQ(classifier.counters().parses, parses) << "a should still be cached";
  classifier.classify(b);
  EXPECT_EQ(classifier.counters().parses, parses + 1) << "b should have been evicted";
}

TEST(Classify, NewCatalogChangesVerdicts) {
  Classifier classifier(test_catalog());
  EXPECT_FALSE(classifier.classify("SELECT my_lookup(1)").read_only);
  classifier.set_catalog(std::make_shared<const FunctionCatalog>(
      std::vector<std::string>{"my_lookup"}, std::vector<std::string>{}));
  EXPECT_TRUE(classifier.classify("SELECT my_lookup(1)").read_only);
}

TEST(Classify, BackslashesWithNonStandardStringsGoToThePrimary) {
  Classifier classifier(test_catalog());
  LexerOptions old_strings;
  old_strings.standard_conforming_strings = false;
  EXPECT_FALSE(classifier.classify("SELECT 'a\\' FOR UPDATE --'", old_strings).read_only);
  EXPECT_TRUE(classifier.classify("SELECT 'plain'", old_strings).read_only);
}

TEST(Classify, AlwaysWritingFunctionsIgnoreTheCatalog) {
  // Even a catalog claiming nextval is stable does not make it a read.
  const FunctionCatalog catalog({"nextval", "pg_advisory_lock", "txid_current", "pg_notify"}, {});
  for (const char* sql : {"SELECT nextval('s')", "SELECT pg_advisory_lock(1)",
                          "SELECT txid_current()", "SELECT pg_notify('a', 'b')"}) {
    EXPECT_FALSE(classify_parsed(sql, catalog).read_only) << sql;
    const auto fast = classify_fast(sql, catalog);
    EXPECT_TRUE(!fast || !fast->read_only) << sql;
  }
}

TEST(Classify, ReasonsNameTheCause) {
  const auto catalog = test_catalog();
  EXPECT_NE(classify_parsed("SELECT * FROM t FOR UPDATE", *catalog).reason.find("locking"),
            std::string::npos);
  EXPECT_NE(classify_parsed("SELECT nextval('s')", *catalog).reason.find("nextval"),
            std::string::npos);
  EXPECT_NE(classify_parsed("SELECT * INTO x FROM t", *catalog).reason.find("INTO"),
            std::string::npos);
  EXPECT_NE(classify_parsed("SELEC 1", *catalog).reason.find("parse error"), std::string::npos);
}

}  // namespace
}  // namespace pgrelay::sql

namespace pgrelay::sql {
namespace {

TEST(ClassifyCombine, ExtendedBatchesFoldLikeMultiStatementQueries) {
  const auto catalog = test_catalog();
  const auto c = [&](const char* sql) { return classify_parsed(sql, *catalog); };
  // BEGIN, then SET TRANSACTION READ ONLY in the next message: a read-only transaction.
  const auto begin_ro = combine(c("BEGIN"), c("SET TRANSACTION READ ONLY"));
  EXPECT_EQ(begin_ro.first, StatementKind::kBegin);
  EXPECT_EQ(begin_ro.tx_read_only, true);
  const auto begin_ro_select = combine(begin_ro, c("SELECT 1"));
  EXPECT_EQ(begin_ro_select.tx_read_only, true);
  EXPECT_TRUE(begin_ro_select.read_only);
  // A SET TRANSACTION after the body has started does not make it read-only.
  const auto late = combine(combine(c("BEGIN"), c("SELECT 1")), c("SET TRANSACTION READ ONLY"));
  EXPECT_FALSE(late.tx_read_only.has_value());
  // A write anywhere makes the batch a write, with its reason.
  const auto mixed = combine(c("SELECT 1"), c("SELECT nextval('s')"));
  EXPECT_FALSE(mixed.read_only);
  EXPECT_NE(mixed.reason.find("nextval"), std::string::npos) << mixed.reason;
  const auto begin_write = combine(c("BEGIN READ ONLY"), c("INSERT INTO t VALUES (1)"));
  EXPECT_FALSE(begin_write.read_only);
  // Ends and hints accumulate; empty parts change nothing.
  EXPECT_TRUE(combine(c("INSERT INTO t VALUES (1)"), c("COMMIT")).ends_transaction);
  EXPECT_TRUE(combine(c("SELECT 1"), c("/* pgrelay:primary */ SELECT 2")).force_primary);
  const auto empty_first = combine(c(""), c("SELECT 1"));
  EXPECT_EQ(empty_first.first, StatementKind::kRead);
  EXPECT_TRUE(empty_first.read_only);
}

}  // namespace
}  // namespace pgrelay::sql
