#!/bin/sh
# bench/register_cpu.sh — the daemon's CPU time per authenticated registration, and optionally
# a profile of it, over a bounded load (docs/benchmarks.md, "CPU per registration").
#
# Starts clicktodial (twistd -n, [log] level = warn, digest_algorithms = MD5, [limits] off)
# on a SQLite file or PostgreSQL, imports USERS users, then runs bench/regload.py ROUNDS
# times: COUNT registrations at RATE/s each. Before and after each round it reads utime +
# stime of the daemon (all threads) from /proc/PID/stat and prints the CPU per registration
# (one registration = REGISTER → 401 → REGISTER with credentials → 200). The first round
# registers new AORs; later rounds, with COUNT ≤ USERS, refresh existing bindings.
#
# PROFILE=py-spy writes a py-spy flame graph (SVG; --gil) of the last round to
# $PROFILE_OUT (default /tmp/register-profile.svg); PROFILE=raw writes collapsed stacks;
# PYSPY_ARGS replaces --gil (e.g. PYSPY_ARGS=--threads: every running thread).
# PROFILE=perf records native stacks with `perf record -F 999 -g` (kernel, interpreter, SQLite,
# libc: what py-spy cannot see) to $PROFILE_OUT; read it with `perf report -i FILE`.
#
# Usage: STORE=sqlite|postgresql COUNT=3000 RATE=300 ROUNDS=2 bench/register_cpu.sh
# Runs in a private network namespace (re-runs itself under `unshare -n`): loopback only.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${REGISTER_BENCH_NETNS:-}" ]; then
    REGISTER_BENCH_NETNS=1 exec unshare -n "$0" "$@"
fi
STORE=${STORE:-sqlite}
USERS=${USERS:-10000}
COUNT=${COUNT:-3000}
RATE=${RATE:-300}
ROUNDS=${ROUNDS:-2}
PROFILE=${PROFILE:-}
PROFILE_OUT=${PROFILE_OUT:-/tmp/register-profile.svg}
PG_SOCKET=/var/run/postgresql
PG_DB=clicktodial_bench_cpu
PORT=45260
WEB_PORT=45280

ip link set lo up
WORK=$(mktemp -d /tmp/register-cpu.XXXXXX)
DAEMON=""
cleanup() {
    if [ -n "$DAEMON" ]; then kill "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; fi
    if [ "$STORE" = postgresql ]; then
        psql -q -U postgres -h "$PG_SOCKET" -c "DROP DATABASE IF EXISTS $PG_DB" > /dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "
import sys
with open('$WORK/users.csv', 'w') as f:
    f.writelines(f'u{i:05d},p{i:05d}\n' for i in range($USERS))"

case $STORE in
sqlite) URL="sqlite:///$WORK/clicktodial.sqlite" ;;
postgresql)
    psql -q -U postgres -h "$PG_SOCKET" -c "DROP DATABASE IF EXISTS $PG_DB" \
        -c "CREATE DATABASE $PG_DB" > /dev/null
    URL="postgresql+psycopg://postgres@/$PG_DB?host=$PG_SOCKET" ;;
*) echo "STORE must be sqlite or postgresql" >&2; exit 2 ;;
esac
LIMITS=$(python3 -c '
from clicktodial.config import iter_settings
keys = {(s, k) for s, k, _ in iter_settings()}
lines = [f"{k} = 0" for k in ("rate_max_requests", "max_transactions") if ("limits", k) in keys]
print("\n".join(["[limits]"] + lines) if lines else "")')
cat > "$WORK/clicktodial.ini" <<EOF
[sip]
domain = 127.0.0.1
listen = 127.0.0.1:$PORT
transports = udp
udp_buffer = 4194304
[registrar]
digest_algorithms = MD5
# Thousands of first registrations at once from the generator's one address: the
# guess limit's exact count would answer the excess 503 (docs/registrar.md, Throttling).
auth_refuse_after = 0
[web]
listen = tcp:$WEB_PORT:interface=127.0.0.1
[store]
url = $URL
[log]
level = warn
file = $WORK/clicktodial.log
$LIMITS
EOF
python3 -m clicktodial.cli --config "$WORK/clicktodial.ini" db upgrade > /dev/null
python3 -m clicktodial.cli --config "$WORK/clicktodial.ini" user import "$WORK/users.csv" > /dev/null
(cd "$WORK" && exec python3 -c "from twisted.scripts.twistd import run; run()" \
    -n --pidfile= clicktodial --config "$WORK/clicktodial.ini" > "$WORK/twistd.out" 2>&1) &
DAEMON=$!
sleep 5

cpu() {  # utime and stime of the daemon, in clock ticks
    awk '{ print $14 " " $15 }' "/proc/$DAEMON/stat"
}
switches() {  # context switches of all the daemon's threads (GIL hand-offs, wake-ups)
    cat /proc/$DAEMON/task/*/status | awk '/ctxt_switches/ { n += $2 } END { print n }'
}
HZ=$(getconf CLK_TCK)
round=1
while [ "$round" -le "$ROUNDS" ]; do
    spy=""
    if [ "$PROFILE" = perf ] && [ "$round" -eq "$ROUNDS" ]; then
        perf record -F 999 -g -o "$PROFILE_OUT" -p "$DAEMON" > "$WORK/perf.out" 2>&1 &
        spy=$!
        sleep 1
    elif [ -n "$PROFILE" ] && [ "$round" -eq "$ROUNDS" ]; then
        fmt=flamegraph; [ "$PROFILE" = raw ] && fmt=raw
        py-spy record ${PYSPY_ARGS:---gil} --nonblocking -r 250 -f "$fmt" -o "$PROFILE_OUT" -p "$DAEMON" \
            > "$WORK/py-spy.out" 2>&1 &
        spy=$!
        sleep 1
    fi
    before=$(cpu)
    sw_before=$(switches)
    out=$(python3 "$REPO/bench/regload.py" --target "127.0.0.1:$PORT" --domain 127.0.0.1 \
        --users "$USERS" --count "$COUNT" --rate "$RATE" --timeout 10 \
        --max-seconds 120 --window 100000 --json)
    sleep 1
    after=$(cpu)
    sw_after=$(switches)
    if [ -n "$spy" ]; then kill -INT "$spy" 2>/dev/null || true; wait "$spy" 2>/dev/null || true; fi
    python3 - "$out" "$before" "$after" "$HZ" "$round" "$STORE" "$RATE" "$sw_before" "$sw_after" <<'EOF'
import json, sys
out = json.loads(sys.argv[1])
(u0, s0), (u1, s1) = (map(int, sys.argv[i].split()) for i in (2, 3))
hz = int(sys.argv[4])
ok = out["succeeded"]
user, system = (u1 - u0) / hz, (s1 - s0) / hz
ms = (user + system) * 1000 / ok if ok else float("nan")
print(f"round {sys.argv[5]} ({sys.argv[6]}, {sys.argv[7]}/s): {ok} succeeded, {out['failed']} failed,"
      f" {out['rate']:.0f}/s completed, p50 {out['latency_ms']['p50']} ms,"
      f" daemon CPU {user:.2f} s user + {system:.2f} s system = {ms:.3f} ms per registration,"
      f" {(int(sys.argv[9]) - int(sys.argv[8])) / ok if ok else float('nan'):.1f} context"
      f" switches per registration")
EOF
    round=$((round + 1))
done
