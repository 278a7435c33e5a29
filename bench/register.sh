#!/bin/sh
# bench/register.sh — the highest authenticated REGISTER rate without failure: clicktodial
# on SQLite, clicktodial on PostgreSQL, clicktodial with users in SQLite and registrations
# in Redis (plugins/clicktodial-redis), and Kamailio, measured in the same run.
#
# Method (see docs/benchmarks.md):
# - Everything runs in a private network namespace (the script re-runs itself under
#   `unshare -n`): only loopback exists, nothing can leave the machine. The socket buffer
#   ceilings are raised to 4 MB there (net.core.rmem_max/wmem_max, when permitted); the
#   daemon asks for 4 MB ([sip] udp_buffer = 4194304), the load generator too.
# - USERS (10,000) users u00000..u09999 with SIP passwords p00000..p09999: imported into
#   clicktodial with `clicktodial user import` (CSV), and given to Kamailio as an in-memory
#   htable (bench/kamailio/kamailio.cfg: pv_auth_check, usrloc in memory).
# - Load: bench/regload.py (SIPp 3.6 cannot take a Digest username per call). A registration
#   is REGISTER → 401 (MD5 challenge) → REGISTER with credentials → 200 listing the contact;
#   registration k uses user k mod USERS and a fresh Call-ID. Requests are retransmitted as
#   a UDP client transaction would (T1 = 0.5 s).
# - Steps: for each rate in RATES (registrations started per second), STEP_SECONDS worth of
#   registrations, each allowed TIMEOUT seconds. A step passes when no registration fails
#   and the completed rate is at least 95 % of the offered one (else a short step would pass
#   by draining a backlog within the timeout). A target's figure is the highest step passed
#   before the first failed one; stepping stops at the first failure. Pauses between steps
#   let queues drain. Each step is bounded in count (rate × STEP_SECONDS) and time.
# - The same generator drives Kamailio: if Kamailio's figure is far above ours, the
#   generator is not what limits ours. (At its top steps the generator's own CPU can limit
#   Kamailio's figure: it is then a lower bound.)
# - clicktodial runs with [log] level = warn; digest_algorithms = MD5 (the generator, like
#   SIPp, answers MD5); [registrar] auth_refuse_after = 0, [limits] rate_max_requests = 0 and
#   max_transactions = 0 (the whole load comes from one address; capacity is measured,
#   not the overload protection).
#
# - WORKERS (e.g. "1 2"): the SQLite and PostgreSQL targets run once per number of worker
#   processes ([daemon] workers; 1 is the single process), and Kamailio with the same
#   numbers of children (-n). The generator sends from SOCKETS (16) source ports, as that
#   many phones would: SO_REUSEPORT spreads the load over the workers by a hash of the
#   source address and port (from one port it would all reach one worker).
#
# Usage: bench/register.sh [RATES...]     e.g. bench/register.sh 200 400 800
# Environment: USERS, STEP_SECONDS, TIMEOUT, TARGETS ("sqlite postgresql redis kamailio"),
# WORKERS ("1"), SOCKETS (16).
# Needs: kamailio (Debian package), PostgreSQL on /var/run/postgresql (user postgres), the
# clicktodial package importable from this checkout; for the redis target, redis-server
# (Debian package; the script starts its own on a unix socket: inside `unshare -n` the
# machine's Redis on 127.0.0.1:6379 is unreachable) and `pip install ./plugins/clicktodial-redis`
# with a clicktodial that has the [location] seam.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${REGISTER_BENCH_NETNS:-}" ]; then
    REGISTER_BENCH_NETNS=1 exec unshare -n "$0" "$@"
fi

USERS=${USERS:-10000}
STEP_SECONDS=${STEP_SECONDS:-3}
TIMEOUT=${TIMEOUT:-5}
TARGETS=${TARGETS:-"sqlite postgresql redis kamailio"}
WORKERS=${WORKERS:-1}
SOCKETS=${SOCKETS:-16}
if [ $# -gt 0 ]; then
    RATES="$*"
else
    RATES="100 200 300 400 500 600 800 1000 1500 2000 3000 4000 6000 8000 10000 12000"
fi
PG_SOCKET=/var/run/postgresql
PG_DB=clicktodial_bench
PORT=45160
WEB_PORT=45180

ip link set lo up
sysctl -qw net.core.rmem_max=4194304 net.core.wmem_max=4194304 2>/dev/null \
    || echo "note: cannot raise net.core.rmem_max/wmem_max here; using the current ceilings"

WORK=$(mktemp -d /tmp/register-bench.XXXXXX)
PIDS=""
cleanup() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    for pid in $PIDS; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
python3 - "$WORK" "$USERS" <<'EOF'
import sys
work, users = sys.argv[1], int(sys.argv[2])
with open(f"{work}/users.csv", "w") as f:
    f.writelines(f"u{i:05d},p{i:05d}\n" for i in range(users))
with open(f"{work}/htable", "w") as f:
    f.write("id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string)"
            " expires(int) \n")
    f.writelines(f"{i + 1}:u{i:05d}:0:0:p{i:05d}:0\n" for i in range(users))
with open(f"{work}/version", "w") as f:
    f.write("id(int,auto) table_name(string) table_version(int) \n0:htable:2\n")
EOF

# One step: print "RATE ok|FAIL achieved/s p50 p95 failures"; exit 0 if it passed.
step() {
    target_port=$1 rate=$2
    count=$(python3 -c "print(int($rate * $STEP_SECONDS))")
    out=$(python3 "$REPO/bench/regload.py" --target "127.0.0.1:$target_port" \
        --domain 127.0.0.1 --users "$USERS" --count "$count" --rate "$rate" \
        --max-seconds "$STEP_SECONDS" --timeout "$TIMEOUT" --window 100000 \
        --sockets "$SOCKETS" --json || true)
    python3 - "$rate" "$out" <<'EOF'
import json, sys
rate, out = float(sys.argv[1]), json.loads(sys.argv[2])
passed = out["failed"] == 0 and out["rate"] >= 0.95 * rate
lat = out["latency_ms"]
print(f"  {rate:>7g}/s offered: {'ok  ' if passed else 'FAIL'} {out['rate']:>8.1f}/s completed,"
      f" p50 {lat['p50']} ms, p95 {lat['p95']} ms, {out['failed']} failed"
      f" {out['failures'] or ''} ({out['retransmissions']} retransmissions)")
sys.exit(0 if passed else 1)
EOF
}

# Step the rate up against a target; print its best passing rate.
measure() {
    name=$1 target_port=$2
    best=0
    for rate in $RATES; do
        if step "$target_port" "$rate"; then
            best=$rate
            sleep 2
        else
            break
        fi
    done
    echo "$name $best" >> "$WORK/results"
}

# The per-source rate limit and the transaction bound of [limits] (when this version has
# them) are off: all the load comes from 127.0.0.1, and we measure capacity, not protection.
LIMITS=$(python3 -c '
from clicktodial.config import iter_settings
keys = {(s, k) for s, k, _ in iter_settings()}
lines = [f"{k} = 0" for k in ("rate_max_requests", "max_transactions") if ("limits", k) in keys]
print("\n".join(["[limits]"] + lines) if lines else "")')

start_clicktodial() {
    url=$1
    extra=${2:-}
    workers=${3:-1}
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
url = $url
[log]
level = warn
file = $WORK/clicktodial.log
$LIMITS
$extra
[daemon]
workers = $workers
EOF
    python3 -m clicktodial.cli --config "$WORK/clicktodial.ini" db upgrade > /dev/null
    python3 -m clicktodial.cli --config "$WORK/clicktodial.ini" user import "$WORK/users.csv"
    (cd "$WORK" && exec python3 -c "from twisted.scripts.twistd import run; run()" \
        -n --pidfile= clicktodial --config "$WORK/clicktodial.ini" > "$WORK/twistd.out" 2>&1) &
    DAEMON=$!
    PIDS="$PIDS $DAEMON"
    # Ready when OPTIONS from 32 source ports are answered by every worker (each answers
    # from its own port); at most 90 s.
    python3 -m clicktodial.testing.daemon ready --pid "$DAEMON" --sip "$PORT" \
        --workers "$workers" --timeout 90
    sleep 2
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

: > "$WORK/results"
for target in $TARGETS; do
    case $target in
    sqlite)
        for workers in $WORKERS; do
            echo "clicktodial, SQLite store, workers = $workers:"
            rm -f "$WORK"/clicktodial.sqlite*
            start_clicktodial "sqlite:///$WORK/clicktodial.sqlite" "" "$workers"
            measure "clicktodial/SQLite/w$workers" "$PORT"
            stop "$DAEMON"
        done
        ;;
    postgresql)
        for workers in $WORKERS; do
            echo "clicktodial, PostgreSQL store (unix socket), workers = $workers:"
            psql -q -U postgres -h "$PG_SOCKET" -c "DROP DATABASE IF EXISTS $PG_DB" \
                -c "CREATE DATABASE $PG_DB" > /dev/null
            start_clicktodial "postgresql+psycopg://postgres@/$PG_DB?host=$PG_SOCKET" "" \
                "$workers"
            measure "clicktodial/PostgreSQL/w$workers" "$PORT"
            stop "$DAEMON"
        done
        psql -q -U postgres -h "$PG_SOCKET" -c "DROP DATABASE IF EXISTS $PG_DB" > /dev/null
        ;;
    redis)
        echo "clicktodial, users in SQLite, registrations in Redis (unix socket):"
        if ! command -v redis-server > /dev/null; then
            echo "  skipped: redis-server is not installed"
            continue
        fi
        redis-server --port 0 --unixsocket "$WORK/redis.sock" --dir "$WORK" --save "" \
            --appendonly no > "$WORK/redis.log" 2>&1 &
        REDIS=$!
        PIDS="$PIDS $REDIS"
        REDIS_CONFIG="[location]
backend = redis
[location:redis]
url = unix://$WORK/redis.sock?db=0"
        printf '[sip]\ndomain = 127.0.0.1\n[store]\nurl = sqlite:///%s/x.sqlite\n%s\n' \
            "$WORK" "$REDIS_CONFIG" > "$WORK/check.ini"
        if ! python3 -m clicktodial.cli --config "$WORK/check.ini" check-config; then
            echo "  skipped: this clicktodial has no [location] backend = redis (needs the"
            echo "  [location] seam and pip install ./plugins/clicktodial-redis)"
            stop "$REDIS"
            continue
        fi
        start_clicktodial "sqlite:///$WORK/clicktodial-redis.sqlite" "$REDIS_CONFIG"
        measure "clicktodial/SQLite+Redis" "$PORT"
        stop "$DAEMON"
        stop "$REDIS"
        ;;
    kamailio)
        for workers in $WORKERS; do
            echo "Kamailio $(kamailio -v | sed -n 's/^version: kamailio \([^ ]*\).*/\1/p') (htable auth, usrloc in memory), $workers children:"
            kamailio -f "$REPO/bench/kamailio/kamailio.cfg" -DD -E -l "udp:127.0.0.1:$PORT" \
                -n "$workers" -A "DBURL=\"text://$WORK\"" -A 'DOMAIN="127.0.0.1"' -m 512 -M 32 \
                > "$WORK/kamailio.log" 2>&1 &
            KAMAILIO=$!
            PIDS="$PIDS $KAMAILIO"
            sleep 3
            measure "Kamailio/w$workers" "$PORT"
            stop "$KAMAILIO"
        done
        ;;
    esac
done

echo
echo "Highest authenticated REGISTER rate without failure (registrations/s; each is"
echo "REGISTER → 401 → REGISTER with credentials → 200), $USERS users, steps of ${STEP_SECONDS}s:"
while read -r name best; do
    printf '  %-24s %s/s\n' "$name" "$best"
done < "$WORK/results"
