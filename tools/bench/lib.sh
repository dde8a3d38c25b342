# Sourced by the benchmark scripts: the machine's Postgres binaries, free loopback ports,
# running as the postgres OS user when root, and a scratch directory whose processes
# (any *.pid file in it) and clusters (its pg* and data directories) are stopped and
# removed on exit. Call `bench_workdir NAME` once; it sets $work and PGPASSWORD=bench-pw
# (also written to $work/pw for initdb).

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/initdb" ] || { echo "no Postgres binaries under /usr/lib/postgresql" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# CPU time (user + system) a process has used so far, in clock ticks of $tick_hz a second.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick_hz=$(getconf CLK_TCK)
# Microseconds of CPU per transaction: TICKS used over a run of SECONDS at TPS ("nan" when
# nothing ran).
cpu_us_per_tx() { # ticks tps seconds
  awk -v d="$1" -v tps="$2" -v s="$3" -v hz="$tick_hz" \
    'BEGIN { if (tps > 0) printf "%.1f", d / hz * 1e6 / (tps * s); else print "nan" }'
}

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

bench_cleanup() {
  # Processes started inside $(...) run in a subshell: their pids travel in files.
  for f in "$work"/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for d in "$work"/pg* "$work"/data; do
    [ -d "$d" ] && as_pg "$bindir/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}

bench_workdir() { # name
  work=$(mktemp -d "/tmp/sg-$1.XXXXXX")
  chmod 755 "$work"; [ "$(id -u)" = 0 ] && chown postgres "$work"
  trap bench_cleanup EXIT
  trap "exit 130" INT TERM
  echo "bench-pw" > "$work/pw"; [ "$(id -u)" = 0 ] && chown postgres "$work/pw"
  export PGPASSWORD=bench-pw
}
