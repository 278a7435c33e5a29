"""
TLS against the running daemon, with a self-signed certificate made in the test
(``cryptography``) and verified by the client (Python ``ssl``, the certificate as its CA):

- SIP over TLS (``[sip] transports = udp, tcp, tls``, ``tls_listen``): OPTIONS gets 200 and a
  REGISTER with Digest gets 200, over one TLS connection; UDP keeps working beside it;
- the web interface on an ``ssl:`` endpoint (``[web] listen``) serves ``/healthz`` over HTTPS.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
import secrets
import socket
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import find_free_port  # type: ignore[import-not-found]

cryptography = pytest.importorskip("cryptography")
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

pytestmark = pytest.mark.interop


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (IP SAN) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def client_context(cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = True
    return context


def read_message(sock: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a whole message came"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"\r\n(?:Content-Length|l)\s*:\s*(\d+)", head, re.I)
    needed = int(length.group(1)) if length else 0
    while len(body) < needed:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def request(
    method: str, port: int, local: tuple[str, int], cseq: int, call_id: str, extra: str = ""
) -> bytes:
    sent_by = f"{local[0]}:{local[1]}"
    return (
        f"{method} sips:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {sent_by};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sips:alice@127.0.0.1>;tag=tls1\r\n"
        "To: <sips:alice@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sips:alice@{sent_by};transport=tls>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def test_options_and_a_digest_register_over_tls_get_200(
    start_daemon: Callable[[str], Any], tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path)
    sip_port, tls_port, web_port = find_free_port(), find_free_port(), find_free_port()
    daemon = start_daemon(
        "[sip]\ndomain = 127.0.0.1\n"
        f"listen = 127.0.0.1:{sip_port}\ntransports = udp, tcp, tls\n"
        f"tls_listen = 127.0.0.1:{tls_port}\ntls_certificate = {cert}\ntls_private_key = {key}\n"
        "[registrar]\ndigest_algorithms = MD5\n"
        f"[web]\nlisten = tcp:{web_port}:interface=127.0.0.1\n"
        f"[store]\nurl = sqlite:///{tmp_path}/clicktodial.sqlite\n"
        "auto_upgrade = yes\ndemo_users = yes\n"
    )
    daemon.wait_for_log("SIP over TLS listening on")
    daemon.wait_for_log("created demo users")
    raw = socket.create_connection(("127.0.0.1", tls_port), timeout=10)
    with client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        local = tls.getsockname()[:2]
        tls.sendall(request("OPTIONS", tls_port, local, 1, "tls-options"))
        answer = read_message(tls)
        assert status_of(answer) == 200, answer
        call_id = "tls-register"
        tls.sendall(request("REGISTER", tls_port, local, 1, call_id, "Expires: 600\r\n"))
        challenge = read_message(tls)
        assert status_of(challenge) == 401, challenge
        params = dict(
            re.findall(
                r'(\w+)="?([^",\r]*)"?',
                challenge.decode().split("WWW-Authenticate:", 1)[1].split("\r\n", 1)[0],
            )
        )
        uri = f"sips:127.0.0.1:{tls_port}"
        ha1, ha2 = md5(f"alice:{params['realm']}:alice"), md5(f"REGISTER:{uri}")
        response = md5(f"{ha1}:{params['nonce']}:00000001:c0ffee:auth:{ha2}")
        authorization = (
            f'Authorization: Digest username="alice", realm="{params["realm"]}",'
            f' nonce="{params["nonce"]}", uri="{uri}", response="{response}",'
            ' algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"\r\nExpires: 600\r\n'
        )
        tls.sendall(request("REGISTER", tls_port, local, 2, call_id, authorization))
        registered = read_message(tls)
        assert status_of(registered) == 200, registered
        assert b"transport=tls" in registered
    # UDP still answers beside TLS.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(15)
        port = udp.getsockname()[1]
        udp.sendto(
            request("OPTIONS", sip_port, ("127.0.0.1", port), 1, "udp-options")
            .replace(b"SIP/2.0/TLS", b"SIP/2.0/UDP")
            .replace(b"sips:", b"sip:"),
            ("127.0.0.1", sip_port),
        )
        assert status_of(udp.recvfrom(65536)[0]) == 200
    assert "Traceback" not in daemon.log()


def test_web_interface_serves_https_on_an_ssl_endpoint(
    start_daemon: Callable[[str], Any], tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path)
    web_port = find_free_port()
    daemon = start_daemon(
        f"[sip]\ndomain = 127.0.0.1\nlisten = 127.0.0.1:{find_free_port()}\n"
        f"[web]\nlisten = ssl:{web_port}:privateKey={key}:certKey={cert}:interface=127.0.0.1\n"
        f"[store]\nurl = sqlite:///{tmp_path}/clicktodial.sqlite\nauto_upgrade = yes\n"
    )
    daemon.wait_for_tcp(web_port)
    # Stop only once the store is up (a stop while it still starts is a separate case).
    daemon.wait_for_log("SIP listening on")
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=client_context(cert))
    )
    with opener.open(f"https://127.0.0.1:{web_port}/healthz", timeout=10) as response:
        assert (response.status, response.read()) == (200, b"ok")
    assert daemon.stop() == 0
