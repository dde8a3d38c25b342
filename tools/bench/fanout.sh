#!/usr/bin/env bash
# Fan-out benchmark: a cross-shard report, `SELECT sum(amount_cents) FROM orders`, through
# shardgate over 4 shards, against the same query on one of those shards (which holds a
# quarter of the rows) directly and through shardgate's pass-through, interleaved in one
# run. Prints p50/p99 latency of each and the fan-out's tail amplification (its p99 over
# the single shard's).
#
# Usage: tools/bench/fanout.sh [--clients N] [--seconds S] [--rounds R] [--rows-per-shard N]
# Needs: Postgres binaries (initdb, pg_ctl), pgbench, psql, cargo.
set -euo pipefail

CLIENTS=4 SECS=10 ROUNDS=3 ROWS=100000
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --rows-per-shard) ROWS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

. "$(dirname "$0")/lib.sh"
bench_workdir fanout

start_pg() { # name shard-index -> port
  local port; port=$(free_port)
  as_pg "$bindir/initdb" -D "$work/$1" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$work/pw" -E UTF8 --locale=C >/dev/null
  cat >> "$work/$1/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
fsync = off
synchronous_commit = off
shared_buffers = 128MB
max_parallel_workers_per_gather = 0
EOF
  as_pg "$bindir/pg_ctl" -D "$work/$1" -l "$work/$1.log" -w start >/dev/null
  psql -qX -h 127.0.0.1 -p "$port" -U postgres -c "create database app" postgres
  # Tenant ids 4k+i on shard i; the rows are the same size everywhere.
  psql -qX -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d app \
    -c "create table orders (tenant_id bigint, order_id bigint, amount_cents bigint, primary key (tenant_id, order_id))" \
    -c "insert into orders select 4 * (g % 250) + $2, g, (g * 7919) % 100000 from generate_series(1, $ROWS) g" \
    -c "vacuum analyze orders"
  echo "$port"
}

proxy() { # config-file -> starts shardgate, echoes port
  local port; port=$(free_port)
  sed -i "s/^listen = .*/listen = \"127.0.0.1:$port\"/" "$1"
  RUST_LOG=warn "$repo/target/release/shardgate" --config "$1" >"$1.log" 2>&1 &
  echo $! > "$1.pid"
  for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.1; done
  echo "$port"
}

config() { # file, ports...
  local f=$1; shift
  { printf '[proxy]\nlisten = "127.0.0.1:0"\n[[users]]\nname = "postgres"\npassword = "bench-pw"\n'
    printf '[sharding]\nsharded_tables = ["orders"]\n'
    local i=0
    for p in "$@"; do
      printf '[[shards]]\nid = %d\nname = "s%d"\nurl = "postgres://postgres:bench-pw@127.0.0.1:%d/app"\npool_size = 8\n' $i $i "$p"
      i=$((i+1))
    done; } > "$f"
}

(cd "$repo" && cargo build --release -q -p shardgate)
ports=(); for i in 0 1 2 3; do ports+=("$(start_pg "pg$i" "$i")"); done
config "$work/four.toml" "${ports[@]}"; config "$work/one.toml" "${ports[0]}"
p4=$(proxy "$work/four.toml"); p1=$(proxy "$work/one.toml")
echo "SELECT sum(amount_cents) FROM orders;" > "$work/report.sql"

run() { # label port
  local dir="$work/log-$1-$RANDOM"; mkdir "$dir"
  (cd "$dir" && pgbench -n -f "$work/report.sql" -c "$CLIENTS" -j 2 -T "$SECS" -l \
     -h 127.0.0.1 -p "$2" -U postgres app > "$dir/out" 2>&1) || true
  grep -q "^tps" "$dir/out" || { echo "pgbench against $1 failed:" >&2; head -20 "$dir/out" >&2; }
  # pgbench -l: one line per transaction, latency in microseconds in field 3.
  cat "$dir"/pgbench_log.* | awk -v l="$1" '{print l, $3}' >> "$work/latencies"
}
echo "sum(amount_cents) over $((4 * ROWS)) rows: 4 shards x $ROWS, $CLIENTS clients, ${SECS}s runs, $ROUNDS rounds, $(nproc) cores"
for r in $(seq "$ROUNDS"); do
  run direct_one_shard "${ports[0]}"; run proxy_one_shard "$p1"; run fanout_four_shards "$p4"
  echo "round $r done"
done
python3 - "$work/latencies" <<'EOF'
import sys, collections
lat = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, us = line.split()
    lat[label].append(int(us) / 1000)
def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]
print(f"{'':22} {'queries':>8} {'p50 ms':>8} {'p99 ms':>8}")
for label in ("direct_one_shard", "proxy_one_shard", "fanout_four_shards"):
    xs = lat[label]
    print(f"{label:22} {len(xs):8} {pct(xs, 50):8.2f} {pct(xs, 99):8.2f}")
d, f = lat["direct_one_shard"], lat["fanout_four_shards"]
print(f"tail amplification (fan-out p99 / one shard p99): {pct(f, 99) / pct(d, 99):.2f}; "
      f"p50 ratio {pct(f, 50) / pct(d, 50):.2f}")
EOF
