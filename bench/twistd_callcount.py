"""twistd with a count of Python function calls, switched by signals (bench/register_cpu.sh).

    python3 bench/twistd_callcount.py OUT -n --pidfile= clicktodial --config FILE

A profile hook is set before twistd starts, in this thread and (``threading.setprofile``)
in every thread started later: the reactor thread and the store's threads. SIGUSR1 zeroes
the counts and starts counting; SIGUSR2 stops and writes ``calls c_calls`` to OUT, where
``calls`` counts ``call`` events (a Python function, method, generator or coroutine
entered or resumed) and ``c_calls`` counts ``c_call`` events (a built-in called from
Python). With CALLCOUNT_TOP=FILE in the environment, each Python function's count is
written to FILE too, most called first. The hook runs on every call even when not
counting: CPU figures of a daemon started this way are inflated, and
bench/register_cpu.sh does not print them.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

_out = ""
_counting = False
_calls = 0
_c_calls = 0
_top_file = os.environ.get("CALLCOUNT_TOP", "")
_by_code: collections.Counter[Any] = collections.Counter()


def _hook(frame: FrameType, event: str, arg: Any) -> None:
    global _calls, _c_calls
    if _counting:
        if event == "call":
            _calls += 1
            if _top_file:
                _by_code[frame.f_code] += 1
        elif event == "c_call":
            _c_calls += 1


def _start(signum: int, frame: FrameType | None) -> None:
    global _counting, _calls, _c_calls
    _calls = _c_calls = 0
    _by_code.clear()
    _counting = True


def _stop(signum: int, frame: FrameType | None) -> None:
    global _counting
    _counting = False
    with open(_out, "w") as f:
        f.write(f"{_calls} {_c_calls}\n")
    if _top_file:
        with open(_top_file, "w") as f:
            for code, n in _by_code.most_common():
                f.write(f"{n:8d} {code.co_qualname} {code.co_filename}:{code.co_firstlineno}\n")


def main() -> None:
    global _out
    _out = sys.argv[1]
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    threading.setprofile(_hook)
    sys.setprofile(_hook)
    from twisted.scripts.twistd import run

    run()


if __name__ == "__main__":
    main()
