#!/usr/bin/env bash
# Move benchmark: a tenant moved back and forth between two shards N times with
# `shardctl move` while pgbench writers (inserts and updates, the moving tenant and others)
# run through shardgate. Prints the gate hold time of every move, its p50 and max, and
# pgbench's failed transactions (which must be 0: clients never see a move).
#
# Usage: tools/bench/move.sh [--moves N] [--rows R] [--clients C]
# Needs: Postgres binaries (initdb, pg_ctl), pgbench, psql, python3, cargo.
set -euo pipefail

MOVES=20 ROWS=100000 CLIENTS=8
while [ $# -gt 0 ]; do
  case "$1" in
    --moves) MOVES=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

. "$(dirname "$0")/lib.sh"
bench_workdir move

start_pg() { # name -> port
  local port; port=$(free_port)
  as_pg "$bindir/initdb" -D "$work/$1" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$work/pw" -E UTF8 --locale=C >/dev/null
  cat >> "$work/$1/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
fsync = off
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
EOF
  as_pg "$bindir/pg_ctl" -D "$work/$1" -l "$work/$1.log" -w start >/dev/null
  echo "$port"
}
q() { psql -qX -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres "$@"; }

(cd "$repo" && cargo build --release -q -p shardgate -p shardctl)
cat_port=$(start_pg pgcat); s0=$(start_pg pg0); s1=$(start_pg pg1)
q -p "$cat_port" -c "create database shardgate" postgres
for p in "$s0" "$s1"; do
  q -p "$p" -c "create database app" postgres
  q -p "$p" -d app -c "create table orders (tenant_id bigint, id bigint, note text, n int default 0, primary key (tenant_id, id))"
done
export SHARDGATE_CATALOG="postgres://postgres:bench-pw@127.0.0.1:$cat_port/shardgate"
ctl() { "$repo/target/release/shardctl" "$@"; }
ctl init >/dev/null
ctl shard add --name s0 --url "postgres://postgres:bench-pw@127.0.0.1:$s0/app" >/dev/null
ctl shard add --name s1 --url "postgres://postgres:bench-pw@127.0.0.1:$s1/app" >/dev/null
ctl tenant set 1 --shard s0 >/dev/null

sg_port=$(free_port)
cat > "$work/sg.toml" <<EOF
[proxy]
listen = "127.0.0.1:$sg_port"
[[users]]
name = "postgres"
password = "bench-pw"
[sharding]
sharded_tables = ["orders"]
[catalog]
url = "$SHARDGATE_CATALOG"
poll_ms = 200
EOF
RUST_LOG=warn "$repo/target/release/shardgate" --config "$work/sg.toml" > "$work/sg.log" 2>&1 &
echo $! > "$work/sg.pid"
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$sg_port" && break; sleep 0.1; done
sgq() { q -p "$sg_port" -d app "$@"; }
sgq -c "/* tenant_id=1 */ insert into orders (tenant_id, id, note) select 1, g, 'row ' || g from generate_series(1, $ROWS) g"
for t in 2 3 4 5; do
  sgq -c "/* tenant_id=$t */ insert into orders (tenant_id, id, note) select $t, g, 'row ' || g from generate_series(1, 1000) g"
done

# Writers: half the transactions touch the moving tenant. Its inserts reuse a bounded id
# range (at most doubling it), so every move copies and verifies about the same data.
cat > "$work/writers.sql" <<EOF
\set t random(1, 5)
\set id random(1, 1000)
\set new random(1, 2 * $ROWS)
INSERT INTO orders (tenant_id, id, note) VALUES (1, :new, 'new') ON CONFLICT DO NOTHING;
UPDATE orders SET n = n + 1 WHERE tenant_id = :t AND id = :id;
EOF
pgbench -n -f "$work/writers.sql" -c "$CLIENTS" -j 2 -T 100000 -M prepared \
  -h 127.0.0.1 -p "$sg_port" -U postgres app > "$work/pgbench.out" 2>&1 &
bench_pid=$!
echo "$bench_pid" > "$work/pgbench.pid"
sleep 2

echo "moving tenant 1 ($ROWS rows) $MOVES times between s0 and s1 under $CLIENTS writers, $(nproc) cores"
to=s1
for i in $(seq "$MOVES"); do
  out=$(ctl move --tenant 1 --to "$to" --format json 2>>"$work/move.err") || { echo "move $i failed:"; tail -5 "$work/move.err"; exit 1; }
  hold=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["gate_hold_ms"])' "$out")
  echo "move $i -> $to: gate held $hold ms"
  echo "$hold" >> "$work/holds"
  [ "$to" = s1 ] && to=s0 || to=s1
done
# (A background job of a script ignores SIGINT: TERM it.)
kill "$bench_pid" 2>/dev/null || true; wait "$bench_pid" 2>/dev/null || true
errors=$(grep -ciE "error|aborted" "$work/pgbench.out" || true)
echo "pgbench: $errors error lines (each would be a failed client statement)"; [ "$errors" = 0 ] || head -5 "$work/pgbench.out"
echo "gate hold by step (ms), per move:"
q -p "$cat_port" -d shardgate -At -c \
  "select detail->>'steps_ms' from shardgate.events where kind = 'move_flipped' order by event_id"
python3 - "$work/holds" <<'EOF'
import sys, statistics
h = sorted(int(l) for l in open(sys.argv[1]))
print(f"gate hold over {len(h)} moves: p50 {statistics.median(h):.0f} ms, max {h[-1]} ms")
EOF
