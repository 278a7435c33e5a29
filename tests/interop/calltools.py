"""
Helpers for the click-to-dial interop tests: a daemon with the demo users, Digest
registration of a phone's address from Python, a client of the web API's calls as an
administrator (:class:`CallsApi`), a headless baresip softphone, and chromium driven by
Playwright.

The phones' bindings are made by real REGISTER requests with Digest authentication,
sent from the very UDP port the phone (SIPp, baresip) then listens on, so the stored
contact and the ``received`` address agree.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import (  # type: ignore[import-not-found]
    REPO_ROOT,
    START_TIMEOUT,
    find_free_port,
    stop_process,
    wait_until,
)

from clicktodial.testing.daemon import run_cli, udp_bound

DOMAIN = "127.0.0.1"

#: Seconds a request sent once over loopback waits for its answer: generous for a loaded
#: 2-core machine (the daemon may be busy with a database thread), finite.
ANSWER_TIMEOUT = 15.0

#: Playwright's bound on each wait of a page (an element, a URL, a script's condition), in
#: ms: a loaded 2-core machine runs chromium, the daemon and the phones at once.
BROWSER_WAIT_MS = 60_000

#: Debian's chromium, and the switches that keep it headless and quiet on a test host.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BARESIP_MODULES = Path("/usr/lib/baresip/modules")

#: Skip marks of the tests that need these programs.
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian chromium not installed"
)
needs_baresip = pytest.mark.skipif(
    shutil.which("baresip") is None, reason="baresip is not installed"
)
needs_baresip_sndfile = pytest.mark.skipif(
    not (BARESIP_MODULES / "sndfile.so").exists(), reason="no baresip sndfile"
)


#: ``[web] metrics_token`` of :func:`daemon_ini`'s daemons: what opens their ``/metrics``.
METRICS_TOKEN = "interop-metrics-token-0123456789"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def daemon_ini(sip_port: int, web_port: int, tmp: str, policy: str = "flow4", **calls: str) -> str:
    """A daemon config: SQLite in ``tmp``, demo users, the web API on ``web_port``."""
    extra = "".join(f"{key} = {value}\n" for key, value in calls.items())
    return (
        "[sip]\n"
        f"domain = {DOMAIN}\n"
        f"listen = 127.0.0.1:{sip_port}\n"
        "[web]\n"
        f"listen = tcp:{web_port}:interface=127.0.0.1\n"
        f"metrics_token = {METRICS_TOKEN}\n"
        "[store]\n"
        f"url = sqlite:///{tmp}/clicktodial.sqlite\n"
        "auto_upgrade = yes\n"
        "demo_users = yes\n"
        "[registrar]\n"
        "digest_algorithms = MD5\n"
        "[calls]\n"
        f"policy = {policy}\n" + extra
    )


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def register(
    user: str,
    password: str,
    port: int,
    sip_port: int,
    expires: int = 600,
    timeout: float = ANSWER_TIMEOUT,
) -> None:
    """
    REGISTER ``sip:user@127.0.0.1:port`` with Digest (MD5) from UDP 127.0.0.1:``port``.

    :raises AssertionError: the registrar did not answer 200.
    """
    status, text = register_status(user, password, port, sip_port, expires, timeout)
    assert status == 200, text


def register_status(
    user: str,
    password: str,
    port: int,
    sip_port: int,
    expires: int = 600,
    timeout: float = ANSWER_TIMEOUT,
    *,
    contacts: list[str] | None = None,
    headers: tuple[str, ...] = (),
    host: str = "127.0.0.1",
) -> tuple[int, str]:
    """
    REGISTER ``contacts`` (default ``<sip:user@HOST:port>``) with ``headers`` added, with
    Digest (MD5) from UDP ``host``:``port``; the final status and response text.
    """
    call_id = secrets.token_hex(8)
    if contacts is None:
        contacts = [f"<sip:{user}@{host}:{port}>"]
    contact_lines = "".join(f"Contact: {contact}\r\n" for contact in contacts)
    extra = "".join(f"{header}\r\n" for header in headers)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, port))
        sock.settimeout(timeout)
        authorization = ""
        for cseq in (1, 2):
            request = (
                f"REGISTER sip:{DOMAIN}:{sip_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
                f"From: <sip:{user}@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
                f"To: <sip:{user}@{DOMAIN}>\r\n"
                f"Call-ID: {call_id}\r\n"
                f"CSeq: {cseq} REGISTER\r\n"
                f"{contact_lines}{extra}"
                f"Expires: {expires}\r\nMax-Forwards: 70\r\n{authorization}"
                "Content-Length: 0\r\n\r\n"
            )
            sock.sendto(request.encode(), ("127.0.0.1", sip_port))
            data, _ = sock.recvfrom(65536)
            text = data.decode(errors="replace")
            status = int(text.split(" ", 2)[1])
            if status != 401 or cseq == 2:
                return status, text
            challenge = re.search(r"WWW-Authenticate:\s*Digest\s+(.*)", text, re.I)
            assert challenge is not None, text
            params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.group(1)))
            uri = f"sip:{DOMAIN}:{sip_port}"
            ha1 = _md5(f"{user}:{params['realm']}:{password}")
            ha2 = _md5(f"REGISTER:{uri}")
            cnonce = secrets.token_hex(4)
            if "qop" in params:
                response = _md5(f"{ha1}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}")
                qop = f', qop=auth, nc=00000001, cnonce="{cnonce}"'
            else:
                response = _md5(f"{ha1}:{params['nonce']}:{ha2}")
                qop = ""
            authorization = (
                f'Authorization: Digest username="{user}", realm="{params["realm"]}", '
                f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", '
                f"algorithm=MD5{qop}\r\n"
            )
    raise AssertionError("unreachable")


def clicktodial_cli(ini: Path, *args: str) -> str:
    """``clicktodial --config INI ARGS`` of this checkout, in the INI file's directory: its
    stdout (:func:`clicktodial.testing.daemon.run_cli`)."""
    return run_cli(ini, *args, tree=REPO_ROOT, timeout=60)


def api_token(ini: Path, user: str) -> str:
    """A web API token for ``user``, made with ``clicktodial token create``."""
    return clicktodial_cli(ini, "token", "create", user).strip()


def web_place_call(web_port: int, token: str, callee: str) -> dict[str, Any]:
    """``POST /api/v1/calls`` as the token's user (the click); the new call."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{web_port}/api/v1/calls",
        method="POST",
        data=json.dumps({"callee": callee}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        assert response.status == 201
        return dict(json.loads(response.read()))


def web_api_get(web_port: int, token: str, path: str) -> Any:
    """``GET /api/v1{path}`` as the token's user; the JSON answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{web_port}/api/v1{path}", headers={"Authorization": f"Bearer {token}"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return json.loads(response.read())


def assert_failed_without_answer(web_port: int, token: str, call_id: str, status: int) -> None:
    """The call ends ``failed`` with ``status`` in the web API and its user's history, with
    no ``answered`` and no ``duration``: it never was connected."""
    wait_until(
        lambda: web_api_get(web_port, token, f"/calls/{call_id}")["state"] in ("ended", "failed"),
        30,
        "the call to end",
    )
    call = web_api_get(web_port, token, f"/calls/{call_id}")
    assert call["state"] == "failed", call
    assert call.get("answered") is None and call.get("duration") is None, call
    assert call["sip_status"] == status, call
    history = web_api_get(web_port, token, "/calls")
    assert [c["state"] for c in history["calls"] if c["id"] == call_id] == ["failed"], history


def add_user(
    ini: Path,
    name: str,
    *,
    password: str | None = None,
    sip_password: str | None = None,
    admin: bool = False,
    display_name: str | None = None,
) -> None:
    """``clicktodial user add NAME`` with the web and SIP passwords given, an administrator
    when ``admin``."""
    options = ["--admin"] if admin else []
    for option, value in (
        ("--password", password),
        ("--sip-password", sip_password),
        ("--display-name", display_name),
    ):
        if value is not None:
            options += [option, value]
    clicktodial_cli(ini, "user", "add", name, *options)


def admin_token(ini: Path, user: str = "operator") -> str:
    """A web API token for a new administrator ``user`` (``clicktodial user add --admin``,
    then ``token create``)."""
    add_user(
        ini,
        user,
        password=secrets.token_hex(12),
        sip_password=secrets.token_hex(12),
        admin=True,
    )
    return api_token(ini, user)


class CallsApi:
    """
    The daemon's calls through its web API (``/api/v1/calls``) as an administrator, who
    places calls for any users (a batch of one); hanging up ``by`` a user goes with that
    user's own token. Calls are the API's JSON (``id``, ``state``, ``reason``, ...). Also
    the daemon's ``/metrics`` (what the UA core and the controller still hold; opened with
    :data:`METRICS_TOKEN`).

    :param config: the daemon's INI file (tokens are made with ``clicktodial --config``).
    :param admin: the administrator to create (daemons sharing a database need one each).
    """

    def __init__(
        self, web_port: int, config: Path, *, host: str = "127.0.0.1", admin: str = "operator"
    ) -> None:
        self.base = f"http://{host}:{web_port}/api/v1/calls"
        self.metrics_url = f"http://{host}:{web_port}/metrics"
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.config = config
        self.tokens = {"": admin_token(config, admin)}

    def _token(self, user: str) -> str:
        if user not in self.tokens:
            self.tokens[user] = api_token(self.config, user)
        return self.tokens[user]

    def _call(
        self, method: str, url: str, body: object = None, as_user: str = ""
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self._token(as_user)}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def try_place(self, caller: str, callee: str) -> dict[str, Any]:
        """Place a call (a batch of one): ``{"status": 201, "call": ...}`` or
        ``{"status": 4xx, "error": ...}``."""
        status, body = self._call(
            "POST", self.base, {"calls": [{"caller": caller, "callee": callee}]}
        )
        assert status == 200, body
        (result,) = body["calls"]
        return dict(result)

    def place(self, caller: str, callee: str) -> dict[str, Any]:
        result = self.try_place(caller, callee)
        assert result["status"] == 201, result
        return dict(result["call"])

    def get(self, call_id: str) -> dict[str, Any]:
        status, body = self._call("GET", f"{self.base}/{call_id}")
        assert status == 200, body
        return dict(body)

    def hang_up(self, call_id: str, by: str = "") -> bool:
        """Hang up as user ``by`` (default: the administrator); False: already over."""
        status, body = self._call("DELETE", f"{self.base}/{call_id}", as_user=by)
        assert status in (200, 409), body
        return status == 200

    def active(self) -> list[dict[str, Any]]:
        """The calls in progress (``GET /api/v1/calls?active=true``)."""
        status, body = self._call("GET", f"{self.base}?active=true")
        assert status == 200, body
        return list(body["calls"])

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as ``{name: value}``, each metric summed over its labels."""
        request = urllib.request.Request(self.metrics_url, headers=METRICS_AUTH)
        with self.opener.open(request, timeout=10) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            name = sample.split("{", 1)[0]
            values[name] = values.get(name, 0.0) + float(value)
        return values


def baresip_config(
    port: int,
    audio_source: str,
    control_port: int | None = None,
    recordings: Path | None = None,
    extra: tuple[str, ...] = (),
    host: str = "127.0.0.1",
) -> str:
    """
    A headless baresip's ``config``: SIP on 127.0.0.1:``port``, G.711, no audio device
    (it plays to /dev/null), ``audio_source`` as its microphone (``ausine,HZ`` or
    ``aufile,PATH``); with ``control_port``, commands over ``ctrl_tcp`` there; with
    ``recordings``, what it sends and receives recorded in that folder (``sndfile``);
    ``extra`` lines are added as they are (e.g. ``sip_cafile\tPATH``).
    """
    lines = [
        "poll_method\tepoll",
        f"sip_listen\t{host}:{port}",
        f"module_path\t{BARESIP_MODULES}",
        "module\tg711.so",
        "module\tausine.so",
        "module\taufile.so",
    ]
    if recordings is not None:
        lines.append("module\tsndfile.so")
    lines.append("module_app\taccount.so")
    if control_port is not None:
        lines += [
            "module_app\tmenu.so",
            "module_app\tctrl_tcp.so",
            f"ctrl_tcp_listen\t127.0.0.1:{control_port}",
        ]
    lines += ["audio_player\taufile,/dev/null", f"audio_source\t{audio_source}"]
    if audio_source.startswith("ausine,"):
        # ausine only produces 48 kHz stereo: baresip resamples to and from PCMU's 8 kHz.
        lines += ["ausrc_srate\t48000", "ausrc_channels\t2", "auplay_srate\t48000"]
    lines.append("audio_alert\taufile,/dev/null")
    if recordings is not None:
        lines.append(f"snd_path\t{recordings}")
    lines += extra
    return "".join(line + "\n" for line in lines)


class Baresip:
    """
    One headless baresip (Debian ``baresip-core``) in its own config folder ``directory``,
    listening on a free port of 127.0.0.1 and registering the ``account`` line (baresip's
    ``accounts`` syntax); its output goes to ``directory/output.txt``.

    :param control: take commands over ``ctrl_tcp`` (:meth:`command`), on another free port.
    :param record: record what it sends and receives in :attr:`recordings`.
    :param config: more lines for its ``config`` (:func:`baresip_config`'s ``extra``).
    :param namespace: run it in the network namespace of this PID (tests/interop/natnet.py),
        on ``host`` port 5060.
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        account: str,
        *,
        audio_source: str = "ausine,440",
        control: bool = False,
        record: bool = False,
        config: tuple[str, ...] = (),
        namespace: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.port = find_free_port() if namespace is None else 5060
        self.control_port = find_free_port() if control else None
        self.directory = directory
        directory.mkdir()
        self.recordings = directory / "recordings"
        if record:
            self.recordings.mkdir()
        (directory / "config").write_text(
            baresip_config(
                self.port,
                audio_source,
                self.control_port,
                self.recordings if record else None,
                config,
                host,
            )
        )
        (directory / "accounts").write_text(account)
        self.output_path = directory / "output.txt"
        with self.output_path.open("wb") as output:
            command = ["baresip", "-4", "-n", host, "-f", str(directory)]
            if namespace is not None:
                command = ["nsenter", "-t", str(namespace), "-n", *command]
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        """Wait until baresip printed ``text`` (it must stay up meanwhile)."""

        def seen() -> bool:
            assert self.process.poll() is None, f"baresip {self.name} exited:\n{self.output()}"
            return text in self.output()

        wait_until(seen, timeout, f"{text!r} from baresip {self.name}")

    def command(self, command: str) -> None:
        """Send a ctrl_tcp command (a netstring of JSON)."""
        assert self.control_port is not None, f"baresip {self.name} started without control"
        message = json.dumps({"command": command, "params": "", "token": "t"}).encode()
        if self.namespace is not None:
            # Its ctrl_tcp listens on the loopback of its own network namespace.
            script = (
                "import socket,sys\n"
                f"s=socket.create_connection(('127.0.0.1',{self.control_port}),timeout=5)\n"
                "s.sendall(sys.stdin.buffer.read())\ns.settimeout(5)\n"
                "try:\n s.recv(4096)\nexcept OSError:\n pass\n"
            )
            subprocess.run(
                ["nsenter", "-t", str(self.namespace), "-n", sys.executable, "-c", script],
                input=str(len(message)).encode() + b":" + message + b",",
                timeout=15,
                check=True,
            )
            return
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=5) as sock:
            sock.sendall(str(len(message)).encode() + b":" + message + b",")
            sock.settimeout(5)
            try:
                sock.recv(4096)
            except OSError:
                pass

    def quit(self, timeout: float) -> int:
        """SIGTERM (baresip unregisters, Expires: 0); its exit status within ``timeout`` s."""
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 15 s (by PID)."""
        stop_process(self.process)


def demo_phone(
    tmp_path: Path, name: str, sip_port: int, answermode: str, tone: float = 440.0
) -> Baresip:
    """
    The baresip of demo user ``name`` (password = username) registering straight with the
    daemon on ``sip_port``: PCMU, a ``tone`` Hz sine as its microphone, recordings, ctrl_tcp.
    """
    return Baresip(
        tmp_path / f"baresip-{name}",
        name,
        f"<sip:{name}@127.0.0.1:{sip_port}>;auth_pass={name};regint=600;"
        f"answermode={answermode};audio_codecs=PCMU\n",
        audio_source=f"ausine,{int(tone)}",
        control=True,
        record=True,
    )


#: The SIPp scenarios of the interop tests.
SIPP_SCENARIOS = Path(__file__).parent / "sipp"


def sipp_argv(
    scenario: Path,
    host: str,
    port: int,
    *,
    calls: int = 1,
    delay_ms: int = 500,
    timeout: int = 60,
    user: str | None = None,
    daemon: tuple[str, int] | None = None,
    trace: Path | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """
    SIPp (Debian ``sip-tester``) running ``scenario`` on UDP ``host``:``port`` for
    ``calls`` calls, pausing ``delay_ms`` where the scenario says ``<pause/>``, no keyboard,
    failing (exit status not 0) when nothing happens for ``timeout`` s.

    :param user: the ``[service]`` of the scenario (``-s``), a phone's user name.
    :param daemon: the address scenarios sending in-dialog requests name ``[daemon]``.
    :param trace: a path prefix: messages to ``PREFIX-messages.log``, errors to
        ``PREFIX-errors.log``.
    :param extra: more SIPp options.
    """
    argv = ["sipp", "-sf", str(scenario), "-i", host, "-p", str(port), "-t", "u1"]
    argv += ["-m", str(calls), "-d", str(delay_ms), "-nostdin"]
    if user is not None:
        argv += ["-s", user]
    if daemon is not None:
        argv += ["-key", "daemon", f"{daemon[0]}:{daemon[1]}"]
    argv += ["-timeout", f"{timeout}s", "-timeout_error"]
    if trace is not None:
        argv += ["-trace_msg", "-message_file", f"{trace}-messages.log"]
        argv += ["-trace_err", "-error_file", f"{trace}-errors.log"]
    return argv + list(extra)


class SippPhone:
    """
    A SIPp phone of a user (:func:`start_sipp_phone`): its port, its process and the
    files it writes in ``directory`` (``sipp-USER-PORT.out``, ``...-messages.log``,
    ``...-errors.log``).
    """

    def __init__(self, user: str, port: int, directory: Path, argv: list[str]) -> None:
        self.user = user
        self.port = port
        self.prefix = directory / f"sipp-{user}-{port}"
        self.output_path = Path(f"{self.prefix}.out")
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                argv,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait_listening(self) -> None:
        """Until SIPp has bound its port (a request sent before would find no one)."""

        def listening() -> bool:
            if self.process.poll() is not None:
                pytest.fail(
                    f"SIPp for {self.user} exited ({self.process.returncode})\n{self.report()}"
                )
            return udp_bound(self.port)

        wait_until(listening, START_TIMEOUT, f"SIPp for {self.user} on port {self.port}")

    def wait(self, timeout: float) -> int:
        """SIPp's exit status (0: the scenario ran to its end); killed and failed after
        ``timeout`` s."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"SIPp for {self.user} did not finish within {timeout} s")

    def messages(self) -> str:
        """The messages it sent and received so far."""
        path = Path(f"{self.prefix}-messages.log")
        return path.read_text(errors="replace") if path.exists() else ""

    def report(self) -> str:
        """The tail of its output and of its error log (for an assertion's message)."""
        parts = []
        for path in (self.output_path, Path(f"{self.prefix}-errors.log")):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGKILL (by PID) if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_sipp_phone(
    directory: Path,
    user: str,
    sip_port: int,
    scenario: str = "call_phone_answer.xml",
    *,
    delay_ms: int = 500,
    calls: int = 1,
    timeout: int = 60,
) -> SippPhone:
    """
    A phone of ``user`` (password = user name, as the demo users) played by SIPp running
    ``sipp/SCENARIO``: registered with Digest from a free port of 127.0.0.1 first
    (:func:`register`), then SIPp listens there, ``[daemon]`` = the daemon on ``sip_port``,
    its messages and errors traced. Returns once SIPp listens.
    """
    port = find_free_port()
    register(user, user, port, sip_port)
    argv = sipp_argv(
        SIPP_SCENARIOS / scenario,
        "127.0.0.1",
        port,
        calls=calls,
        delay_ms=delay_ms,
        timeout=timeout,
        user=user,
        daemon=("127.0.0.1", sip_port),
        trace=directory / f"sipp-{user}-{port}",
    )
    phone = SippPhone(user, port, directory, argv)
    try:
        phone.wait_listening()
    except BaseException:
        phone.stop()
        raise
    return phone


def dominant_frequency(recording_path: Path) -> float:
    """The dominant frequency of the last second of a 16- or 8-bit wav recording (its first
    channel): well after the media went both ways."""
    import wave

    import numpy

    with wave.open(str(recording_path)) as recording:
        rate = recording.getframerate()
        frames = recording.readframes(recording.getnframes())
        width = recording.getsampwidth()
        channels = recording.getnchannels()
    samples = numpy.frombuffer(frames, dtype=numpy.int16 if width == 2 else numpy.int8)
    tail = samples[::channels][-rate:].astype(float)
    assert len(tail) == rate and numpy.abs(tail).max() > 100, f"{recording_path} is silent"
    spectrum = numpy.abs(numpy.fft.rfft(tail * numpy.hanning(len(tail))))
    return float(numpy.fft.rfftfreq(len(tail), 1 / rate)[int(spectrum.argmax())])


def received_tone(phone: Baresip) -> float:
    """The dominant frequency of what a baresip ``phone`` received (its decoder recording)."""
    files = sorted(phone.recordings.glob("*dec*.wav"))
    assert files, f"no recording of received audio in {phone.recordings}"
    return dominant_frequency(files[-1])


def launch_chromium(playwright: Any) -> Any:
    """Headless Debian chromium from a Playwright ``sync_playwright()`` context."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def watched_page(browser: Any, width: int, height: int, timeout_ms: int) -> tuple[Any, list[str]]:
    """A new page of ``browser`` and the console errors it logs (CSP violations, scripts)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(timeout_ms)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return page, errors


def log_in(page: Any, base: str, user: str, password: str | None = None) -> None:
    """
    Log in with the form ``page`` shows and wait for the directory; without ``password``,
    as a demo user (whose password is the username).
    """
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", user if password is None else password)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/directory")


def watch_call_states(page: Any) -> None:
    """Record each state the call page shows from now on (no reloads may happen)."""
    page.evaluate("""() => {
        const el = document.getElementById('call');
        window.seenStates = [el.dataset.state];
        new MutationObserver(() => {
            const s = el.dataset.state;
            if (window.seenStates[window.seenStates.length - 1] !== s)
                window.seenStates.push(s);
        }).observe(el, {attributes: true});
    }""")


def call_states_seen(page: Any) -> list[str]:
    """The states :func:`watch_call_states` saw, in order."""
    return list(page.evaluate("window.seenStates"))
