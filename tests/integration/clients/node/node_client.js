#!/usr/bin/env node
// A node-postgres (pg) client for clients_pgtest, through pgrelay's transaction pooling with read
// splitting: named protocol-level statements (the same names with different texts in every
// client), a committed search_path, transactions, autocommit reads that must see the client's
// own commits wherever pgrelay sends them, a result read in pages (Execute with a row limit and
// Flush until the portal is done, then Sync) and an error that the session recovers from.
//
//   node node_client.js HOST PORT CLIENT TRANSACTIONS
//
// Every tenth transaction is rolled back. Success prints one line:
//
//   node_client <client>: ok transactions=N committed=C rows=C reads=R standby_reads=S
//
// where S counts the reads a server in recovery answered. Any mismatch exits with status 1.
'use strict';

const { Client } = require('pg');

const SCHEMA = 'clients_node';
const DDL_LOCK = 7302; // serialises CREATE SCHEMA/TABLE IF NOT EXISTS between the clients

function fail(client, message) {
  process.stderr.write(`node_client ${client}: FAILED: ${message}\n`);
  process.exit(1);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function main() {
  const [host, port, client, transactionsText] = process.argv.slice(2);
  const transactions = Number(transactionsText);
  if (!/^[a-z0-9_]+$/.test(client || '') || !(transactions > 0)) {
    fail(client, 'usage: node_client.js HOST PORT CLIENT TRANSACTIONS');
  }
  const conn = new Client({
    host,
    port: Number(port),
    user: 'app',
    password: 'app',
    database: 'app',
    application_name: 'node_client',
    connectionTimeoutMillis: 10000,
  });
  let where = 'connect';
  try {
    await conn.connect();

    where = 'setup';
    await conn.query('BEGIN');
    await conn.query('SELECT pg_advisory_xact_lock($1)', [DDL_LOCK]);
    await conn.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
    await conn.query(`CREATE TABLE IF NOT EXISTS ${SCHEMA}.t (client text NOT NULL, n int NOT NULL)`);
    await conn.query('COMMIT');
    // Autocommit, so pgrelay reads the setting back and carries it to every later connection.
    await conn.query(`SET search_path TO ${SCHEMA}, ${client}_absent, public`);

    // Named statements: pg parses each once per connection it believes it has; pgrelay maps the
    // names onto whatever server connection runs the transaction.
    const insert = { name: 'ins', text: `INSERT INTO t (client, n) VALUES ('${client}', $1)` };
    // On a standby every transaction is read-only: that tells where a read ran.
    const count = {
      name: 'count',
      text:
        'SELECT count(*)::int AS rows, coalesce(sum(n), 0)::int AS total, ' +
        "pg_catalog.current_setting('transaction_read_only') AS ro FROM t WHERE client = $1",
    };

    let committed = 0;
    let total = 0;
    let reads = 0;
    let standbyReads = 0;
    for (let i = 0; i < transactions; ++i) {
      where = `transaction ${i}`;
      await conn.query('BEGIN');
      await conn.query({ ...insert, values: [i] });
      if (i % 10 === 9) {
        await conn.query('ROLLBACK');
      } else {
        await conn.query('COMMIT');
        committed += 1;
        total += i;
      }
      // Now and then give the standbys time to replay the commit: that read tends to go there.
      if (i % 10 === 4) await sleep(300);
      where = `read after transaction ${i}`;
      const seen = (await conn.query({ ...count, values: [client] })).rows[0];
      reads += 1;
      if (seen.ro === 'on') standbyReads += 1;
      if (seen.rows !== committed || seen.total !== total) {
        fail(client, `read after transaction ${i}: ${seen.rows} rows (sum ${seen.total}), ` +
                     `committed ${committed} (sum ${total})`);
      }
    }

    where = 'paged read';
    // Execute with a row limit and Flush, again and again, and Sync only at the end: the portal
    // lives until then, on one server connection.
    const paged = await conn.query({
      text: 'SELECT n FROM generate_series(1, 25) AS n ORDER BY n',
      rows: 4,
    });
    const got = paged.rows.map((row) => row.n).join(',');
    const want = Array.from({ length: 25 }, (_, k) => k + 1).join(',');
    if (got !== want) fail(client, `paged read returned ${got}`);

    where = 'error';
    let failed = false;
    try {
      await conn.query({ name: 'bad', text: 'SELECT 1 / $1::int', values: [0] });
    } catch (error) {
      failed = error.code === '22012';
      if (!failed) throw error;
    }
    if (!failed) fail(client, 'division by zero did not fail');
    const after = (await conn.query({ ...count, values: [client] })).rows[0];
    if (after.rows !== committed) fail(client, `after the error: ${after.rows} rows`);
    const path = (await conn.query('SHOW search_path')).rows[0].search_path;
    if (path !== `${SCHEMA}, ${client}_absent, public`) fail(client, `search_path is ${path}`);

    await conn.end();
    process.stdout.write(
      `node_client ${client}: ok transactions=${transactions} committed=${committed} ` +
        `rows=${committed} reads=${reads} standby_reads=${standbyReads}\n`,
    );
  } catch (error) {
    fail(client, `${where}: ${error.code || ''} ${error.message}`);
  }
}

main();
