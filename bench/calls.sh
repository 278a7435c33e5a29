#!/bin/sh
# bench/calls.sh — complete click-to-dial calls per second without failure, and memory per
# held call; side by side with the Sippy B2BUA (PyPI `sippy`, its full `b2bua`) in one run.
#
# Method (see docs/calls.md, "Benchmark"):
# - Everything runs in a private network namespace (the script re-runs itself under
#   `unshare -n`): only loopback exists, nothing can leave the machine.
# - clicktodial: the daemon (SQLite store, demo users alice and bob, [log] level = warn,
#   [calls] policy = flow4, no per-user limit, 4 MB UDP buffers, [limits] off for
#   127.0.0.1: all the load comes from there); calls are placed through its web API as an
#   administrator (`clicktodial user add bench --admin`, `token create bench`). The phones
#   are two SIPp UAS on their own ports, registered with Digest first: alice's phone
#   (bench/sipp/call_caller_hold.xml) answers at once, takes the Flow IV re-INVITE, holds
#   HOLD_MS and hangs up; bob's (tests/interop/sipp/call_phone_answer.xml) answers at once.
#   bench/calls_rate.py places RATE calls/s for STEP_SECONDS through the web API, waits
#   for them to end and reads every call's record from the SQLite file (read-only: not
#   through the daemon, whose CPU per call would count the reading): a call is complete when
#   its record says "caller-hangup" (both legs set up with full 3PCC, media relayed, BYE
#   relayed). A step passes when no call failed and the calls were placed at >= 95 % of the offered rate
#   (placing a call is part of the work: policy, user and binding look-ups, the record).
# - Sippy: SIPp's built-in uac (-r RATE, -d HOLD_MS, -m RATE*STEP_SECONDS) calls through
#   Sippy's full b2bua (-f -u -A 0, no RADIUS) to a SIPp uas whose Contact says
#   ";transport=udp" (bench/sipp/uas_lowercase.xml: Sippy 2.5.0 compares the transport
#   case-sensitively, a peer bug no ratio should measure). A call is complete when SIPp
#   counts it successful; a step passes when every call is and they went through at >= 95 %
#   of the offered rate (the run's length less one hold: SIPp completes every call however
#   slowly). Sippy's CPU per call is read from /proc as the daemon's.
#   (Sippy relays one INVITE dialog; clicktodial sets up two legs and four offer/answer
#   steps per call: per call it does more SIP work.)
# - Steps go up through RATES and stop at the first step with a failure; a target's figure
#   is the highest rate with zero failures.
# - Memory: phones that hold for 600 s; HELD calls are placed at HOLD_RATE/s (batches
#   through the web API), a tenth (at most 500) first as a warm-up. After each part
#   the script waits until all are connected, then 40 s more (the ramp's finished
#   transactions linger up to 64*T1 = 32 s and are no part of a held call), and reads the
#   daemon's VmRSS from /proc/PID/status: (after the rest - after the warm-up) / the
#   calls added is the memory per held call. This runs on a fresh daemon and database:
#   one that ran the rate steps keeps their peak in its heap and would hide the calls. Bounded: ramp HELD/HOLD_RATE s, at most
#   120 s to connect and 40 s quiet per part; the daemon is then stopped.
#
# - Call traces ([calls] trace, docs/calls.md "Call traces"): TRACE lists the settings the
#   clicktodial steps run with, each on a fresh daemon and database, in the order given
#   ("on off on off" alternates them twice, for a busy machine). Each step also reports the
#   daemon's CPU time per complete call (utime + stime from /proc/PID/stat over the step
#   and its settling), and the end gives, per setting, the best rate with zero failures
#   and the mean CPU ms per call over the steps passed at every setting; "calls/s at one
#   core" = 1000 / that.
#
# - Python calls per complete call (the target "count", on by default; load-independent, for
#   comparing two trees on a busy machine): a fresh daemon and database under
#   bench/twistd_callcount.py (a profile hook in every thread), COUNT_RATE calls/s (20) for
#   COUNT_SECONDS (5) with TRACE's first setting, a batch every COUNT_TICK (0.5) s: 10 calls
#   a request, as many as a 20 ms batch at 500/s (a request per call would count the HTTP
#   work per call). First a warm-up second, not counted, and COUNT_LINGER (33) s for its
#   transactions to end (64*T1). Counting starts (SIGUSR1) before the first call is placed
#   and stops (SIGUSR2) COUNT_LINGER s after the last record has its end reason (read from
#   the SQLite file: the web API is not polled), so each call's lingering timers count.
#   Prints the Python function calls and the built-in calls of every thread of the daemon
#   per complete call, placing (the admin batch API) included. The hook slows the daemon:
#   no CPU figure from that run. COUNT_TOP=FILE writes the count of each Python function
#   to FILE, most called first. With WORKERS > 1 only the main process is counted.
#
# - WORKERS (1): [daemon] workers of the clicktodial daemon (docs/deploy.md §9). With more
#   than 1, the steps start once its /readyz says every worker serves, and the CPU per call
#   is that of the main process and all its workers together; the memory figure is skipped
#   (it reads one process's RSS).
#
# Usage: bench/calls.sh [RATES...|-]  e.g. bench/calls.sh 50 100 200 300; "-": memory only
# Environment: STEP_SECONDS (5), HOLD_MS (2000), HELD (10000; 0 skips the memory figure),
# HOLD_RATE (100), TRACE ("on"; e.g. "on off", "on off on off"),
# TARGETS ("clicktodial sippy count"), WORKERS (1), COUNT_RATE (20), COUNT_SECONDS (5),
# COUNT_TICK (0.5), COUNT_LINGER (33), COUNT_TOP, PROFILE (a file: the daemon runs under
# cProfile), KEEP_LOGS (a directory the daemon's and the phones' logs are copied to at the end).
# Needs: sipp, the `sippy` package (pip install sippy), this checkout importable.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${CALLS_BENCH_NETNS:-}" ]; then
    CALLS_BENCH_NETNS=1 exec unshare -n "$0" "$@"
fi
ip link set lo up

STEP_SECONDS=${STEP_SECONDS:-5}
HOLD_MS=${HOLD_MS:-2000}
HELD=${HELD:-10000}
HOLD_RATE=${HOLD_RATE:-100}
TARGETS=${TARGETS:-"clicktodial sippy count"}
TRACE=${TRACE:-on}
WORKERS=${WORKERS:-1}
if [ "${1:-}" = "-" ]; then RATES=""; elif [ $# -gt 0 ]; then RATES="$*"
else RATES="50 100 150 200 300 400 500"; fi
SIP_PORT=45260 WEB_PORT=45261 METRICS_PORT=45262 ALICE_PORT=45270 BOB_PORT=45271
SIPPY_PORT=45280 UAS_PORT=45281 UAC_PORT=45282

WORK=$(mktemp -d /tmp/calls-bench.XXXXXX)
PIDS=""
cleanup() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    for pid in $PIDS; do wait "$pid" 2>/dev/null || true; done
    if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS" && cp "$WORK"/*.log "$WORK"/*.out "$KEEP_LOGS"/; fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

wait_port() {  # wait (bounded) until TCP 127.0.0.1:$1 accepts
    python3 - "$1" <<'EOF'
import socket, sys, time
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit("timed out waiting for the daemon")
EOF
}

wait_udp() {  # wait (bounded) until something holds UDP 127.0.0.1:$1 (Sippy's b2bua)
    python3 - "$1" <<'EOF'
import socket, sys, time
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", int(sys.argv[1])))
        except OSError:
            sys.exit(0)
    time.sleep(0.2)
sys.exit("timed out waiting for Sippy's b2bua")
EOF
}

cpu_seconds() {  # user + system CPU seconds of process $1 and its children (workers) so far;
    # with a second argument "main", of process $1 alone
    python3 -c "import os, sys
def cpu(pid):
    fields = open('/proc/%s/stat' % pid).read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
pid = sys.argv[1]
children = open('/proc/%s/task/%s/children' % (pid, pid)).read().split()
alone = sys.argv[2:] == ['main']
print(cpu(pid) + (0 if alone else sum(cpu(child) for child in children)))" "$@"
}

wait_ready() {  # the daemon's /readyz answers 200 (every worker serves), at most 90 s
    python3 - "$METRICS_PORT" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit("the daemon was not ready within 90 s")
PY
}

start_daemon() {  # $1: [calls] trace (on, off); $2: twistd_callcount.py's output file (optional)
    cat > "$WORK/clicktodial.ini" <<EOF
[sip]
domain = 127.0.0.1
listen = 127.0.0.1:$SIP_PORT
udp_buffer = 4194304
[web]
listen = tcp:$WEB_PORT:interface=127.0.0.1
metrics_listen = tcp:$METRICS_PORT:interface=127.0.0.1
[store]
url = sqlite:///$WORK/clicktodial.sqlite
auto_upgrade = yes
demo_users = yes
[registrar]
digest_algorithms = MD5
[limits]
rate_exempt = 127.0.0.1
max_transactions = 0
[calls]
policy = flow4
max_calls_per_user = 0
trace = ${1:-on}
[log]
level = warn
file = $WORK/daemon.log
[daemon]
workers = $WORKERS
EOF
    profile=""
    if [ -n "${PROFILE:-}" ]; then
        profile="--profile=$PROFILE --profiler=cprofile --savestats"
    fi
    if [ -n "${2:-}" ]; then
        (cd "$WORK" && exec python3 "$REPO/bench/twistd_callcount.py" "$2" \
            -n --pidfile= clicktodial --config "$WORK/clicktodial.ini") \
            > "$WORK/daemon.out" 2>&1 &
    else
        # shellcheck disable=SC2086
        (cd "$WORK" && exec python3 -c "from twisted.scripts.twistd import run; run()" \
            -n --pidfile= $profile clicktodial --config "$WORK/clicktodial.ini") \
            > "$WORK/daemon.out" 2>&1 &
    fi
    DAEMON=$!
    PIDS="$PIDS $DAEMON"
    wait_port "$WEB_PORT"
    wait_ready
    sleep 1  # demo users
    # An administrator's API token: batches of calls for alice and bob (POST /api/v1/calls).
    clicktodial_cli user add bench --admin --password "bench-$$" > /dev/null
    TOKEN=$(clicktodial_cli token create bench)
}

clicktodial_cli() {
    (cd "$WORK" && python3 -m clicktodial.cli --config "$WORK/clicktodial.ini" "$@")
}

start_phones() {  # $1: caller hold in ms
    python3 "$REPO/bench/calls_rate.py" register --sip "127.0.0.1:$SIP_PORT" --user alice \
        --port "$ALICE_PORT"
    python3 "$REPO/bench/calls_rate.py" register --sip "127.0.0.1:$SIP_PORT" --user bob \
        --port "$BOB_PORT"
    sipp -sf "$REPO/bench/sipp/call_caller_hold.xml" -i 127.0.0.1 -p "$ALICE_PORT" -s alice \
        -d "$1" -key daemon "127.0.0.1:$SIP_PORT" -nostdin -bg -timeout 900s \
        -max_socket 100000 -buff_size 4194304 -l 100000 -trace_err \
        -error_file "$WORK/sipp-alice-errors.log" \
        > "$WORK/sipp-alice.out" 2>&1 || true
    sipp -sf "$REPO/tests/interop/sipp/call_phone_answer.xml" -i 127.0.0.1 -p "$BOB_PORT" \
        -s bob -d 0 -nostdin -bg -timeout 900s -max_socket 100000 -buff_size 4194304 -l 100000 \
        -trace_err -error_file "$WORK/sipp-bob-errors.log" > "$WORK/sipp-bob.out" 2>&1 || true
    sleep 1
}

own_netns() {  # the PIDs among $@ that run in this script's network namespace
    ours=$(readlink /proc/$$/ns/net)
    for pid in "$@"; do
        if [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$ours" ]; then echo "$pid"; fi
    done
}

stop_phones() {
    # Only this run's phones: another run of this script (its own namespace, the same
    # ports) shares the PID namespace, and its SIPp must live on.
    pkill_pids=$(ps -eo pid,args | awk -v a="$ALICE_PORT" -v b="$BOB_PORT" \
        '$2 == "sipp" && ($0 ~ "-p " a || $0 ~ "-p " b) {print $1}')
    # shellcheck disable=SC2086
    for pid in $(own_netns $pkill_pids); do kill "$pid" 2>/dev/null || true; done
}

echo "complete click-to-dial calls/s (hold ${HOLD_MS} ms, ${STEP_SECONDS} s per step," \
    "clicktodial workers = $WORKERS)"
CTD_BEST=0 SIPPY_BEST=0
for target in $TARGETS; do
    case $target in
    clicktodial)
        for trace in $TRACE; do
            rm -f "$WORK"/clicktodial.sqlite*
            start_daemon "$trace"
            start_phones "$HOLD_MS"
            best=0
            for rate in $RATES; do
                before=$(cpu_seconds "$DAEMON")
                main_before=$(cpu_seconds "$DAEMON" main)
                out=$(python3 "$REPO/bench/calls_rate.py" step \
                    --database "$WORK/clicktodial.sqlite" \
                    --api "127.0.0.1:$WEB_PORT" --token "$TOKEN" --rate "$rate" \
                    --seconds "$STEP_SECONDS" --settle $((HOLD_MS / 1000 + 40)))
                after=$(cpu_seconds "$DAEMON")
                main_after=$(cpu_seconds "$DAEMON" main)
                cpu=$(echo "$out" | python3 -c "import json, sys
step = json.load(sys.stdin)
print(round(($after - $before) * 1000 / max(1, step['complete']), 3))")
                main_cpu=""
                if [ "$WORKERS" != 1 ]; then  # the main process's share (web, bus hub)
                    main_cpu=$(echo "$out" | python3 -c "import json, sys
step = json.load(sys.stdin)
print(', of which main process:', round(($main_after - $main_before) * 1000
                                        / max(1, step['complete']), 3))")
                fi
                echo "  clicktodial trace=$trace $rate/s: $out, cpu_ms_per_call: $cpu$main_cpu"
                if echo "$out" | grep -q '"passed": true'; then
                    best=$rate
                    echo "$trace $rate $cpu" >> "$WORK/trace-cpu.txt"
                else
                    break
                fi
            done
            echo "$trace $best" >> "$WORK/trace-best.txt"
            if [ "$best" -gt "$CTD_BEST" ]; then CTD_BEST=$best; fi
            stop_phones
            kill "$DAEMON" 2>/dev/null || true
            wait "$DAEMON" 2>/dev/null || true
        done
        if [ -f "$WORK/trace-cpu.txt" ]; then
            python3 - "$WORK/trace-best.txt" "$WORK/trace-cpu.txt" <<'PY'
import sys
from collections import defaultdict
best = defaultdict(list)
for line in open(sys.argv[1]):
    trace, rate = line.split()
    best[trace].append(int(rate))
cpu = defaultdict(lambda: defaultdict(list))
for line in open(sys.argv[2]):
    trace, rate, ms = line.split()
    cpu[trace][int(rate)].append(float(ms))
common = set.intersection(*(set(rates) for rates in cpu.values()))
for trace in best:
    mean = [sum(v) / len(v) for rate, v in cpu[trace].items() if rate in common]
    ms = sum(mean) / len(mean) if mean else float("nan")
    print(f"  clicktodial trace={trace}: best zero-failure rate per run {best[trace]} calls/s;"
          f" {ms:.3f} CPU ms per call over the steps {sorted(common)}"
          f" ({1000 / ms:.0f} calls/s at one core)")
if {"on", "off"} <= set(cpu):
    def mean_ms(trace):
        values = [sum(v) / len(v) for rate, v in cpu[trace].items() if rate in common]
        return sum(values) / len(values)
    ratio = mean_ms("off") / mean_ms("on")
    print(f"  trace on / off, calls/s at one core: {ratio:.3f} ({(1 - ratio) * 100:.1f} % fewer"
          " with tracing on)")
PY
        fi
        if [ "$HELD" -eq 0 ] || [ "$WORKERS" != 1 ]; then
            continue
        fi
        # Memory per held call, on a fresh daemon and database: one that already ran the
        # rate steps keeps their peak (freed memory stays in its heap), and held calls
        # would first fill that.
        rm -f "$WORK"/clicktodial.sqlite*
        start_daemon "$(echo "$TRACE" | cut -d' ' -f1)"
        start_phones 600000
        out=$(python3 "$REPO/bench/calls_rate.py" hold --api "127.0.0.1:$WEB_PORT" \
            --token "$TOKEN" \
            --rate "$HOLD_RATE" --calls "$HELD" --pid "$DAEMON" --settle 120 --quiet 40)
        echo "  clicktodial memory at $HELD held calls: $out"
        stop_phones
        kill "$DAEMON" 2>/dev/null || true
        wait "$DAEMON" 2>/dev/null || true
        ;;
    count)
        rm -f "$WORK"/clicktodial.sqlite*
        CALLCOUNT_TOP="$WORK/callcount-top" start_daemon "$(echo "$TRACE" | cut -d' ' -f1)" \
            "$WORK/callcount"
        start_phones "$HOLD_MS"
        # A warm-up step, not counted: first-use costs (imports, caches, statements).
        python3 "$REPO/bench/calls_rate.py" step --database "$WORK/clicktodial.sqlite" \
            --api "127.0.0.1:$WEB_PORT" --token "$TOKEN" --rate "${COUNT_RATE:-20}" \
            --seconds 1 --settle $((HOLD_MS / 1000 + 40)) > /dev/null
        sleep "${COUNT_LINGER:-33}"
        out=$(python3 "$REPO/bench/calls_rate.py" step --database "$WORK/clicktodial.sqlite" \
            --api "127.0.0.1:$WEB_PORT" --token "$TOKEN" --rate "${COUNT_RATE:-20}" \
            --seconds "${COUNT_SECONDS:-5}" --settle $((HOLD_MS / 1000 + 40)) \
            --count-pid "$DAEMON" --count-linger "${COUNT_LINGER:-33}" \
            --tick "${COUNT_TICK:-0.5}")
        sleep 1
        if [ -n "${COUNT_TOP:-}" ]; then cp "$WORK/callcount-top" "$COUNT_TOP"; fi
        python3 - "$out" "$WORK/callcount" "$WORK/callcount-top" <<'PY'
import json, re, sys
step = json.loads(sys.argv[1])
calls, c_calls = map(int, open(sys.argv[2]).read().split())
ok = max(1, step["complete"])
# Copies a phone retransmitted because the daemon answered late (a loaded machine): each
# costs a parse and a handler and inflates the count. A call without them is 6 datagrams
# received here (the phones' answers, ACK and BYE as the two scenarios send them); more
# per call means copies: compare runs at 6.00.
received = sum(
    int(line.split()[0])
    for line in open(sys.argv[3])
    if re.search(r"\bdatagramReceived\b", line)
)
print(f"  clicktodial: {calls / ok:.0f} Python calls per complete call (and {c_calls / ok:.0f}"
      f" calls of built-ins; {step['complete']} of {step['placed']} calls complete at"
      f" {step['offered_rate']:g}/s, {received / ok:.2f} datagrams received per call, 6.00"
      f" without retransmissions; every thread of the daemon): {json.dumps(step)}")
PY
        stop_phones
        kill "$DAEMON" 2>/dev/null || true
        wait "$DAEMON" 2>/dev/null || true
        ;;
    sippy)
        if ! command -v b2bua > /dev/null; then
            echo "  sippy: b2bua not installed (pip install sippy): skipped"
            continue
        fi
        # The full b2bua (foreground, no RADIUS, no accounting), not b2bua_simple; a UAS
        # whose Contact says ";transport=udp": Sippy 2.5.0 compares the transport
        # case-sensitively and fails every BYE to SIPp's built-in uas (";transport=UDP").
        b2bua -f -u -A 0 -l 127.0.0.1 -p "$SIPPY_PORT" -s "127.0.0.1:$UAS_PORT" \
            -L "$WORK/sippy.log" > "$WORK/sippy.out" 2>&1 &
        SIPPY=$!
        PIDS="$PIDS $SIPPY"
        sipp -sf "$REPO/bench/sipp/uas_lowercase.xml" -i 127.0.0.1 -p "$UAS_PORT" -nostdin \
            -bg -timeout 900s -max_socket 100000 -buff_size 4194304 \
            > "$WORK/sipp-uas.out" 2>&1 || true
        wait_udp "$SIPPY_PORT"
        for rate in $RATES; do
            count=$(python3 -c "print(int($rate * $STEP_SECONDS))")
            before=$(cpu_seconds "$SIPPY")
            started=$(date +%s.%N)
            if timeout $((STEP_SECONDS + HOLD_MS / 1000 + 60)) sipp -sn uac -i 127.0.0.1 \
                -p "$UAC_PORT" "127.0.0.1:$SIPPY_PORT" -r "$rate" -m "$count" -d "$HOLD_MS" \
                -nostdin -timeout $((STEP_SECONDS + HOLD_MS / 1000 + 50))s \
                -trace_screen -screen_file "$WORK/uac-$rate.screen" > /dev/null 2>&1; then
                # SIPp completes every call however long it takes: the step passes only if
                # the calls went through at >= 95 % of the offered rate, as clicktodial's
                # steps must (the calls' set-up time: the run's length less one hold).
                achieved=$(python3 -c "import time; print(round($count / max(time.time() - $started - $HOLD_MS / 1000, 0.001), 1))")
                cpu=$(python3 -c "print(round(($(cpu_seconds "$SIPPY") - $before) * 1000 / $count, 3))")
                if python3 -c "import sys; sys.exit(0 if $achieved >= 0.95 * $rate else 1)"; then
                    echo "  sippy $rate/s: $count calls, all successful at $achieved/s, cpu_ms_per_call: $cpu"
                    SIPPY_BEST=$rate
                else
                    echo "  sippy $rate/s: $count calls, all successful but at $achieved/s (< 95 %), cpu_ms_per_call: $cpu"
                    break
                fi
            else
                failed=$(grep -m1 "Failed call" "$WORK/uac-$rate.screen" 2>/dev/null || true)
                echo "  sippy $rate/s: failures ($failed)"
                break
            fi
        done
        kill "$SIPPY" 2>/dev/null || true
        # shellcheck disable=SC2046
        for pid in $(own_netns $(ps -eo pid,args \
            | awk -v p="$UAS_PORT" '$2 == "sipp" && $0 ~ "-p " p {print $1}')); do
            kill "$pid" 2>/dev/null || true
        done
        ;;
    esac
done
echo "highest rate with zero failures: clicktodial ${CTD_BEST}/s, sippy b2bua ${SIPPY_BEST}/s"
