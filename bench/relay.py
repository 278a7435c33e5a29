"""
What a relayed call costs: the daemon's CPU per call setup through the media
relay, and rtpengine's own CPU per call.

A. Daemon. N click-to-dial calls (Flow IV) are set up, connected and hung up
   on the in-memory network of the unit tests (clicktodial.testing.callfakes:
   the real UA core, transactions and call controller; no sockets), once
   without a relay and once through a real ``RtpEngineRelay`` + ``NgClient``
   whose datagram port answers each command at once with an rtpengine-like
   reply (the reply rtpengine 10.5 gives: the rewritten SDP, unsorted keys).
   The difference of this process's CPU time (``time.process_time``) per call
   is what the relay adds to a call setup in the daemon: the ng commands
   (offer, answer, delete) encoded, matched and decoded, the bridge, the SDP.
   The sockets' system calls (3 sendto + 3 recvfrom a call) are not in it.
B. rtpengine. rtpengine (Debian rtpengine-daemon, userspace, started here on
   127.0.0.1) gets N calls' offer, answer and delete over a blocking UDP
   socket, one command at a time; its CPU (utime+stime of /proc/PID/stat)
   per call and the round trips are reported.  No RTP is sent: this is the
   signalling cost; forwarding is per packet.

Loopback only, bounded: run inside ``unshare -n``:

    unshare -n sh -c 'ip link set lo up && PYTHONPATH=. python3 bench/relay.py --calls 300'
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

from clicktodial.calls.relay import RelaySettings
from clicktodial.media.bencode import bdecode, bencode
from clicktodial.media.rtpengine import NgClient, RtpEngineRelay
from clicktodial.testing.callfakes import CallWorld
from clicktodial.testing.uafakes import Answer, sdp

NG = ("127.0.0.1", 22299)


class AnsweringPort:
    """A datagram port whose 'rtpengine' answers every command at once."""

    def __init__(self, client: NgClient) -> None:
        self.client = client
        client.makeConnection(self)  # type: ignore[arg-type]
        self.reply_sdp = sdp("relay", host="203.0.113.50", port=30000)

    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
        cookie, _, body = datagram.partition(b" ")
        command = bdecode(body)
        assert isinstance(command, dict)
        if command["command"] in (b"offer", b"answer"):
            reply = b"d3:sdp" + str(len(self.reply_sdp)).encode() + b":" + self.reply_sdp
            reply += b"6:result2:oke"
        else:
            reply = b"d6:result2:oke"
        self.client.datagramReceived(cookie + b" " + reply, addr)

    def stopListening(self) -> None:
        pass


def daemon_cost(calls: int, relayed: bool) -> float:
    """CPU seconds per call (setup, connected, hang-up) on the in-memory network."""
    world = CallWorld(policy="flow4")
    if relayed:
        client = NgClient(world.clock, [NG])
        AnsweringPort(client)
        world.controller.relay = RelaySettings(RtpEngineRelay(client))
    alice = world.phone("alice", "127.0.0.2", answer=Answer(ring=False, sdp=sdp("alice")))
    world.phone("bob", "127.0.0.3", answer=Answer(ring=False, sdp=sdp("bob")))
    started = time.process_time()
    for _ in range(calls):
        info = world.place("alice", "bob")
        world.run(0.5)
        assert world.controller.get_call(info.call_id).state == "connected"  # type: ignore[union-attr]
        alice.sessions[0].bye()
        world.run(0.5)
    return (time.process_time() - started) / calls


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def rtpengine_cost(calls: int) -> tuple[float, float, float]:
    """rtpengine's CPU seconds per call, median and 99th percentile round trip (s)."""
    process = subprocess.Popen(
        [
            "rtpengine",
            "--config-file=none",
            "--foreground",
            "--log-stderr",
            "--table=-1",
            "--interface=127.0.0.1",
            f"--listen-ng={NG[0]}:{NG[1]}",
            "--port-min=33000",
            "--port-max=39999",
            "--delete-delay=0",
            "--log-level=3",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    counter = 0

    def command(body: dict[str, object]) -> float:
        nonlocal counter
        counter += 1
        cookie = f"b{counter}".encode()
        sent = time.perf_counter()
        sock.sendto(cookie + b" " + bencode(body), NG)  # type: ignore[arg-type]
        while True:
            reply = sock.recv(65535)
            if reply.startswith(cookie + b" "):
                break
        assert b"error" not in reply, reply
        return time.perf_counter() - sent

    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                command({"command": "ping"})
                break
            except OSError:
                assert time.monotonic() < deadline, "rtpengine did not start"
                time.sleep(0.1)
        ticks = os.sysconf("SC_CLK_TCK")
        before = cpu_ticks(process.pid)
        round_trips = []
        for n in range(calls):
            call_id = f"bench-{n}"
            round_trips.append(
                command(
                    {
                        "command": "offer",
                        "call-id": call_id,
                        "from-tag": "caller",
                        "sdp": sdp("a", host="192.168.1.10", port=4000),
                        "received-from": ["IP4", "172.30.1.2"],
                        "flags": ["SIP-source-address"],
                        "ICE": "remove",
                        "replace": ["session-connection"],
                    }
                )
            )
            round_trips.append(
                command(
                    {
                        "command": "answer",
                        "call-id": call_id,
                        "from-tag": "caller",
                        "to-tag": "callee",
                        "sdp": sdp("b", host="192.168.2.10", port=5000),
                        "received-from": ["IP4", "172.30.2.2"],
                        "flags": ["SIP-source-address"],
                        "ICE": "remove",
                        "replace": ["session-connection"],
                    }
                )
            )
            round_trips.append(command({"command": "delete", "call-id": call_id}))
        per_call = (cpu_ticks(process.pid) - before) / ticks / calls
        round_trips.sort()
        return per_call, statistics.median(round_trips), round_trips[int(len(round_trips) * 0.99)]
    finally:
        sock.close()
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    calls = min(args.calls, 5000)
    plain = min(daemon_cost(calls, False) for _ in range(3))
    relayed = min(daemon_cost(calls, True) for _ in range(3))
    print(
        f"daemon, {calls} calls (best of 3): {plain * 1e3:.2f} ms CPU a call without relay,"
        f" {relayed * 1e3:.2f} ms relayed: +{(relayed - plain) * 1e3:.2f} ms"
        f" ({(relayed / plain - 1) * 100:.0f} %) a relayed call setup"
    )
    if shutil.which("rtpengine") is None:
        print("rtpengine not installed: part B skipped")
        return
    per_call, median, p99 = rtpengine_cost(calls)
    print(
        f"rtpengine, {calls} calls (offer, answer, delete): {per_call * 1e3:.3f} ms CPU a call;"
        f" round trip median {median * 1e6:.0f} us, 99th percentile {p99 * 1e6:.0f} us"
    )


if __name__ == "__main__":
    sys.exit(main())
