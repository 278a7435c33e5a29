"""
A NAT test network made of network namespaces, inside the test run's own
``unshare -n`` namespace (the "public" one, which only has loopback at first).

Each namespace is held by an ``unshare -n sleep`` child process and entered
with ``nsenter -t PID -n`` (no /run/netns, so no mount namespace is needed).
A home is a "router" namespace (WAN veth to the public namespace, nft
masquerade, IP forwarding, its own conntrack UDP timeout) and a "home"
namespace behind it (LAN veth, default route via the router).  The public
namespace gets ``PUBLIC`` on its loopback: the daemon and rtpengine listen
there.  Private addresses only, in namespaces this module made; every process
is killed by its PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence

import attrs

#: The address of the daemon and rtpengine in the public namespace.
PUBLIC = "172.30.0.1"

_MASQUERADE = """
table ip nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade{random}
  }}
}}
"""


def nat_tools_missing() -> str | None:
    """Why the NAT network cannot be built here, or None."""
    for tool in ("ip", "nft", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (iproute2, nftables, util-linux)"
    return None


@attrs.define
class Home:
    """One home: its router's namespace and WAN address, the phone's namespace and address."""

    name: str
    router_pid: int
    wan: str
    home_pid: int
    address: str


class NatNetwork:
    def __init__(self) -> None:
        self._holders: list[subprocess.Popen[bytes]] = []
        self.homes: list[Home] = []
        run(None, "ip", "link", "set", "lo", "up")
        run(None, "ip", "addr", "add", f"{PUBLIC}/32", "dev", "lo")

    def _namespace(self) -> int:
        holder = subprocess.Popen(["unshare", "-n", "sleep", "3600"])
        self._holders.append(holder)
        # Until unshare has made the new namespace, the PID names ours.
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/net") == ours:
            assert time.monotonic() < deadline, "unshare -n did not make a namespace"
            time.sleep(0.01)
        return holder.pid

    def add_home(
        self,
        name: str,
        index: int,
        lan: str = "192.168.1",
        *,
        random_ports: bool = False,
        udp_timeout: int | None = None,
    ) -> Home:
        """
        A home behind its own NAT: WAN 172.30.INDEX.2 (the public side 172.30.INDEX.1),
        LAN ``lan``.0/24 with the router at .1 and the phone's namespace at .10.
        ``random_ports``: the NAT picks random source ports (nft ``masquerade random``).
        ``udp_timeout``: the router's conntrack UDP timeout (its mapping lifetime), seconds.
        """
        router, home = self._namespace(), self._namespace()
        public_side, wan = f"172.30.{index}.1", f"172.30.{index}.2"
        veth = f"to-{name}"[:15]
        run(
            None,
            "ip",
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "wan",
            "netns",
            str(router),
        )
        run(None, "ip", "addr", "add", f"{public_side}/24", "dev", veth)
        run(None, "ip", "link", "set", veth, "up")
        run(router, "ip", "link", "set", "lo", "up")
        run(router, "ip", "addr", "add", f"{wan}/24", "dev", "wan")
        run(router, "ip", "link", "set", "wan", "up")
        run(router, "ip", "route", "add", "default", "via", public_side)
        run(
            router,
            "ip",
            "link",
            "add",
            "lan",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            str(home),
        )
        run(router, "ip", "addr", "add", f"{lan}.1/24", "dev", "lan")
        run(router, "ip", "link", "set", "lan", "up")
        run(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ruleset = _MASQUERADE.format(random=" random" if random_ports else "")
        run(router, "nft", "-f", "-", stdin=ruleset)
        if udp_timeout is not None:
            for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
                run(router, "sysctl", "-qw", f"net.netfilter.{key}={udp_timeout}")
        address = f"{lan}.10"
        run(home, "ip", "link", "set", "lo", "up")
        run(home, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        run(home, "ip", "link", "set", "eth0", "up")
        run(home, "ip", "route", "add", "default", "via", f"{lan}.1")
        made = Home(name, router, wan, home, address)
        self.homes.append(made)
        return made

    def close(self) -> None:
        """Remove our veth ends and address; kill the namespace holders (by PID)."""
        for home in self.homes:
            subprocess.run(["ip", "link", "del", f"to-{home.name}"[:15]], capture_output=True)
        self.homes.clear()
        subprocess.run(["ip", "addr", "del", f"{PUBLIC}/32", "dev", "lo"], capture_output=True)
        for holder in self._holders:
            if holder.poll() is None:
                holder.kill()
            holder.wait()
        self._holders.clear()


def in_namespace(pid: int | None, command: Sequence[str]) -> list[str]:
    """``command`` run in the network namespace of ``pid`` (None: this one)."""
    return list(command) if pid is None else ["nsenter", "-t", str(pid), "-n", *command]


def run(pid: int | None, *command: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        in_namespace(pid, command), input=stdin, capture_output=True, text=True, timeout=20
    )
    if result.returncode:
        raise AssertionError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout
