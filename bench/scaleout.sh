#!/bin/sh
# bench/scaleout.sh — REGISTER and click-to-dial call rates of one clicktodial node and of
# two nodes behind Kamailio (conf/kamailio/kamailio.cfg), sharing one PostgreSQL database
# with [cluster] bus = postgres, measured in the same run. See docs/scaling.md.
#
# Method:
# - A private network namespace (the script re-runs itself under `unshare -n`): nodes on
#   127.0.0.2 and 127.0.0.3, Kamailio on 127.0.0.1:5070, PostgreSQL on its unix socket.
# - REGISTER: bench/regload.py steps the rate up (as bench/register.sh does: a step passes
#   with no failure and >= 95 % of the offered rate; the figure is the last step passed)
#   against (1) node A directly, (2) node A behind Kamailio, (3) nodes A+B behind Kamailio.
# - Calls: bench/callload.py places CALLS click-to-dial calls through the web API with an
#   administrator's token (PAIRS at a time: place, wait until connected, hang up, wait for
#   the record to end); the phones are one SIPp UAS registered through the front for users
#   c00.. and d00.. With two nodes the calls alternate between the nodes' web APIs.
# - Bounded: every step and the call load have a count and a time limit.
#
# Usage: bench/scaleout.sh [RATES...]
# Environment: USERS (2000), STEP_SECONDS (3), TIMEOUT (5), CALLS (200), PAIRS (10).
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${SCALEOUT_BENCH_NETNS:-}" ]; then
    SCALEOUT_BENCH_NETNS=1 exec unshare -n "$0" "$@"
fi

USERS=${USERS:-2000}
STEP_SECONDS=${STEP_SECONDS:-3}
TIMEOUT=${TIMEOUT:-5}
CALLS=${CALLS:-200}
PAIRS=${PAIRS:-10}
if [ $# -gt 0 ]; then RATES="$*"; else RATES="100 200 300 400 500 600 800 1000 1200 1500 2000"; fi
PG_SOCKET=/var/run/postgresql
PG_DB=clicktodial_scaleout_bench
URL="postgresql+psycopg://postgres@/$PG_DB?host=$PG_SOCKET"
SIP_PORT=5060
FRONT_PORT=5070
PHONE_PORT=5090
SECRET=$(python3 -c "import secrets; print(secrets.token_hex(16))")

ip link set lo up
sysctl -qw net.core.rmem_max=4194304 net.core.wmem_max=4194304 2>/dev/null || true

WORK=$(mktemp -d /tmp/scaleout-bench.XXXXXX)
PIDS=""
cleanup() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    for pid in $PIDS; do wait "$pid" 2>/dev/null || true; done
    psql -q -U postgres -h "$PG_SOCKET" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" \
        > /dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

python3 - "$WORK" "$USERS" "$PAIRS" <<'EOF2'
import sys
work, users, pairs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(f"{work}/users.csv", "w") as f:
    f.writelines(f"u{i:05d},p{i:05d}\n" for i in range(users))
    f.writelines(f"{p}{k:02d},{p}{k:02d}\n" for k in range(pairs) for p in "cd")
EOF2

node_ini() {  # NAME ADDRESS
    cat > "$WORK/$1.ini" <<EOF2
[sip]
domain = 127.0.0.1
listen = $2:$SIP_PORT
transports = udp
udp_buffer = 4194304
[registrar]
digest_algorithms = MD5
nonce_secret = $SECRET
path = trusted
trusted_proxies = 127.0.0.1
# All phones are SIPp on one address: first registrations arrive together.
auth_refuse_after = 0
[web]
listen = tcp:8080:interface=$2
[store]
url = $URL
[calls]
max_calls_per_user = 0
[limits]
# The load generator (and Kamailio) are single sources far above any one phone's rate.
rate_max_requests = 0
[cluster]
bus = postgres
node_id = $1
[log]
level = warn
file = $WORK/$1.log
EOF2
}

start_node() {  # NAME ADDRESS
    node_ini "$1" "$2"
    (cd "$WORK" && exec python3 -c "from twisted.scripts.twistd import run; run()" \
        -n --pidfile= clicktodial --config "$WORK/$1.ini" > "$WORK/$1.out" 2>&1) &
    PIDS="$PIDS $!"
    eval "PID_$1=$!"
    sleep 5
}

start_front() {  # ADDRESS...
    : > "$WORK/dispatcher.list"
    for address in "$@"; do echo "1 sip:$address:$SIP_PORT" >> "$WORK/dispatcher.list"; done
    kamailio -f "$REPO/conf/kamailio/kamailio.cfg" -DD -E -l "udp:127.0.0.1:$FRONT_PORT" \
        -A "DSLIST=\"$WORK/dispatcher.list\"" -m 256 -M 16 -Y "$WORK" \
        > "$WORK/kamailio.log" 2>&1 &
    KAMAILIO=$!
    PIDS="$PIDS $KAMAILIO"
    sleep 3
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

step() {  # HOST:PORT RATE
    count=$(python3 -c "print(int($2 * $STEP_SECONDS))")
    out=$(python3 "$REPO/bench/regload.py" --target "$1" --domain 127.0.0.1 --users "$USERS" \
        --count "$count" --rate "$2" --max-seconds "$STEP_SECONDS" --timeout "$TIMEOUT" \
        --window 100000 --json || true)
    python3 - "$2" "$out" <<'EOF2'
import json, sys
rate, out = float(sys.argv[1]), json.loads(sys.argv[2])
passed = out["failed"] == 0 and out["rate"] >= 0.95 * rate
print(f"  {rate:>7g}/s offered: {'ok  ' if passed else 'FAIL'} {out['rate']:>8.1f}/s completed,"
      f" p50 {out['latency_ms']['p50']} ms, {out['failed']} failed {out['failures'] or ''}")
sys.exit(0 if passed else 1)
EOF2
}

measure() {  # LABEL HOST:PORT
    echo "REGISTER, $1:"
    best=0
    for rate in $RATES; do
        if step "$2" "$rate"; then best=$rate; sleep 2; else break; fi
    done
    sleep 30  # let the failed step's backlog (and retransmissions) drain before the next
    echo "register|$1|$best/s" >> "$WORK/results"
}

calls() {  # LABEL WEB_ADDRESS...
    label=$1; shift
    sipp -sf "$REPO/bench/scaleout-phone.xml" -i 127.0.0.1 -p "$PHONE_PORT" \
        -t u1 -s phone -m 1000000 -nostdin -timeout 300s -trace_err \
        -error_file "$WORK/sipp-errors.log" > "$WORK/sipp.out" 2>&1 &
    SIPP=$!
    PIDS="$PIDS $SIPP"
    sleep 1
    args=""
    for address in "$@"; do args="$args --api $address:8080"; done
    # shellcheck disable=SC2086
    result=$(python3 "$REPO/bench/callload.py" $args --token "$TOKEN" --calls "$CALLS" \
        --pairs "$PAIRS" \
        --max-seconds 120)
    echo "calls, $label: $result"
    echo "calls|$label|$result" >> "$WORK/results"
    stop "$SIPP"
}

register_phones() {  # through the front, from the SIPp port (Path names the front)
    python3 - "$PAIRS" "$PHONE_PORT" "$FRONT_PORT" "$REPO" <<'EOF2'
import sys
sys.path.insert(0, f"{sys.argv[4]}/tests/interop")
from calltools import register
pairs, phone, front = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for k in range(pairs):
    for p in "cd":
        register(f"{p}{k:02d}", f"{p}{k:02d}", phone, front, expires=3600)
EOF2
}

psql -q -U postgres -h "$PG_SOCKET" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" \
    -c "CREATE DATABASE $PG_DB" > /dev/null
node_ini setup 127.0.0.2
python3 -m clicktodial.cli --config "$WORK/setup.ini" db upgrade > /dev/null
python3 -m clicktodial.cli --config "$WORK/setup.ini" user import "$WORK/users.csv" > /dev/null
# An administrator's API token: callload.py places the calls for the c/d users with it.
python3 -m clicktodial.cli --config "$WORK/setup.ini" user add bench --admin \
    --password "bench-$$" > /dev/null
TOKEN=$(python3 -m clicktodial.cli --config "$WORK/setup.ini" token create bench)
: > "$WORK/results"

echo "== one node (A, 127.0.0.2)"
start_node node_a 127.0.0.2
start_front 127.0.0.2
measure "node A behind Kamailio" "127.0.0.1:$FRONT_PORT"
measure "node A directly" "127.0.0.2:$SIP_PORT"
register_phones
calls "node A behind Kamailio" 127.0.0.2
stop "$KAMAILIO"

echo "== two nodes (A 127.0.0.2, B 127.0.0.3) behind Kamailio"
start_node node_b 127.0.0.3
start_front 127.0.0.2 127.0.0.3
measure "nodes A+B behind Kamailio" "127.0.0.1:$FRONT_PORT"
calls "nodes A+B behind Kamailio" 127.0.0.2 127.0.0.3

echo
echo "Summary ($(nproc) CPUs; $USERS users; REGISTER = 401 + authenticated REGISTER + 200):"
while IFS='|' read -r kind label figure; do
    printf '  %-9s %-28s %s\n' "$kind" "$label" "$figure"
done < "$WORK/results"
