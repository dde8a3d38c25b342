#!/usr/bin/env python3
"""psycopg 3 through shardgate, one scenario per run.

Usage: psycopg_client.py URL SCENARIO

Each scenario works in a fresh database (the Rust test starts a new fixture per run),
checks every result it gets, and exits non-zero with a message naming the first mismatch.
Exit status 2 means psycopg itself is missing.
"""

import sys
import traceback
from decimal import Decimal

try:
    import psycopg
except ImportError as exc:  # the Rust test shows this message as its failure
    print(
        f"psycopg 3 is not importable ({exc}); "
        "install it with: python3 -m pip install 'psycopg[binary]'",
        file=sys.stderr,
    )
    sys.exit(2)


class Mismatch(Exception):
    pass


def expect(got, want, what):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")


def one(conn, sql, params=None, prepare=None):
    row = conn.execute(sql, params, prepare=prepare).fetchone()
    if row is None:
        raise Mismatch(f"{sql!r} returned no row")
    return row[0]


def setup(url, sql):
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


# ---------------------------------------------------------------------------------------


def prepared(url):
    """Server-side prepared statements, used many times, from several connections whose
    transactions overlap, so the proxy must prepare them on more than one server
    connection."""
    setup(
        url,
        "create table kv (id int primary key, v text not null, hits int not null default 0);"
        "insert into kv (id, v) select g, 'v' || g from generate_series(1, 200) g",
    )
    conns = [psycopg.connect(url) for _ in range(4)]
    for c in conns:
        c.prepare_threshold = 0
    lookup = "select v from kv where id = %s"
    count_upto = "select count(*) from kv where id <= %s"
    bump = "update kv set hits = hits + 1 where id = %s"
    bumps = {}
    rounds = 25
    for rnd in range(rounds):
        # All four hold a transaction at once: four distinct server connections.
        order = conns[rnd % 4 :] + conns[: rnd % 4]
        for i, c in enumerate(order):
            key = 1 + (rnd * 7 + i * 13) % 200
            expect(one(c, lookup, (key,), prepare=True), f"v{key}", f"round {rnd} lookup")
            expect(one(c, count_upto, (key,)), key, f"round {rnd} count")
            c.execute(bump, (key,), prepare=True)
            bumps[key] = bumps.get(key, 0) + 1
        # Commit in a rotating order so the next round meets the connections shuffled.
        for c in reversed(order) if rnd % 2 else order:
            c.commit()

    # The statement really is prepared on the server connection serving this transaction.
    c = conns[0]
    one(c, lookup, (1,), prepare=True)
    n = one(c, "select count(*) from pg_prepared_statements", prepare=False)
    if n < 1:
        raise Mismatch("no server-side prepared statement after execute(prepare=True)")
    c.commit()

    with psycopg.connect(url) as check:
        total = one(check, "select sum(hits) from kv")
        expect(total, sum(bumps.values()), "total updates")
        for key, hits in bumps.items():
            expect(one(check, "select hits from kv where id = %s", (key,)), hits, f"hits of {key}")

    # Autocommit: every statement is its own transaction on a possibly different server
    # connection, and still executes the client's prepared statement.
    a = psycopg.connect(url, autocommit=True, prepare_threshold=0)
    b = psycopg.connect(url, autocommit=True, prepare_threshold=0)
    for i in range(1, 101):
        for conn in (a, b):
            expect(one(conn, lookup, (i,), prepare=True), f"v{i}", f"autocommit lookup {i}")
    # A statement whose parameter is wrong fails without breaking the others.
    try:
        a.execute("select 10 / %s::int", (0,), prepare=True)
        raise Mismatch("division by zero through a prepared statement did not fail")
    except psycopg.errors.DivisionByZero:
        pass
    expect(one(a, "select 10 / %s::int", (5,), prepare=True), 2, "after a failed execute")
    for conn in conns + [a, b]:
        conn.close()


def prepared_eviction(url):
    """psycopg deallocates statements that fall out of its cache (protocol Close with a
    recent libpq) and sends DEALLOCATE ALL after ROLLBACK and DROP; the same names are
    then reused for other statements."""
    setup(url, "create table ev (id int primary key, v int not null)")
    conn = psycopg.connect(url, prepare_threshold=0)
    conn.prepared_max = 4
    other = psycopg.connect(url, prepare_threshold=0)
    for rep in range(4):
        for k in range(12):
            sql = f"select %s::int + {k}"
            expect(one(conn, sql, (rep,)), rep + k, f"rep {rep} statement {k}")
            if k % 3 == 0:
                # Another client's transaction takes a server connection meanwhile.
                expect(one(other, sql, (k,)), 2 * k, f"other, statement {k}")
                conn.commit()
                other.commit()
        conn.commit()

    # ROLLBACK makes psycopg send DEALLOCATE ALL; its statement names start over.
    for i in range(3):
        expect(one(conn, "select %s::int * 2", (i,)), i * 2, "before rollback")
        conn.execute("insert into ev values (%s, %s)", (100 + i, i))
        conn.rollback()
        expect(one(conn, "select count(*) from ev"), 0, "rolled back inserts")
        expect(one(conn, "select %s::int * 3", (i,)), i * 3, "after rollback")
        conn.commit()

    # DROP also clears the cache; the table comes back with another shape.
    conn.execute("insert into ev values (1, 10)")
    conn.commit()
    expect(one(conn, "select v from ev where id = %s", (1,)), 10, "before drop")
    conn.execute("drop table ev")
    conn.execute("create table ev (id int primary key, v text not null)")
    conn.execute("insert into ev values (1, 'ten')")
    conn.commit()
    expect(one(conn, "select v from ev where id = %s", (1,)), "ten", "after drop and recreate")
    conn.commit()
    conn.close()
    other.close()


def executemany_rollback(url):
    setup(url, "create table items (id int primary key, name text not null, qty int not null)")
    conn = psycopg.connect(url)
    rows = [(i, f"item-{i}", i % 7) for i in range(1, 1001)]
    with conn.cursor() as cur:
        cur.executemany("insert into items (id, name, qty) values (%s, %s, %s)", rows)
    conn.commit()
    expect(one(conn, "select count(*) from items"), 1000, "rows after executemany")
    expect(one(conn, "select sum(qty) from items"), sum(r[2] for r in rows), "sum of qty")
    conn.commit()

    # executemany with RETURNING: one result set per parameter set.
    with conn.cursor() as cur:
        cur.executemany(
            "insert into items (id, name, qty) values (%s, %s, 0) returning id * 2",
            [(i, f"r-{i}") for i in range(1001, 1101)],
            returning=True,
        )
        got = []
        while True:
            got.extend(r[0] for r in cur.fetchall())
            if not cur.nextset():
                break
    expect(got, [i * 2 for i in range(1001, 1101)], "executemany returning")
    conn.commit()

    # executemany inside a transaction that is rolled back leaves nothing behind.
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                "insert into items (id, name, qty) values (%s, %s, 1)",
                [(i, f"gone-{i}") for i in range(5000, 5200)],
            )
        expect(one(conn, "select count(*) from items where id >= 5000"), 200, "inside txn")
        raise psycopg.Rollback()
    expect(one(conn, "select count(*) from items where id >= 5000"), 0, "after Rollback")
    conn.commit()

    conn.execute("update items set qty = -1")
    conn.rollback()
    expect(one(conn, "select count(*) from items where qty = -1"), 0, "after rollback()")
    conn.commit()

    # A failing statement aborts the transaction; rollback makes the connection usable.
    conn.execute("insert into items values (9000, 'kept-until-error', 1)")
    try:
        conn.execute("insert into items values (1, 'duplicate', 1)")
        raise Mismatch("duplicate key was accepted")
    except psycopg.errors.UniqueViolation:
        pass
    try:
        conn.execute("select 1")
        raise Mismatch("statement after an error ran in an aborted transaction")
    except psycopg.errors.InFailedSqlTransaction:
        pass
    conn.rollback()
    expect(one(conn, "select count(*) from items"), 1100, "after failed transaction")
    conn.commit()

    # executemany that fails half-way inside a pipeline: nothing of it stays.
    try:
        with conn.cursor() as cur:
            cur.executemany(
                "insert into items (id, name, qty) values (%s, 'half', 0)",
                [(7000,), (7001,), (1,), (7002,)],
            )
        raise Mismatch("executemany with a duplicate key succeeded")
    except psycopg.errors.UniqueViolation:
        conn.rollback()
    with psycopg.connect(url) as fresh:
        expect(one(fresh, "select count(*) from items"), 1100, "seen from another session")
        expect(one(fresh, "select count(*) from items where name = 'half'"), 0, "half-way rows")
    conn.close()


def copy(url):
    setup(
        url,
        "create table cp (id int primary key, name text not null, note text, amount numeric);"
        "create table cpb (id int primary key, name text not null, amount numeric)",
    )
    rows = []
    for i in range(1, 3001):
        note = None if i % 11 == 0 else f"note\t{i}\nline two \\ ü"
        rows.append((i, f"name-{i}", note, Decimal(i) / 100))
    conn = psycopg.connect(url)
    with conn.cursor() as cur:
        with cur.copy("copy cp (id, name, note, amount) from stdin") as cp:
            for r in rows:
                cp.write_row(r)
        expect(cur.rowcount, 3000, "rowcount of COPY FROM")
    conn.commit()
    expect(one(conn, "select count(*) from cp"), 3000, "rows after COPY FROM")
    expect(one(conn, "select count(note) from cp"), 3000 - 3000 // 11, "non-null notes")
    conn.commit()

    with conn.cursor() as cur:
        got = []
        with cur.copy("copy (select id, name, note, amount from cp order by id) to stdout") as cp:
            cp.set_types(["int4", "text", "text", "numeric"])
            got.extend(cp.rows())
    expect(len(got), 3000, "rows from COPY TO")
    for want, have in zip(rows, got):
        expect(have, want, f"COPY TO row {want[0]}")
    conn.commit()

    # Binary COPY both ways.
    brows = [(i, f"b-{i}", Decimal(i) * Decimal("1.5")) for i in range(1, 2001)]
    with conn.cursor() as cur:
        with cur.copy("copy cpb (id, name, amount) from stdin (format binary)") as cp:
            cp.set_types(["int4", "text", "numeric"])
            for r in brows:
                cp.write_row(r)
        with cur.copy("copy (select * from cpb order by id) to stdout (format binary)") as cp:
            cp.set_types(["int4", "text", "numeric"])
            got = list(cp.rows())
    expect(got, brows, "binary COPY round trip")
    conn.commit()

    # A COPY that the client aborts half-way (CopyFail) leaves nothing; the session goes on.
    class Abort(Exception):
        pass

    try:
        with conn.cursor() as cur:
            with cur.copy("copy cp (id, name) from stdin") as cp:
                for i in range(10000, 11000):
                    cp.write_row((i, "aborted"))
                raise Abort()
    except Abort:
        pass
    except psycopg.errors.QueryCanceled:
        pass
    conn.rollback()
    expect(one(conn, "select count(*) from cp where id >= 10000"), 0, "after aborted COPY")
    conn.commit()

    # A COPY the server rejects half-way (bad row) also leaves nothing.
    try:
        with conn.cursor() as cur:
            with cur.copy("copy cp (id, name) from stdin") as cp:
                for i in range(20000, 21000):
                    cp.write(f"{i}\tok\n")
                cp.write("not-an-int\tbad\n")
                for i in range(21000, 21500):
                    cp.write(f"{i}\tok\n")
        raise Mismatch("COPY with a bad row succeeded")
    except psycopg.errors.InvalidTextRepresentation:
        pass
    conn.rollback()
    expect(one(conn, "select count(*) from cp"), 3000, "after rejected COPY")
    conn.commit()
    conn.close()


SCHEMAS = ("sa", "sb", "sc")


def make_schemas(url):
    setup(
        url,
        ";".join(
            f"create schema {s}; create table {s}.t (x text); insert into {s}.t values ('{s}')"
            for s in SCHEMAS
        ),
    )


def search_path(url):
    """Each connection sets its own search_path in a committed transaction; later
    transactions, served by whatever server connection the pool lends, still see it."""
    make_schemas(url)
    conns = [psycopg.connect(url) for _ in SCHEMAS]
    for c, s in zip(conns, SCHEMAS):
        c.execute(f"set search_path = {s}, public")
        c.commit()
    auto = psycopg.connect(url, autocommit=True)
    auto.execute("set search_path to sb")
    for rnd in range(12):
        order = list(range(len(SCHEMAS)))
        order = order[rnd % 3 :] + order[: rnd % 3]
        for i in order:
            c, s = conns[i], SCHEMAS[i]
            expect(one(c, "show search_path"), f"{s}, public", f"round {rnd}: search_path of {s}")
            expect(one(c, "select x from t"), s, f"round {rnd}: table t seen by {s}")
        # While all three hold a transaction, the autocommit client must use a fourth.
        expect(one(auto, "show search_path"), "sb", f"round {rnd}: autocommit search_path")
        expect(one(auto, "select x from t"), "sb", f"round {rnd}: autocommit table")
        for i in reversed(order) if rnd % 2 else order:
            conns[i].commit()
        expect(one(auto, "select x from t"), "sb", f"round {rnd}: autocommit between")

    # A new SET replaces the old one everywhere; RESET goes back to the default.
    c = conns[0]
    c.execute("set search_path = sc")
    c.commit()
    for _ in range(3):
        conns[1].execute("select 1")  # holds another server connection
        expect(one(c, "select x from t"), "sc", "after a second SET")
        c.commit()
        conns[1].commit()
    c.execute("reset search_path")
    c.commit()
    for _ in range(3):
        conns[2].execute("select 1")
        expect(one(c, "show search_path"), '"$user", public', "after RESET")
        c.commit()
        conns[2].commit()

    for conn in conns + [auto]:
        conn.close()


def search_path_prepared(url):
    """With prepare_threshold = 0 psycopg runs even SET as a named prepared statement
    (Parse with a name, then Bind/Execute); the setting must follow the client all the
    same."""
    make_schemas(url)
    p = psycopg.connect(url, prepare_threshold=0)
    holders = [psycopg.connect(url) for _ in range(2)]
    p.execute("set search_path = sc, public")
    p.commit()
    for rnd in range(6):
        held = holders[: rnd % 3]
        for h in held:
            h.execute("select 1")  # takes a server connection, maybe the one p just used
        expect(one(p, "show search_path", prepare=False), "sc, public", f"round {rnd}")
        expect(one(p, "select x from t"), "sc", f"round {rnd}: table t")
        p.commit()
        for h in held:
            h.commit()
    for conn in [p] + holders:
        conn.close()


def set_rollback(url):
    """Postgres undoes a SET whose transaction rolls back and ends a SET LOCAL with its
    transaction; the proxy must not carry either to the client's next transaction."""
    make_schemas(url)
    c = psycopg.connect(url)
    holders = [psycopg.connect(url) for _ in range(2)]
    default = '"$user", public'

    def check(want, what):
        # Hold 0, 1 or 2 other server connections so that this client's next
        # transactions land on different server connections.
        for n in range(3):
            for h in holders[:n]:
                h.execute("select 1")
            expect(one(c, "show search_path"), want, f"{what} ({n} held)")
            c.commit()
            for h in holders[:n]:
                h.commit()

    c.execute("set search_path = sa")
    c.rollback()
    check(default, "SET in a rolled-back transaction")

    c.execute("set search_path = sb")
    c.commit()
    c.execute("set search_path = sc")
    c.rollback()
    check("sb", "committed SET, then a rolled-back SET")

    c.execute("set local search_path = sa")
    expect(one(c, "show search_path"), "sa", "SET LOCAL inside its transaction")
    c.commit()
    check("sb", "after SET LOCAL")

    # A SET before an error in the same transaction is undone by the rollback.
    c.execute("set search_path = sc")
    try:
        c.execute("select 1/0")
        raise Mismatch("division by zero did not fail")
    except psycopg.errors.DivisionByZero:
        pass
    c.rollback()
    check("sb", "SET in a transaction that failed")

    for conn in [c] + holders:
        conn.close()


def set_savepoint(url):
    """ROLLBACK TO SAVEPOINT undoes a SET made after the savepoint; the transaction
    itself commits."""
    make_schemas(url)
    c = psycopg.connect(url)
    holders = [psycopg.connect(url) for _ in range(2)]
    c.execute("set search_path = sb")
    c.commit()
    c.execute("savepoint s1")
    c.execute("set search_path = sa")
    c.execute("rollback to savepoint s1")
    expect(one(c, "show search_path"), "sb", "right after ROLLBACK TO SAVEPOINT")
    c.commit()
    for n in range(3):
        for h in holders[:n]:
            h.execute("select 1")
        expect(one(c, "show search_path"), "sb", f"after the commit ({n} held)")
        c.commit()
        for h in holders[:n]:
            h.commit()
    for conn in [c] + holders:
        conn.close()


SCENARIOS = {
    f.__name__: f
    for f in (
        prepared,
        prepared_eviction,
        executemany_rollback,
        copy,
        search_path,
        search_path_prepared,
        set_rollback,
        set_savepoint,
    )
}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in SCENARIOS:
        print(f"usage: {sys.argv[0]} URL {{{'|'.join(SCENARIOS)}}}", file=sys.stderr)
        return 64
    url, name = sys.argv[1], sys.argv[2]
    print(f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}), scenario {name}")
    try:
        SCENARIOS[name](url)
    except Mismatch as exc:
        print(f"MISMATCH in {name}: {exc}", file=sys.stderr)
        traceback.print_exc()
        return 1
    except Exception as exc:  # a client error is a failure too, with its SQLSTATE
        state = getattr(getattr(exc, "diag", None), "sqlstate", None)
        print(f"ERROR in {name}: {type(exc).__name__} (SQLSTATE {state}): {exc}", file=sys.stderr)
        traceback.print_exc()
        return 1
    print(f"{name}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
