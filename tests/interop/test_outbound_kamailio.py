"""
Calls out through a trunk, end to end, against a Kamailio provider
(tests/interop/kamailio_provider.cfg: 401 for REGISTER, 407 for INVITE, relays to its
"PSTN phone").  The PSTN phone is a real softphone: a baresip answering the number
+442079460958 behind Kamailio, so audio is checked both ways with tones (ausine, sndfile).

- a click (``POST /api/v1/calls {"number": "+44 20 7946 0958"}``) rings alice's baresip;
  when it answers, the daemon calls the number through Kamailio after the 407 round; the
  phones hear each other's tones; the hang-up from either side ends both legs and the
  record says who, and names the trunk;
- the provider registration is refreshed while the call runs (10 s granted);
- a blocked destination (international, premium) is refused: no INVITE leaves;
- fail-over: the first trunk's provider answers 503, the call goes through the second;
- early media: the PSTN phone (SIPp here) sends 183 with SDP and streams its tone before
  answering; alice hears the tone while the call still rings at the far end.

Everything on loopback (daemon 127.0.0.1, providers 127.0.0.20/21, PSTN phone 127.0.0.30),
inside ``unshare -n``; every wait bounded; processes stopped by their PID.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calltools import (
    METRICS_TOKEN,
    SIPP_SCENARIOS,
    Baresip,
    api_token,
    demo_phone,
    needs_baresip,
    needs_baresip_sndfile,
    received_tone,
    sipp_argv,
    web_api_get,
)
from conftest import (  # type: ignore[import-not-found]
    find_free_port,
    stop_process,
    wait_until,
)
from kamailiotools import KamailioProvider, PrivateDNS, in_private_network

numpy = pytest.importorskip("numpy")

pytestmark = [
    pytest.mark.interop,
    needs_baresip,
    needs_baresip_sndfile,
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in ("kamailio", "sipp", "sox")),
        reason="needs kamailio, sipp and sox",
    ),
]

USER, PASSWORD = "4930111", "trunk-secret-1"
NUMBER = "+442079460958"
PSTN_HOST = "127.0.0.30"
TONES = {"alice": 440.0, "pstn": 880.0}
TIMEOUT = 30.0


def early_sipp(tmp_path: Path, scenario: str, pause_ms: int) -> tuple[subprocess.Popen[bytes], int]:
    """A SIPp far end running ``scenario`` (early media: ``tone.wav`` at the PSTN tone),
    and its SIP port."""
    tone = tmp_path / "tone.wav"
    if not tone.exists():
        subprocess.run(
            ["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", str(tone)]
            + ["synth", "30", "sine", str(int(TONES["pstn"]))],
            check=True,
            timeout=60,
        )
    port = find_free_port()
    process = subprocess.Popen(
        sipp_argv(
            SIPP_SCENARIOS / scenario,
            PSTN_HOST,
            port,
            delay_ms=pause_ms,
            extra=("-mi", PSTN_HOST, "-mp", str(find_free_port())),
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    return process, port


class Stopper:
    """A subprocess to stop (by its PID) at the end of a test."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def stop(self) -> None:
        stop_process(self.process)


class World:
    """The daemon, alice's baresip, the PSTN baresip and one or two Kamailio providers."""

    def __init__(
        self,
        tmp_path: Path,
        start_daemon: Callable[[str], Any],
        running: list[Any],
        *,
        policy: str = "flow4",
        failing_first: bool = False,
        early_media: bool = False,
        srv_destinations: bool = False,
        early_then_fail: bool = False,
    ) -> None:
        """
        :param failing_first: a second trunk ``failing`` (a provider answering 503) routed
            before ``provider``.
        :param srv_destinations: one trunk ``provider`` named by the DNS name
            ``provider.test`` whose SRV records give two destinations: first the failing
            provider (127.0.0.21), then the working one (127.0.0.20) (:class:`PrivateDNS`).
        :param early_then_fail: a first trunk ``failing`` whose far end (SIPp) sends early
            media, then 503; the PSTN baresip behind ``provider``.
        """
        if early_media:
            # SIPp: 183 with SDP, then its tone streamed before any 200.
            self.early, port = early_sipp(tmp_path, "pstn_early_media.xml", 20_000)
            running.append(Stopper(self.early))
            pstn = (PSTN_HOST, port)
        else:
            self.pstn = Baresip(
                tmp_path / "baresip-pstn",
                "pstn",
                f"<sip:{NUMBER}@provider.test>;regint=0;answermode=auto;audio_codecs=PCMU\n",
                audio_source=f"ausine,{int(TONES['pstn'])}",
                control=True,
                record=True,
                host=PSTN_HOST,
            )
            running.append(self.pstn)
            pstn = (PSTN_HOST, self.pstn.port)
        failing_pstn = pstn
        if early_then_fail:
            # The first trunk's far end: 183 with SDP and an announcement, then 503.
            self.early, port = early_sipp(tmp_path, "pstn_early_media_503.xml", 3_000)
            running.append(Stopper(self.early))
            failing_pstn = (PSTN_HOST, port)
        self.provider = KamailioProvider(
            tmp_path,
            address="127.0.0.20",
            port=5060,
            user=USER,
            password=PASSWORD,
            pstn=pstn,
            max_expires=10,
        )
        running.append(self.provider)
        trunks = "provider"
        self.failing: KamailioProvider | None = None
        proxy = self.provider.proxy_uri
        if failing_first or srv_destinations or early_then_fail:
            self.failing = KamailioProvider(
                tmp_path,
                address="127.0.0.21",
                port=5060,
                user=USER,
                password=PASSWORD,
                pstn=failing_pstn,
                fail_invites=not early_then_fail,
            )
            running.append(self.failing)
        if failing_first or early_then_fail:
            trunks = "failing provider"
        if srv_destinations:
            assert self.failing is not None
            running.append(
                PrivateDNS(
                    tmp_path,
                    "provider.test",
                    [
                        "SRV('_sip._udp.provider.test', 10, 0, 5060, 'sip1.provider.test')",
                        "SRV('_sip._udp.provider.test', 20, 0, 5060, 'sip2.provider.test')",
                        f"A('sip1.provider.test', {self.failing.address!r})",
                        f"A('sip2.provider.test', {self.provider.address!r})",
                    ],
                )
            )
            proxy = "sip:provider.test"
        self.sip_port, self.web_port = find_free_port(), find_free_port()
        ini = (
            f"[sip]\ndomain = 127.0.0.1\nlisten = 127.0.0.1:{self.sip_port}\n"
            f"[web]\nlisten = tcp:{self.web_port}:interface=127.0.0.1\n"
            f"metrics_token = {METRICS_TOKEN}\n"
            f"[store]\nurl = sqlite:///{tmp_path}/clicktodial.sqlite\nauto_upgrade = yes\n"
            "demo_users = yes\n"
            "[registrar]\ndigest_algorithms = MD5\n"
            f"[calls]\npolicy = {policy}\ncallee_ring_timeout = 60\n"
            "[dialplan]\ncountry_code = 44\nroutes =\n"
            f"    +44  {trunks}\n"
            + self._trunk("provider", self.provider, proxy, register=not srv_destinations)
            + (
                self._trunk("failing", self.failing, self.failing.proxy_uri)
                if self.failing is not None
                else ""
            )
        )
        self.daemon = start_daemon(ini)
        self.daemon.wait_for_tcp(self.web_port)
        self.daemon.wait_for_log("created demo users")
        self.token = api_token(tmp_path / "daemon0.ini", "alice")
        self.alice = demo_phone(tmp_path, "alice", self.sip_port, "auto", TONES["alice"])
        running.append(self.alice)
        self.daemon.wait_for_log("REGISTER sip:alice@127.0.0.1: 1 binding(s)", TIMEOUT)

    @staticmethod
    def _trunk(name: str, provider: KamailioProvider, proxy: str, register: bool = False) -> str:
        return (
            f"[trunk:{name}]\nproxy = {proxy}\ndomain = {provider.realm}\n"
            f"username = {USER}\npassword = {PASSWORD}\n"
            f"register = {'yes' if register else 'no'}\nregister_expires = 60\n"
            "caller_id = +441632960001\n"
        )

    def dial(self, number: str) -> tuple[int, dict[str, Any]]:
        """``POST /api/v1/calls {"number": ...}`` as alice: the status and the JSON."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/api/v1/calls",
            method="POST",
            data=json.dumps({"number": number}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, dict(json.loads(response.read()))
        except urllib.error.HTTPError as e:
            return e.code, dict(json.loads(e.read()))

    def call(self, call_id: str) -> dict[str, Any]:
        return dict(web_api_get(self.web_port, self.token, f"/calls/{call_id}"))

    def wait_state(self, call_id: str, *states: str) -> dict[str, Any]:
        wait_until(
            lambda: self.call(call_id)["state"] in states,
            TIMEOUT,
            f"call {call_id} to be {' or '.join(states)}",
        )
        return self.call(call_id)

    def invites_relayed(self) -> int:
        return self.provider.output().count("relayed to the PSTN phone")


def talk_and_hang_up(world: World, call_id: str, side: str) -> dict[str, Any]:
    world.wait_state(call_id, "connected")
    time.sleep(4)  # media both ways
    (world.alice if side == "caller" else world.pstn).command("hangup")
    call = world.wait_state(call_id, "ended")
    other = world.pstn if side == "caller" else world.alice
    other.wait_for_output("terminated", TIMEOUT)  # the other leg got the BYE
    world.alice.stop()
    world.pstn.stop()
    # Each phone heard the other's tone: the media went directly between them.
    assert abs(received_tone(world.alice) - TONES["pstn"]) < 15
    assert abs(received_tone(world.pstn) - TONES["alice"]) < 15
    return call


@pytest.mark.parametrize(("policy", "side"), [("flow4", "caller"), ("flow1", "callee")])
def test_a_click_calls_the_number_through_the_trunk_and_either_side_hangs_up(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
    policy: str,
    side: str,
) -> None:
    world = World(tmp_path, start_daemon, running, policy=policy)
    wait_until(lambda: len(world.provider.saved_contacts()) >= 1, TIMEOUT, "the trunk to register")
    status, call = world.dial("+44 20 7946 0958")
    assert status == 201, call
    call_id = call["id"]
    world.wait_state(call_id, "connected")
    # Through Kamailio after the 407 round: the INVITE was challenged, then relayed.
    assert world.invites_relayed() == 1
    world.daemon.wait_for_log("INVITE challenged 407: sending it again with credentials")
    # The registration is refreshed while the call runs (10 s granted: every 5 s).
    registered = len(world.provider.saved_contacts())
    wait_until(
        lambda: len(world.provider.saved_contacts()) > registered,
        TIMEOUT,
        "a registration refresh during the call",
    )
    call = talk_and_hang_up(world, call_id, side)
    assert (call["number"], call["destination_class"], call["trunk"]) == (
        NUMBER,
        "national",
        "provider",
    )
    assert (call["reason"], call["who_hung_up"]) == (f"{side}-hangup", side)


@pytest.mark.parametrize("number", ["+33 1 23 45 67 89", "09098790000"])
def test_a_blocked_destination_is_refused_and_no_invite_leaves(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
    number: str,
) -> None:
    world = World(tmp_path, start_daemon, running)
    status, body = world.dial(number)
    assert status == 403, body
    time.sleep(2)
    assert "INVITE sip:+" not in world.daemon.log()  # the UA core logs each INVITE it sends
    assert world.invites_relayed() == 0
    assert "incoming call" not in world.pstn.output().lower()
    assert "Incoming call" not in world.alice.output()  # the caller was not rung either


def test_a_provider_answering_503_fails_over_to_the_next_trunk(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
) -> None:
    world = World(tmp_path, start_daemon, running, failing_first=True)
    status, call = world.dial("020 7946 0958")
    assert status == 201, call
    call_id = call["id"]
    world.wait_state(call_id, "connected")
    assert world.failing is not None
    world.daemon.wait_for_log("trunk failing failed (503), trying the next one")
    assert world.invites_relayed() == 1
    call = talk_and_hang_up(world, call_id, "caller")
    assert call["trunk"] == "provider"


@pytest.mark.skipif(not in_private_network(), reason="needs unshare -n (its own DNS server)")
def test_a_destination_answering_503_hands_the_call_to_the_trunks_next_srv_destination(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
) -> None:
    """
    RFC 3263 §4.3: the trunk's proxy is a DNS name whose SRV records give two servers; the
    first (priority 10) answers the INVITE with 503, so the same trunk sends it to the
    second (priority 20), which connects the call; no other trunk is involved.
    """
    world = World(tmp_path, start_daemon, running, srv_destinations=True)
    status, call = world.dial("020 7946 0958")
    assert status == 201, call
    call_id = call["id"]
    world.wait_state(call_id, "connected")
    log = world.daemon.log()
    assert "through trunk provider at UDP 127.0.0.21:5060" in log
    assert "trunk provider failed (503), trying the next one" in log
    assert "through trunk provider at UDP 127.0.0.20:5060" in log
    assert world.invites_relayed() == 1
    call = talk_and_hang_up(world, call_id, "caller")
    assert call["trunk"] == "provider"


def test_flow1_a_trunk_failing_after_early_media_fails_over_and_both_sides_talk(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
) -> None:
    """
    Flow I (RFC 3725/3960): the first trunk's far end sends 183 with an announcement, so
    alice's 2xx is ACKed with its answer; then it fails with 503. The call continues as
    Flow IV: the second trunk is INVITEd without an offer, the PSTN baresip's offer in its
    2xx re-INVITEs alice, her answer goes back in the ACK, and the two talk.
    """
    world = World(tmp_path, start_daemon, running, policy="flow1", early_then_fail=True)
    status, call = world.dial(NUMBER)
    assert status == 201, call
    call_id = call["id"]
    world.daemon.wait_for_log("early media from the callee: the caller's ACK", TIMEOUT)
    world.daemon.wait_for_log("trunk failing failed (5", TIMEOUT)
    call = talk_and_hang_up(world, call_id, "caller")
    assert (call["trunk"], call["reason"]) == ("provider", "caller-hangup")


def test_early_media_from_the_provider_reaches_the_caller(
    tmp_path: Path,
    start_daemon: Callable[[str], Any],
    running: list[Any],
) -> None:
    """
    Flow I: the 183's answer ACKs alice's 2xx at once (RFC 3960 gateway model); SIPp
    streams its tone to her before it answers.  (Flow IV forwards early media by
    re-INVITE, docs/calls.md; a SIPp far end cannot send media to an INVITE without offer,
    so that path is covered by tests/calls/test_outbound_trunks.py.)
    """
    world = World(tmp_path, start_daemon, running, policy="flow1", early_media=True)
    status, call = world.dial(NUMBER)
    assert status == 201, call
    call_id = call["id"]
    world.daemon.wait_for_log("early media from the callee", TIMEOUT)
    time.sleep(4)  # the far end's early media only: it has not answered
    assert world.call(call_id)["state"] == "calling-callee"
    world.alice.stop()
    # What alice heard last was the far end's tone, before it ever answered.
    assert abs(received_tone(world.alice) - TONES["pstn"]) < 15
