#!/usr/bin/env python3
"""psycopg 3 routed by Bind parameters over several shards.

Usage: psycopg_routing.py URL TENANTS

The Rust test has created `orders (tenant_id bigint, id bigint, note text)` on every shard
behind the proxy at URL. This script writes four rows for each tenant 1..TENANTS, each in a
way that leaves the tenant only in a Bind parameter (text and binary format, a server-side
prepared statement, a driver-managed transaction, a pipeline), reads them back by
parameter, and exits non-zero naming the first mismatch. The Rust test then checks on the
shards directly that every tenant landed where the map says.
"""

import sys
import traceback

try:
    import psycopg
except ImportError as exc:
    print(
        f"psycopg 3 is not importable ({exc}); "
        "install it with: python3 -m pip install 'psycopg[binary]'",
        file=sys.stderr,
    )
    sys.exit(2)

INSERT_TEXT = "insert into orders (tenant_id, id, note) values (%s, %s, %s)"
INSERT_BINARY = "insert into orders (tenant_id, id, note) values (%b, %b, %b)"


class Mismatch(Exception):
    pass


def expect(got, want, what):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")


def run(url, tenants):
    ids = range(1, tenants + 1)
    with psycopg.connect(url, autocommit=True) as conn:
        for t in ids:
            # Text-format parameters on a statement prepared on the server.
            conn.execute(INSERT_TEXT, (t, 1, "text"), prepare=True)
            # Binary-format parameters (psycopg sends small ints as int2, larger as int4/int8).
            conn.execute(INSERT_BINARY, (t, 2, "binary"), prepare=True)
    with psycopg.connect(url) as conn:
        for t in ids:
            # A driver-managed transaction: BEGIN reaches the proxy before the tenant does.
            with conn.transaction():
                conn.execute(INSERT_TEXT, (t, 3, "transaction"))
    with psycopg.connect(url, autocommit=True) as conn:
        # A pipeline across every tenant, one Sync per statement: each Bind names its own
        # shard, and the statements are in flight together.
        with conn.pipeline() as p:
            for t in ids:
                conn.execute(INSERT_TEXT, (t, 4, "pipeline"))
                p.sync()
        # executemany sends every row before one Sync: Postgres runs them as one implicit
        # transaction, so rows spanning shards are refused whole (SG003), none applied.
        try:
            with conn.cursor() as cur:
                cur.executemany(INSERT_TEXT, [(t, 5, "executemany") for t in ids])
            raise Mismatch("executemany across shards was accepted")
        except psycopg.DatabaseError as exc:
            expect(exc.diag.sqlstate, "SG003", "executemany across shards")
        # Per tenant, executemany is one shard's implicit transaction and works.
        with conn.cursor() as cur:
            cur.executemany(INSERT_TEXT, [(1, 5, "executemany"), (1, 6, "executemany")])
        conn.execute("delete from orders where tenant_id = 1 and id >= 5")
    with psycopg.connect(url, autocommit=True) as conn:
        for t in ids:
            n = conn.execute(
                "select count(*) from orders where tenant_id = %s", (t,), prepare=True
            ).fetchone()[0]
            expect(n, 4, f"rows of tenant {t} read by parameter")
        for t in (1, tenants // 2, tenants):
            notes = [
                r[0]
                for r in conn.execute(
                    "select note from orders where tenant_id = any(%s) order by id", ([t],)
                )
            ]
            expect(notes, ["text", "binary", "transaction", "pipeline"], f"tenant {t}")
            big = conn.execute(
                "select count(*) from orders where tenant_id = %b", (psycopg.types.numeric.Int8(t),)
            ).fetchone()[0]
            expect(big, 4, f"tenant {t} by a binary int8 parameter")


def main():
    if len(sys.argv) != 3:
        print(f"usage: {sys.argv[0]} URL TENANTS", file=sys.stderr)
        return 64
    url, tenants = sys.argv[1], int(sys.argv[2])
    print(f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()})")
    try:
        run(url, tenants)
    except Mismatch as exc:
        print(f"MISMATCH: {exc}", file=sys.stderr)
        traceback.print_exc()
        return 1
    except Exception as exc:
        state = getattr(getattr(exc, "diag", None), "sqlstate", None)
        print(f"ERROR: {type(exc).__name__} (SQLSTATE {state}): {exc}", file=sys.stderr)
        traceback.print_exc()
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
