#!/bin/sh
# bench/compare.sh — issue 16's figures of record, before and after, in one run
# (docs/benchmarks.md, "Issue 16: the figures of record").
#
# BEFORE is another checkout (e.g. `git worktree add --detach /tmp/before COMMIT`); AFTER is
# this one. Each benchmark runs on AFTER, then on BEFORE, one at a time (never two at once:
# they share the machine's cores), each in its own network namespace (the scripts re-run
# themselves under `unshare -n`):
#   1. bench/register_cpu.sh, SQLite: CPU per registration beside Kamailio (same rounds,
#      same load) and Python calls per registration;
#   2. the same on PostgreSQL (no Kamailio);
#   3. bench/register.sh: the highest REGISTER rate with zero failures, SQLite and PostgreSQL,
#      with WORKERS worker processes on AFTER (Kamailio with as many children), one on BEFORE;
#   4. bench/calls.sh: complete 3PCC calls/s with zero failures and CPU per call, Sippy's
#      b2bua beside it, and Python calls per complete call (the "count" target; on BEFORE with
#      AFTER's copies of the calls scripts when BEFORE has none: BEFORE_COUNT, a copy of BEFORE
#      with AFTER's bench/calls.sh, calls_rate.py, twistd_callcount.py and bench/sipp/);
#   5. memory per held call at HELD (10,000) held calls, on fresh daemons.
# Every step is bounded in count and time by the script it calls.
#
# Usage: bench/compare.sh BEFORE [BEFORE_COUNT]
# Environment: REG_RATES ("1000 1500 2000 3000 4000 6000 8000 12000"), CALL_RATES
# ("300 400 500 600 800 1000"), WORKERS ("1 2"), HELD (10000), PARTS ("1 2 3 4 5").
set -eu

A=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "$1" && pwd)
BC=${2:-}
REG_RATES=${REG_RATES:-"1000 1500 2000 3000 4000 6000 8000 12000"}
CALL_RATES=${CALL_RATES:-"300 400 500 600 800 1000"}
WORKERS=${WORKERS:-"1 2"}
HELD=${HELD:-10000}
PARTS=${PARTS:-"1 2 3 4 5"}

stamp() { echo; echo "=== $* — $(date -u +%H:%M:%S) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg)"; }
part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

for tree in "$A" "$B"; do
    label=after; [ "$tree" = "$A" ] || label=before
    if part 1; then
        stamp "register_cpu, SQLite, $label ($tree)"
        (cd "$tree" && STORE=sqlite COUNT=3000 RATE=300 ROUNDS=2 bench/register_cpu.sh) || true
    fi
done
for tree in "$A" "$B"; do
    label=after; [ "$tree" = "$A" ] || label=before
    if part 2; then
        stamp "register_cpu, PostgreSQL, $label ($tree)"
        (cd "$tree" && STORE=postgresql COUNT=3000 RATE=300 ROUNDS=2 KAMAILIO=0 \
            bench/register_cpu.sh) || true
    fi
done
if part 3; then
    stamp "register.sh, after, workers $WORKERS"
    (cd "$A" && WORKERS="$WORKERS" TARGETS="sqlite postgresql kamailio" \
        bench/register.sh $REG_RATES) || true
    stamp "register.sh, before, one process"
    (cd "$B" && WORKERS=1 TARGETS="sqlite postgresql" bench/register.sh $REG_RATES) || true
fi
if part 4; then
    stamp "calls.sh, after"
    (cd "$A" && TARGETS="clicktodial sippy count" HELD=0 TRACE=off bench/calls.sh $CALL_RATES) \
        || true
    stamp "calls.sh, before"
    (cd "$B" && TARGETS=clicktodial HELD=0 TRACE=off bench/calls.sh $CALL_RATES) || true
    if [ -n "$BC" ]; then
        stamp "calls.sh count, before (with after's calls scripts: $BC)"
        (cd "$BC" && TARGETS=count HELD=0 TRACE=off bench/calls.sh -) || true
    fi
fi
if part 5; then
    for tree in "$A" "$B"; do
        label=after; [ "$tree" = "$A" ] || label=before
        stamp "memory per held call, $label"
        (cd "$tree" && TARGETS=clicktodial HELD="$HELD" TRACE=off bench/calls.sh -) || true
    done
fi
stamp done
