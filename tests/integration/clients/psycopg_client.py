#!/usr/bin/python3
"""A psycopg2 client for clients_pgtest: SQL-level prepared statements and a committed
search_path that must follow the client across transactions in pgrelay's transaction mode.

It creates schema clients_py and table clients_py.t, commits
`SET search_path TO clients_py, <client>_absent, public`, prepares `ins` and `total` once, then
runs many short transactions that EXECUTE them against the unqualified table name. Every tenth
transaction is rolled back. The schema <client>_absent does not exist: it only makes every
client's search_path different, so one client's setting showing up in another's session is
caught, and the client's name in the statements' text makes a mix-up of two clients' `ins` or
`total` change the counts. Any mismatch exits
with status 1 and a message on stderr; success prints one line:

    psycopg_client <id>: ok transactions=N committed=C rows=C pids=P1,P2

psycopg2 interpolates parameters on the client and sends simple queries, so the prepared
statements here are PREPARE/EXECUTE statements, not protocol-level Parse/Bind.
"""

import argparse
import os
import re
import sys

import psycopg2

SCHEMA = "clients_py"
# Serialises CREATE SCHEMA/TABLE IF NOT EXISTS between concurrent clients (both can otherwise
# fail with a unique violation on the catalog).
DDL_LOCK = 7301


def fail(client, message):
    print(f"psycopg_client {client}: FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def one(cursor, query, params=None):
    cursor.execute(query, params)
    row = cursor.fetchone()
    return row[0] if len(row) == 1 else row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("PGHOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PGPORT", "6432")))
    parser.add_argument("--user", default=os.environ.get("PGUSER", "app"))
    parser.add_argument("--password", default=os.environ.get("PGPASSWORD", "app"))
    parser.add_argument("--dbname", default=os.environ.get("PGDATABASE", "app"))
    parser.add_argument("--client", required=True, help="this client's name in clients_py.t")
    parser.add_argument("--transactions", type=int, default=200)
    args = parser.parse_args()
    client = args.client
    if not re.fullmatch(r"[a-z0-9_]+", client):
        fail(client, "--client must match [a-z0-9_]+")
    search_path = f"{SCHEMA}, {client}_absent, public"

    try:
        conn = psycopg2.connect(host=args.host, port=args.port, user=args.user,
                                password=args.password, dbname=args.dbname, sslmode="disable",
                                connect_timeout=10, application_name="psycopg_client")
    except psycopg2.Error as error:
        fail(client, f"connect: {error}")
    conn.autocommit = False
    cur = conn.cursor()

    where = "setup"
    try:
        # Schema and table, qualified: the search_path is not set yet.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.t (client text NOT NULL, n int NOT NULL)")
        conn.commit()

        cur.execute(f"SET search_path TO {search_path}")
        conn.commit()

        # Prepared once, in their own transaction; `t` resolves through the search_path now.
        cur.execute("PREPARE ins(int) AS INSERT INTO t (client, n) VALUES (%s, $1)", (client,))
        cur.execute("PREPARE total AS SELECT count(*), coalesce(sum(n), 0) FROM t "
                    "WHERE client = %s", (client,))
        conn.commit()

        pids = []
        committed = 0
        committed_sum = 0
        for i in range(args.transactions):
            where = f"transaction {i}"
            shown = one(cur, "SHOW search_path")
            if shown != search_path:
                fail(client, f"{where}: SHOW search_path = {shown!r}, want {search_path!r}")
            schema = one(cur, "SELECT current_schema(), 't'::regclass::text, "
                              "(SELECT relnamespace::regnamespace::text FROM pg_class "
                              "WHERE oid = 't'::regclass)")
            if schema != (SCHEMA, "t", SCHEMA):
                fail(client, f"{where}: current_schema, 't'::regclass, its schema = {schema}, "
                             f"want {(SCHEMA, 't', SCHEMA)}")

            cur.execute("EXECUTE ins(%s)", (i,))
            if cur.rowcount != 1:
                fail(client, f"{where}: EXECUTE ins inserted {cur.rowcount} rows")
            rows, total = one(cur, "EXECUTE total")
            if (rows, total) != (committed + 1, committed_sum + i):
                fail(client, f"{where}: EXECUTE total = ({rows}, {total}), "
                             f"want ({committed + 1}, {committed_sum + i})")
            pid = one(cur, "SELECT pg_backend_pid()")
            if pid not in pids:
                pids.append(pid)

            if i % 10 == 9:
                conn.rollback()
            else:
                conn.commit()
                committed += 1
                committed_sum += i

        # After the last transaction: everything committed, nothing rolled back, still visible.
        where = "final check"
        rows, total = one(cur, "EXECUTE total")
        conn.commit()
        if (rows, total) != (committed, committed_sum):
            fail(client, f"final EXECUTE total = ({rows}, {total}), "
                         f"want ({committed}, {committed_sum})")
    except psycopg2.Error as error:
        query = cur.query.decode() if cur.query else None
        fail(client, f"{where}: {type(error).__name__} {error.pgcode}: {str(error).strip()} "
                     f"(last query sent: {query!r})")
    conn.close()

    print(f"psycopg_client {client}: ok transactions={args.transactions} committed={committed} "
          f"rows={rows} pids={','.join(str(p) for p in pids)}", flush=True)


if __name__ == "__main__":
    main()
