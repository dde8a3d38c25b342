#!/usr/bin/env bash
# Pass-through benchmark: pgbench -S against one Postgres directly, through PgBouncer
# (transaction pooling) and through shardgate (transaction pooling), in simple, extended and
# prepared modes. Targets are interleaved within each round so that drift on a shared
# machine hits all three alike; the medians of the rounds are compared as ratios.
# It also prints each proxy's CPU time (user + system, from /proc) per transaction: on a
# box where the proxies share two cores with Postgres and pgbench, that is the steadier
# figure behind the ratios.
#
# Usage: tools/bench/passthrough.sh [--clients N] [--seconds S] [--rounds R] [--scale K]
#        [--workers W]
# Needs: Postgres binaries (initdb, pg_ctl), pgbench, pgbouncer (Debian package), cargo.
set -euo pipefail

CLIENTS=16 SECONDS_PER_RUN=10 ROUNDS=3 SCALE=10 WORKERS=0 MODES="simple extended prepared"
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --scale) SCALE=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

. "$(dirname "$0")/lib.sh"
command -v pgbouncer >/dev/null || { echo "pgbouncer missing: apt-get install pgbouncer" >&2; exit 1; }
bench_workdir bench

pg_port=$(free_port); pgb_port=$(free_port); sg_port=$(free_port)
as_pg "$bindir/initdb" -D "$work/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --pwfile="$work/pw" -E UTF8 --locale=C >/dev/null
cat >> "$work/data/postgresql.conf" <<EOF
port = $pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
max_connections = 200
fsync = off
synchronous_commit = off
shared_buffers = 256MB
EOF
as_pg "$bindir/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
psql -qX -h 127.0.0.1 -p "$pg_port" -U postgres -c "create database app" postgres
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$pg_port" -U postgres app >/dev/null 2>&1

cat > "$work/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$pg_port dbname=app user=postgres password=bench-pw
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgb_port
unix_socket_dir =
auth_type = plain
auth_file = $work/users.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 500
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
EOF
echo '"postgres" "bench-pw"' > "$work/users.txt"
[ "$(id -u)" = 0 ] && chown postgres "$work"/pgbouncer.ini "$work/users.txt"
as_pg pgbouncer -d "$work/pgbouncer.ini"

cat > "$work/shardgate.toml" <<EOF
[proxy]
listen = "127.0.0.1:$sg_port"
pool_mode = "transaction"
workers = $WORKERS
[auth]
method = "scram-sha-256"
[[users]]
name = "postgres"
password = "bench-pw"
[[shards]]
id = 0
name = "s0"
url = "postgres://postgres:bench-pw@127.0.0.1:$pg_port/app"
pool_size = 20
EOF
(cd "$repo" && cargo build --release -q -p shardgate)
RUST_LOG=warn "$repo/target/release/shardgate" --config "$work/shardgate.toml" >"$work/shardgate.log" 2>&1 &
echo $! > "$work/sg.pid"
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p "$sg_port" && break; sleep 0.1; done

run() { # target port mode -> "tps failed proxy_cpu_us_per_tx"
  local out pid= t0=
  case "$1" in
    pgbouncer) pid=$(cat "$work/pgbouncer.pid") ;;
    shardgate) pid=$(cat "$work/sg.pid") ;;
  esac
  [ -n "$pid" ] && t0=$(cpu_ticks "$pid")
  out=$(pgbench -n -S -M "$3" -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" -h 127.0.0.1 -p "$2" -U postgres app 2>&1) || true
  local tps failed
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
  [ -n "$tps" ] || { tps=0; failed=error; }
  local cpu_us=nan  # direct: no proxy
  [ -n "$pid" ] && cpu_us=$(cpu_us_per_tx $(( $(cpu_ticks "$pid") - t0 )) "$tps" "$SECONDS_PER_RUN")
  echo "$1 $3 ${tps} ${failed:-0} ${cpu_us}" >> "$work/results"
}

echo "pgbench -S, $CLIENTS clients, ${SECONDS_PER_RUN}s runs, $ROUNDS rounds, $(nproc) cores, scale $SCALE"
for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    for target in direct:$pg_port pgbouncer:$pgb_port shardgate:$sg_port; do
      run "${target%%:*}" "${target##*:}" "$mode"
    done
  done
  echo "round $round done"
done

python3 - "$work/results" <<'EOF'
import statistics, sys, collections
rows = collections.defaultdict(list); failed = collections.defaultdict(list)
cpu = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, m, tps, f, c = line.split()
    rows[(t, m)].append(float(tps)); failed[(t, m)].append(f); cpu[(t, m)].append(float(c))
modes = []
for (_, m) in rows:
    if m not in modes: modes.append(m)
print(f"{'mode':9} {'direct':>9} {'pgbouncer':>10} {'shardgate':>10} {'pgb/direct':>10} {'sg/direct':>10} {'sg/pgb':>7}  failed(pgb, sg)")
for m in modes:
    med = {t: statistics.median(rows[(t, m)]) for t in ("direct", "pgbouncer", "shardgate")}
    r = lambda a, b: med[a] / med[b] if med[b] else float("nan")
    print(f"{m:9} {med['direct']:9.0f} {med['pgbouncer']:10.0f} {med['shardgate']:10.0f} "
          f"{r('pgbouncer','direct'):10.2f} {r('shardgate','direct'):10.2f} {r('shardgate','pgbouncer'):7.2f}  "
          f"{','.join(failed[('pgbouncer', m)])} / {','.join(failed[('shardgate', m)])}")
print("proxy CPU (user + system) per transaction, medians, microseconds:")
for m in modes:
    c = {t: statistics.median(cpu[(t, m)]) for t in ("pgbouncer", "shardgate")}
    print(f"{m:9} pgbouncer {c['pgbouncer']:6.1f}  shardgate {c['shardgate']:6.1f}")
EOF
