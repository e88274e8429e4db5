#!/usr/bin/python3
"""A psycopg 3 client for clients_pgtest, through pgrelay's transaction pooling with read
splitting: autocommit reads that must see the client's own commits wherever pgrelay sends them,
statements psycopg prepares by itself after five executions (named `_pg3_N` in every client,
with different texts), a committed search_path, and pipeline mode: reads and writes pipelined in
one implicit transaction, a read whose rows are fetched before the write that follows it in the
same pipeline, and a write pipelined behind a read that has its own Sync.

    psycopg3_client.py --host H --port P --client NAME --transactions N

Every tenth transaction is rolled back. Success prints one line:

    psycopg3_client <client>: ok transactions=N committed=C rows=C reads=R standby_reads=S

where S counts the reads a server in recovery answered. Any mismatch exits with status 1.
"""

import argparse
import re
import sys
import time

import psycopg

SCHEMA = "clients_pg3"
DDL_LOCK = 7303  # serialises CREATE SCHEMA/TABLE IF NOT EXISTS between the clients
# On a standby every transaction is read-only: that tells where a read ran.
COUNT = ("SELECT count(*)::int, coalesce(sum(n), 0)::int, "
         "pg_catalog.current_setting('transaction_read_only') FROM t WHERE client = %s")


def fail(client, message):
    print(f"psycopg3_client {client}: FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("--transactions", type=int, default=100)
    args = parser.parse_args()
    client = args.client
    if not re.fullmatch(r"[a-z0-9_]+", client):
        fail(client, "--client must match [a-z0-9_]+")

    where = "connect"
    try:
        conn = psycopg.connect(host=args.host, port=args.port, user="app", password="app",
                               dbname="app", sslmode="disable", connect_timeout=10,
                               application_name="psycopg3_client", autocommit=True)
        where = "setup"
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.t "
                         "(client text NOT NULL, n int NOT NULL)")
        conn.execute(f"SET search_path TO {SCHEMA}, {client}_absent, public")
        # The client's name in the text: every client's `_pg3_N` statements differ.
        insert = f"INSERT INTO t (client, n) VALUES ('{client}', %s)"

        committed = total = reads = standby_reads = 0

        def check_read(what, extra_rows=0, extra_total=0):
            nonlocal reads, standby_reads
            rows, summed, read_only = conn.execute(COUNT, (client,)).fetchone()
            reads += 1
            standby_reads += read_only == "on"
            if rows != committed + extra_rows or summed != total + extra_total:
                fail(client, f"{what}: {rows} rows (sum {summed}), "
                             f"committed {committed} (sum {total})")

        for i in range(args.transactions):
            where = f"transaction {i}"
            with conn.transaction():
                conn.execute(insert, (i,))
                if i % 10 == 9:
                    raise psycopg.Rollback()
            if i % 10 != 9:
                committed += 1
                total += i
            if i % 10 == 4:
                time.sleep(0.3)  # the standbys replay the commit: this read tends to go there
            check_read(f"read after transaction {i}")

        # A read and a write pipelined in one implicit transaction (one Sync at the end).
        for k in range(5):
            where = f"pipeline {k}"
            n = 10000 + k
            with conn.pipeline():
                before = conn.execute(COUNT, (client,))
                conn.execute(insert, (n,))
                after = conn.execute(COUNT, (client,))
            rows_before = before.fetchone()[0]
            rows_after = after.fetchone()[0]
            if rows_before != committed or rows_after != committed + 1:
                fail(client, f"pipeline {k}: {rows_before} then {rows_after} rows, "
                             f"committed {committed}")
            committed += 1
            total += n

        # The read's rows fetched (Flush) before the write is sent, in the same pipeline.
        where = "pipeline with a fetch"
        with conn.pipeline():
            rows_before = conn.execute(COUNT, (client,)).fetchone()[0]
            conn.execute(insert, (20000,))
        if rows_before != committed:
            fail(client, f"pipeline with a fetch: {rows_before} rows, committed {committed}")
        committed += 1
        total += 20000

        # A read with its own Sync, then a write behind it.
        where = "pipeline with a sync"
        with conn.pipeline() as pipeline:
            first = conn.execute(COUNT, (client,))
            pipeline.sync()
            conn.execute(insert, (30000,))
        if first.fetchone()[0] != committed:
            fail(client, "pipeline with a sync: the read missed a commit")
        committed += 1
        total += 30000

        where = "final read"
        check_read("final read")
        path = conn.execute("SHOW search_path").fetchone()[0]
        if path != f"{SCHEMA}, {client}_absent, public":
            fail(client, f"search_path is {path}")
        conn.close()
    except psycopg.Error as error:
        fail(client, f"{where}: {error.sqlstate} {error}")

    print(f"psycopg3_client {client}: ok transactions={args.transactions} "
          f"committed={committed} rows={committed} reads={reads} "
          f"standby_reads={standby_reads}", flush=True)


if __name__ == "__main__":
    main()
