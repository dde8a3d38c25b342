#!/usr/bin/env bash
# Routing benchmark: a tenant-keyed point-read script (pgbench, 16 clients) through
# shardgate over 4 shards, against the same script through shardgate over 1 shard (plain
# pass-through: every tenant on the one shard), interleaved in one run. Prints the ratio.
#
# Both proxies get the same server connections in total (--pool-total, default 20): the
# one shard all of them, each of the four a quarter. Every shard shares this machine's
# cores, so a 4-shard proxy with 20 connections per shard would run four times
# the backends on the same CPUs and measure the scheduler, not the routing.
#
# Usage: tools/bench/routing.sh [--clients N] [--seconds S] [--rounds R] [--tenants T]
#        [--modes "simple extended prepared"] [--pool-total N] [--layout clusters|databases|auto]
#
# --layout databases puts the four shards in four databases of one cluster instead of four
# clusters: the proxy routes exactly the same (four shards in its map, four pools, four sets
# of server connections), but the machine runs one postmaster and one buffer pool, which
# separates the proxy's cost of routing from a small box's cost of hosting four Postgres
# instances. On 2 cores, four clusters alone cost the 4-shard side ~15 % of its TPS while
# the proxy's work per transaction is the same within 1 % (callgrind). The default, auto,
# picks clusters where the machine has two cores for each of the five instances and
# databases below that.
# Needs: Postgres binaries (initdb, pg_ctl), pgbench, psql, cargo.
set -euo pipefail

CLIENTS=16 SECS=10 ROUNDS=3 TENANTS=1000 ROWS=100 MODES="simple extended prepared" POOL_TOTAL=20 LAYOUT=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --tenants) TENANTS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --pool-total) POOL_TOTAL=$2; shift 2 ;;
    --layout) LAYOUT=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

. "$(dirname "$0")/lib.sh"
bench_workdir routing

start_pg() { # name [databases...] -> port
  local port; port=$(free_port)
  as_pg "$bindir/initdb" -D "$work/$1" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$work/pw" -E UTF8 --locale=C >/dev/null
  cat >> "$work/$1/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
max_connections = 100
fsync = off
synchronous_commit = off
shared_buffers = 64MB
EOF
  as_pg "$bindir/pg_ctl" -D "$work/$1" -l "$work/$1.log" -w start >/dev/null
  local name=$1; shift
  for db in "${@:-app}"; do
    psql -qX -h 127.0.0.1 -p "$port" -U postgres -c "create database $db" postgres
    psql -qX -h 127.0.0.1 -p "$port" -U postgres -d "$db" -c \
      "create table accounts (tenant_id bigint, aid int, abalance int, primary key (tenant_id, aid))"
  done
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

config() { # file, host:port/db...
  local f=$1; shift
  { printf '[proxy]\nlisten = "127.0.0.1:0"\n[[users]]\nname = "postgres"\npassword = "bench-pw"\n'
    printf '[sharding]\nsharded_tables = ["accounts"]\n'
    local i=0 pool=$(( (POOL_TOTAL + $# - 1) / $# ))
    for p in "$@"; do
      printf '[[shards]]\nid = %d\nname = "s%d"\nurl = "postgres://postgres:bench-pw@%s"\npool_size = %d\n' $i $i "$p" "$pool"
      i=$((i+1))
    done; } > "$f"
}

if [ "$LAYOUT" = auto ]; then
  if [ "$(nproc)" -ge 10 ]; then LAYOUT=clusters; else LAYOUT=databases; fi
fi
(cd "$repo" && cargo build --release -q -p shardgate)
one=$(start_pg pg1)
four=()
case "$LAYOUT" in
  clusters) for i in 0 1 2 3; do four+=("127.0.0.1:$(start_pg "pg4_$i")/app"); done ;;
  databases) p=$(start_pg pg4 app0 app1 app2 app3); for i in 0 1 2 3; do four+=("127.0.0.1:$p/app$i"); done ;;
  *) echo "unknown layout $LAYOUT" >&2; exit 2 ;;
esac
config "$work/one.toml" "127.0.0.1:$one/app"; config "$work/four.toml" "${four[@]}"
p1=$(proxy "$work/one.toml"); p4=$(proxy "$work/four.toml")

# The same rows through each proxy: one multi-row INSERT per tenant, routed to its shard.
python3 - "$TENANTS" "$ROWS" > "$work/load.sql" <<'EOF'
import sys
tenants, rows = int(sys.argv[1]), int(sys.argv[2])
for t in range(1, tenants + 1):
    vals = ", ".join(f"({t}, {a}, 0)" for a in range(1, rows + 1))
    print(f"insert into accounts (tenant_id, aid, abalance) values {vals};")
EOF
for p in "$p1" "$p4"; do psql -qX -h 127.0.0.1 -p "$p" -U postgres -d app -f "$work/load.sql" >/dev/null; done
cat > "$work/script.sql" <<EOF
\set t random(1, $TENANTS)
\set aid random(1, $ROWS)
SELECT abalance FROM accounts WHERE tenant_id = :t AND aid = :aid;
EOF

run() { # label port mode proxy-pid
  local out tps failed before
  before=$(cpu_ticks "$4")
  out=$(pgbench -n -f "$work/script.sql" -M "$3" -c "$CLIENTS" -j 2 -T "$SECS" -h 127.0.0.1 -p "$2" -U postgres app 2>&1) || true
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out"); failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
  echo "$1 $3 ${tps:-0} ${failed:-error} $(cpu_us_per_tx $(( $(cpu_ticks "$4") - before )) "${tps:-0}" "$SECS")" >> "$work/results"
}
echo "tenant-keyed point reads, $CLIENTS clients, ${SECS}s runs, $ROUNDS rounds, $TENANTS tenants x $ROWS rows, $POOL_TOTAL server connections in all, 4 shards as $LAYOUT, $(nproc) cores"
for r in $(seq "$ROUNDS"); do
  for m in $MODES; do run one_shard "$p1" "$m" "$(cat "$work/one.toml.pid")"; run four_shards "$p4" "$m" "$(cat "$work/four.toml.pid")"; done
  echo "round $r done"
done
python3 - "$work/results" <<'EOF'
import statistics, sys, collections
rows = collections.defaultdict(list); failed = collections.defaultdict(list)
cpu = collections.defaultdict(list); modes = []
for line in open(sys.argv[1]):
    t, m, tps, f, cpu_us = line.split()  # cpu_us: the proxy's CPU per transaction
    rows[(t, m)].append(float(tps)); failed[(t, m)].append(f); cpu[(t, m)].append(float(cpu_us))
    if m not in modes: modes.append(m)
print(f"{'mode':9} {'1 shard':>9} {'4 shards':>9} {'ratio':>6}  proxy CPU/tx (1 / 4)  failed (1 / 4)")
for m in modes:
    a, b = statistics.median(rows[("one_shard", m)]), statistics.median(rows[("four_shards", m)])
    ca, cb = statistics.median(cpu[("one_shard", m)]), statistics.median(cpu[("four_shards", m)])
    print(f"{m:9} {a:9.0f} {b:9.0f} {b / a if a else float('nan'):6.2f}  "
          f"{ca:8.1f} / {cb:5.1f} us      "
          f"{','.join(failed[('one_shard', m)])} / {','.join(failed[('four_shards', m)])}")
EOF
