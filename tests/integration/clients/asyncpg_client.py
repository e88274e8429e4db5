#!/usr/bin/python3
"""An asyncpg client for clients_pgtest, through pgrelay's transaction pooling with read
splitting. asyncpg prepares every statement under its own name (`__asyncpg_stmt_N__`, the same
names with different texts in every client) and keeps them in a cache, preparing with Parse,
Describe and Flush and binding only after the answer: with PgBouncer's transaction pooling that
needs `statement_cache_size=0`; here it runs with the defaults. Also: autocommit reads that must
see the client's own commits wherever pgrelay sends them, an explicit prepare(), and a cursor
read in pages inside a transaction.

    asyncpg_client.py --port P --client NAME --transactions N

Every tenth transaction is rolled back. Success prints one line:

    asyncpg_client <client>: ok transactions=N committed=C rows=C reads=R standby_reads=S

where S counts the reads a server in recovery answered. Any mismatch exits with status 1.
"""

import argparse
import asyncio
import re
import sys

import asyncpg

SCHEMA = "clients_apg"
DDL_LOCK = 7304  # serialises CREATE SCHEMA/TABLE IF NOT EXISTS between the clients
# On a standby every transaction is read-only: that tells where a read ran.
COUNT = ("SELECT count(*)::int, coalesce(sum(n), 0)::int, "
         "pg_catalog.current_setting('transaction_read_only') FROM t WHERE client = $1")


class Rollback(Exception):
    """Raised inside a transaction block to roll it back."""


def fail(client, message):
    print(f"asyncpg_client {client}: FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


async def run(args):
    client = args.client
    where = "connect"
    try:
        conn = await asyncpg.connect(host=args.host, port=args.port, user="app", password="app",
                                     database="app", ssl=False, timeout=10)
        where = "setup"
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", DDL_LOCK)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.t "
                               "(client text NOT NULL, n int NOT NULL)")
        await conn.execute(f"SET search_path TO {SCHEMA}, {client}_absent, public")
        # The client's name in the text: every client's cached statements differ.
        insert = f"INSERT INTO t (client, n) VALUES ('{client}', $1)"
        committed = total = reads = standby_reads = 0
        for i in range(args.transactions):
            where = f"transaction {i}"
            try:
                async with conn.transaction():
                    await conn.execute(insert, i)
                    if i % 10 == 9:
                        raise Rollback()
                committed += 1
                total += i
            except Rollback:
                pass
            if i % 10 == 4:
                await asyncio.sleep(0.3)  # the standbys replay the commit: this read may go there
            where = f"read after transaction {i}"
            rows, summed, read_only = await conn.fetchrow(COUNT, client)
            reads += 1
            standby_reads += read_only == "on"
            if rows != committed or summed != total:
                fail(client, f"read after transaction {i}: {rows} rows (sum {summed}), "
                             f"committed {committed} (sum {total})")

        where = "prepare"
        statement = await conn.prepare("SELECT $1::int * 2")
        doubled = [await statement.fetchval(k) for k in range(5)]
        if doubled != [0, 2, 4, 6, 8]:
            fail(client, f"prepared statement returned {doubled}")

        where = "cursor"
        async with conn.transaction():
            cursor = await conn.cursor("SELECT n FROM generate_series(1, 25) AS n ORDER BY n")
            pages = []
            while True:
                page = await cursor.fetch(4)
                if not page:
                    break
                pages.extend(row[0] for row in page)
        if pages != list(range(1, 26)):
            fail(client, f"cursor returned {pages}")

        where = "search_path"
        path = await conn.fetchval("SHOW search_path")
        if path != f"{SCHEMA}, {client}_absent, public":
            fail(client, f"search_path is {path}")
        await conn.close()
    except (asyncpg.PostgresError, OSError, asyncio.TimeoutError) as error:
        fail(client, f"{where}: {getattr(error, 'sqlstate', '')} {error}")
    print(f"asyncpg_client {client}: ok transactions={args.transactions} committed={committed} "
          f"rows={committed} reads={reads} standby_reads={standby_reads}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("--transactions", type=int, default=100)
    args = parser.parse_args()
    if not re.fullmatch(r"[a-z0-9_]+", args.client):
        fail(args.client, "--client must match [a-z0-9_]+")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
