#!/bin/sh
# bench/register_cpu.sh — the daemon's CPU time per authenticated registration, and optionally
# a profile of it, over a bounded load (docs/benchmarks.md, "CPU per registration").
#
# Starts clicktodial (twistd -n, [log] level = warn, digest_algorithms = MD5, [limits] off)
# on a SQLite file or PostgreSQL, imports USERS users, then runs bench/regload.py ROUNDS
# times: COUNT registrations at RATE/s each. Before and after each round it reads utime +
# stime of the daemon (all threads) from /proc/PID/stat and prints the CPU per registration
# (one registration = REGISTER → 401 → REGISTER with credentials → 200). The first round
# registers new AORs; later rounds, with COUNT ≤ USERS, register the same AORs again, but
# each round's bench/regload.py sends from a new source port, so a new contact: each round
# adds a binding to every AOR (round 2 leaves 2 per AOR, on our store as in Kamailio's).
# REFRESH=1 sends every round from the same source port (GEN_PORT, default 45290), so later
# rounds refresh the bindings of the first (the same contact: a registrar's steady state,
# one UPDATE per binding; the Call-ID differs per round, which RFC 3261 §10.3 step 7 updates).
#
# PROFILE=py-spy writes a py-spy flame graph (SVG; --gil) of the last round to
# $PROFILE_OUT (default /tmp/register-profile.svg); PROFILE=raw writes collapsed stacks;
# PYSPY_ARGS replaces --gil (e.g. PYSPY_ARGS=--threads: every running thread).
# PROFILE=perf records native stacks with `perf record -F ${PERF_FREQ:-999} -g` (kernel, interpreter, SQLite,
# libc: what py-spy cannot see) to $PROFILE_OUT; read it with `perf report -i FILE`.
#
# KAMAILIO=1 (the default) then runs Kamailio (bench/kamailio/kamailio.cfg, as bench/register.sh
# runs it) under the same ROUNDS of the same load and prints its CPU per registration the same
# way: utime + stime from /proc of its main process and every process under it, and the ratio.
# KAMAILIO_DB=1 (default 0) then runs a second Kamailio, the same configuration with its
# bindings written through to a database (usrloc db_mode 1: each binding is written before
# save() returns, so before the 200, as our daemon stores it before answering), on the same
# kind of database as the daemon's in this run: db_sqlite on a SQLite file in the work dir
# (WAL, as ours) when STORE=sqlite, db_postgres on a database of its own
# ($PG_DB_KAMAILIO, dropped at exit) on the local PostgreSQL when STORE=postgresql. Its
# location table is created from Kamailio's own schema files (/usr/share/kamailio/db_sqlite
# or /usr/share/kamailio/postgres, standard-create.sql and usrloc-create.sql); the passwords
# stay in the htable, so only the binding write differs from the row above. It prints its
# CPU per registration and the ratio the same way, labelled "Kamailio (usrloc
# write-through, STORE)", and after each round the rows of its location table: the AORs in
# it must be the AORs registered and every round's contact (each round sends from a new
# source port, so a new contact per AOR) must have one row per AOR, with 0 failed
# registrations; else it says CHECK FAILED (with Kamailio's last errors) and the script
# exits 1 at the end. It runs KAMAILIO_DB_CHILDREN workers (-n): by default 2 on PostgreSQL,
# as the row above, and 1 on SQLite, whose file takes one writer at a time (db_sqlite 5.6
# sets no busy timeout: a second worker's write fails at once, "database is locked", 500);
# our daemon writes SQLite from one batch at a time too. Off by
# default: the issue's target (≤ 3× Kamailio) and the figures of record are defined against
# the in-memory Kamailio above, and the default run keeps printing exactly those rows; this
# row is context. Needs the kamailio-sqlite-modules or kamailio-postgres-modules Debian
# package (5.6) only when KAMAILIO_DB=1. PostgreSQL's own CPU (its backend processes) is
# counted for neither side, SQLite's is (in process) for both.
# CALLS=1 (the default) then restarts the daemon under bench/twistd_callcount.py (a profile
# hook in every thread) and counts the Python function calls of one more round of CALLS_COUNT
# (default 1000) registrations at CALLS_RATE/s (default 50: the hook slows the daemon, and at
# RATE it would fall behind into retransmissions, which would be counted; the line says how
# many there were) after the rounds above: "Python calls per registration". That round's
# CPU is not printed. CALLS_TOP=FILE writes the count of
# each Python function over that round to FILE, most called first.
#
# Usage: STORE=sqlite|postgresql COUNT=3000 RATE=300 ROUNDS=2 [KAMAILIO_DB=1] bench/register_cpu.sh
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
KAMAILIO=${KAMAILIO:-1}
KAMAILIO_DB=${KAMAILIO_DB:-0}
PG_DB_KAMAILIO=clicktodial_bench_cpu_kamailio
CALLS=${CALLS:-1}
CALLS_RATE=${CALLS_RATE:-50}
CALLS_COUNT=${CALLS_COUNT:-1000}
REFRESH=${REFRESH:-0}
GEN_PORT=${GEN_PORT:-45290}
PORT=45260
KAMAILIO_PORT=45261
KAMAILIO_DB_PORT=45262
WEB_PORT=45280

ip link set lo up
WORK=$(mktemp -d /tmp/register-cpu.XXXXXX)
DAEMON=""
cleanup() {
    if [ -n "$DAEMON" ]; then kill "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; fi
    if [ "$STORE" = postgresql ]; then
        psql -q -U postgres -h "$PG_SOCKET" -c "DROP DATABASE IF EXISTS $PG_DB" > /dev/null 2>&1 || true
        if [ "$KAMAILIO_DB" = 1 ]; then
            psql -q -U postgres -h "$PG_SOCKET" -c "DROP DATABASE IF EXISTS $PG_DB_KAMAILIO" \
                > /dev/null 2>&1 || true
        fi
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "
import sys
with open('$WORK/users.csv', 'w') as f:
    f.writelines(f'u{i:05d},p{i:05d}\n' for i in range($USERS))
with open('$WORK/htable', 'w') as f:
    f.write('id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string)'
            ' expires(int) \n')
    f.writelines(f'{i + 1}:u{i:05d}:0:0:p{i:05d}:0\n' for i in range($USERS))
with open('$WORK/version', 'w') as f:
    f.write('id(int,auto) table_name(string) table_version(int) \n0:htable:2\n')"

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
fail() {  # fail MESSAGE [FILE]: say why on stderr (with the tail of FILE) and exit 1
    echo "register_cpu.sh: $1" >&2
    if [ -n "${2:-}" ] && [ -f "$2" ]; then tail -n 40 "$2" >&2; fi
    exit 1
}
# wait_ready NAME PID PORT [--web PORT]: until an OPTIONS to PORT is answered (and /healthz
# of the web port answers 200), at most READY_TIMEOUT s; fails loudly if PID exits first.
READY_TIMEOUT=${READY_TIMEOUT:-120}
wait_ready() {
    name=$1 pid=$2 port=$3
    shift 3
    python3 -m clicktodial.testing.daemon ready --pid "$pid" --sip "$port" "$@" \
        --timeout "$READY_TIMEOUT" || fail "$name did not become ready" "$WORK/$name.out"
}
alive() {  # alive NAME PID: fail loudly if PID has exited (a round without a target means nothing)
    kill -0 "$2" 2>/dev/null || fail "$1 exited during the measurement" "$WORK/$1.out"
}
start_daemon() {  # start_daemon LAUNCHER...: twistd in the foreground, until ready; PID in $DAEMON
    (cd "$WORK" && exec python3 "$@" -n --pidfile= clicktodial --config "$WORK/clicktodial.ini" \
        > "$WORK/clicktodial.out" 2>&1) &
    DAEMON=$!
    wait_ready clicktodial "$DAEMON" "$PORT" --web "$WEB_PORT"
}
stop_daemon() {
    kill "$DAEMON" 2>/dev/null || true
    wait "$DAEMON" 2>/dev/null || true
    DAEMON=""
}
cpu() {  # utime and stime, in clock ticks, of process $1 (all threads) and every process under it
    python3 - "$1" <<'PYEOF'
import os, sys
root, parents, ticks = int(sys.argv[1]), {}, {}
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(name)] = int(fields[1])
        ticks[int(name)] = (int(fields[11]), int(fields[12]))
def under(pid):
    while pid > 1:
        if pid == root:
            return True
        pid = parents.get(pid, 0)
    return False
mine = [ticks[p] for p in ticks if under(p)]
print(sum(u for u, _ in mine), sum(s for _, s in mine))
PYEOF
}
switches() {  # context switches of all the threads of process $1 (GIL hand-offs, wake-ups)
    cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ { n += $2 } END { print n }'
}
HZ=$(getconf CLK_TCK)
load() {  # load PORT [RATE COUNT]: one round of COUNT registrations at RATE/s; regload's JSON
    python3 "$REPO/bench/regload.py" --target "127.0.0.1:$1" --domain 127.0.0.1 \
        --users "$USERS" --count "${3:-$COUNT}" --rate "${2:-$RATE}" --timeout 10 \
        --max-seconds 120 --window 100000 --json $(
            [ "$REFRESH" = 1 ] && echo --local-port "$GEN_PORT")
}
# location_rows: "username contact" for every row of the write-through Kamailio's location table
location_rows() {
    case $STORE in
    sqlite)
        python3 - "$WORK/kamailio.sqlite" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for username, contact in db.execute("SELECT username, contact FROM location"):
    print(username, contact)
EOF
        ;;
    postgresql)
        psql -q -At -F ' ' -U postgres -h "$PG_SOCKET" -d "$PG_DB_KAMAILIO" \
            -c "SELECT username, contact FROM location" ;;
    esac
}
CHECKS_FAILED=0
# check_location ROUND OUT LABEL: did the write-through Kamailio answer every REGISTER of the
# round (regload's JSON OUT) and write every binding: the AORs in its location table are the
# AORs registered, min(COUNT, USERS) (registration k is user k mod USERS), and every contact
# (one per round: a round sends from a new source port; one in all with REFRESH=1) has one
# row per AOR.
check_location() {
    location_rows > "$WORK/location.$1" || fail "cannot read Kamailio's location table"
    python3 - "$2" "$WORK/location.$1" "$1" "$3" "$COUNT" "$USERS" <<'EOF' \
        || { CHECKS_FAILED=1; grep ERROR "$WORK/Kamailio-db.out" | tail -n 5; }
import collections, json, sys
out, rows = json.loads(sys.argv[1]), [line.split() for line in open(sys.argv[2])]
label, count, users = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
aors = min(count, users)
per_contact = collections.Counter(contact.rsplit("@", 1)[1] for _, contact in rows)
in_table = len({username for username, _ in rows})
ok = (out["failed"] == 0 and out["succeeded"] == count and in_table == aors
      and all(n == aors for n in per_contact.values()))
print(f"{label} round {sys.argv[3]}: location table {len(rows)} rows, {in_table} AORs"
      f" ({aors} registered; rows per round's contact {'/'.join(map(str, per_contact.values()))});"
      f" {out['failed']} failed: " + ("written through" if ok else "CHECK FAILED"))
sys.exit(0 if ok else 1)
EOF
}
rounds() {  # rounds NAME PID PORT [LABEL]: ROUNDS rounds; CPU of PID and its children per registration
    name=$1 pid=$2 target_port=$3 label=${4:-$1}
    round=1
    while [ "$round" -le "$ROUNDS" ]; do
        spy=""
        if [ "$name" = clicktodial ] && [ "$PROFILE" = perf ] && [ "$round" -eq "$ROUNDS" ]; then
            perf record -F ${PERF_FREQ:-999} -g -o "$PROFILE_OUT" -p "$pid" > "$WORK/perf.out" 2>&1 &
            spy=$!
            sleep 1
        elif [ "$name" = clicktodial ] && [ -n "$PROFILE" ] && [ "$round" -eq "$ROUNDS" ]; then
            fmt=flamegraph; [ "$PROFILE" = raw ] && fmt=raw
            py-spy record ${PYSPY_ARGS:---gil} --nonblocking -r 250 -f "$fmt" -o "$PROFILE_OUT" \
                -p "$pid" > "$WORK/py-spy.out" 2>&1 &
            spy=$!
            sleep 1
        fi
        before=$(cpu "$pid")
        sw_before=$(switches "$pid")
        # (the write-through Kamailio's failures are reported by check_location below)
        out=$(load "$target_port") || [ "$name" = Kamailio-db ] \
            || fail "regload failed against $name: $out"
        sleep 1
        alive "$name" "$pid"
        after=$(cpu "$pid")
        sw_after=$(switches "$pid")
        if [ -n "$spy" ]; then kill -INT "$spy" 2>/dev/null || true; wait "$spy" 2>/dev/null || true; fi
        python3 - "$out" "$before" "$after" "$HZ" "$round" "$STORE" "$RATE" "$name" \
            "$WORK/cpu.$name.$round" "$sw_before" "$sw_after" "$label" <<'EOF'
import json, sys
out = json.loads(sys.argv[1])
(u0, s0), (u1, s1) = (map(int, sys.argv[i].split()) for i in (2, 3))
hz = int(sys.argv[4])
ok = out["succeeded"]
user, system = (u1 - u0) / hz, (s1 - s0) / hz
ms = (user + system) * 1000 / ok if ok else float("nan")
with open(sys.argv[9], "w") as f:
    f.write(f"{ms}\n")
print(f"{sys.argv[12]} round {sys.argv[5]} ({sys.argv[6]}, {sys.argv[7]}/s): {ok} succeeded,"
      f" {out['failed']} failed, {out['rate']:.0f}/s completed, p50 {out['latency_ms']['p50']} ms,"
      f" {out['retransmissions']} retransmissions,"
      f" CPU {user:.2f} s user + {system:.2f} s system = {ms:.3f} ms per registration"
      + (f", {(int(sys.argv[11]) - int(sys.argv[10])) / ok:.1f} context switches per registration"
         if ok and sys.argv[8] == "clicktodial" else ""))
EOF
        if [ "$name" = Kamailio-db ]; then check_location "$round" "$out" "$label"; fi
        round=$((round + 1))
    done
}
ratios() {  # ratios NAME LABEL: per round, our CPU per registration over NAME's
    round=1
    while [ "$round" -le "$ROUNDS" ]; do
        python3 - "$WORK/cpu.clicktodial.$round" "$WORK/cpu.$1.$round" "$round" "$2" <<'EOF'
import sys
ours, theirs = (float(open(sys.argv[i]).read()) for i in (1, 2))
print(f"round {sys.argv[3]}: clicktodial / {sys.argv[4]} CPU per registration = {ours / theirs:.1f}x")
EOF
        round=$((round + 1))
    done
}

start_daemon -c "from twisted.scripts.twistd import run; run()"
rounds clicktodial "$DAEMON" "$PORT"
stop_daemon

# kamailio_rounds NAME PORT LABEL [ARG...]: Kamailio (bench/kamailio/kamailio.cfg, as
# bench/register.sh runs it, plus ARGs) on PORT under the same ROUNDS, then our ratio to it.
kamailio_rounds() {
    kamailio_name=$1 kamailio_port=$2 kamailio_label=$3
    shift 3
    kamailio -f "$REPO/bench/kamailio/kamailio.cfg" -DD -E -l "udp:127.0.0.1:$kamailio_port" \
        -A "DBURL=\"text://$WORK\"" -A 'DOMAIN="127.0.0.1"' -m 512 -M 32 "$@" \
        > "$WORK/$kamailio_name.out" 2>&1 &
    DAEMON=$!
    wait_ready "$kamailio_name" "$DAEMON" "$kamailio_port"
    rounds "$kamailio_name" "$DAEMON" "$kamailio_port" "$kamailio_label"
    stop_daemon
    ratios "$kamailio_name" "$kamailio_label"
}

if [ "$KAMAILIO" = 1 ]; then
    kamailio_rounds Kamailio "$KAMAILIO_PORT" Kamailio
fi

if [ "$KAMAILIO_DB" = 1 ]; then
    # One worker on SQLite: db_sqlite 5.6 sets no busy timeout, so a second worker's write
    # while the first holds the file's write lock fails at once ("database is locked": 500).
    case $STORE in
    sqlite) schema=/usr/share/kamailio/db_sqlite module=db_sqlite package=kamailio-sqlite-modules
        children=${KAMAILIO_DB_CHILDREN:-1} ;;
    postgresql) schema=/usr/share/kamailio/postgres module=db_postgres package=kamailio-postgres-modules
        children=${KAMAILIO_DB_CHILDREN:-2} ;;
    esac
    # (The modules' directory is under the machine's multiarch triplet: any of them.)
    [ -f "$schema/usrloc-create.sql" ] && ls /usr/lib/*/kamailio/modules/"$module.so" > /dev/null 2>&1 \
        || fail "KAMAILIO_DB=1 needs Kamailio's $module module and schema: apt-get install $package"
    case $STORE in
    sqlite)
        python3 - "$WORK/kamailio.sqlite" "$schema" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA journal_mode=WAL")  # kept in the file: the daemon's store runs in WAL too
for name in ("standard", "usrloc"):
    with open(f"{sys.argv[2]}/{name}-create.sql") as f:
        db.executescript(f.read())
db.close()
EOF
        DB_URL="sqlite://$WORK/kamailio.sqlite" ;;
    postgresql)
        psql -q -U postgres -h "$PG_SOCKET" -c "SET client_min_messages = warning" \
            -c "DROP DATABASE IF EXISTS $PG_DB_KAMAILIO" \
            -c "CREATE DATABASE $PG_DB_KAMAILIO" > /dev/null
        psql -q -v ON_ERROR_STOP=1 -U postgres -h "$PG_SOCKET" -d "$PG_DB_KAMAILIO" \
            -f "$schema/standard-create.sql" -f "$schema/usrloc-create.sql" > /dev/null
        # No host: libpq's default, the unix socket (TCP would not leave this namespace).
        DB_URL="postgres://postgres@/$PG_DB_KAMAILIO" ;;
    esac
    kamailio_rounds Kamailio-db "$KAMAILIO_DB_PORT" "Kamailio (usrloc write-through, $STORE)" \
        -A "USRLOC_DB_URL=\"$DB_URL\"" -A "USRLOC_DB_MODULE=\"$module.so\"" -n "$children"
fi

if [ "$CALLS" = 1 ]; then
    CALLCOUNT_TOP=${CALLS_TOP:-} start_daemon "$REPO/bench/twistd_callcount.py" "$WORK/calls"
    kill -USR1 "$DAEMON"
    out=$(load "$PORT" "$CALLS_RATE" "$CALLS_COUNT") || fail "regload failed (call count): $out"
    sleep 1
    alive clicktodial "$DAEMON"
    kill -USR2 "$DAEMON"
    # the hook writes its counts on USR2; wait for the file (at most 60 s)
    n=0
    while [ ! -s "$WORK/calls" ]; do
        n=$((n + 1))
        [ "$n" -le 600 ] || fail "no call counts from bench/twistd_callcount.py" "$WORK/clicktodial.out"
        alive clicktodial "$DAEMON"
        sleep 0.1
    done
    python3 - "$out" "$WORK/calls" <<'EOF'
import json, sys
out = json.loads(sys.argv[1])
ok = out["succeeded"]
calls, c_calls = map(int, open(sys.argv[2]).read().split())
print(f"clicktodial: {calls / ok:.0f} Python calls per registration (and {c_calls / ok:.0f} calls of"
      f" built-ins; {ok} registrations at {out['target_rate']}/s, {out['retransmissions']}"
      f" retransmissions, every thread of the daemon)")
EOF
    stop_daemon
fi
[ "$CHECKS_FAILED" = 0 ] || fail "the write-through Kamailio did not answer or write every registration (above)"
