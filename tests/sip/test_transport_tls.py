"""SIP over TLS in the transport layer: listener, sent-by port, no connection opened by us."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.error import CannotListenError
from twisted.internet.testing import StringTransport

from clicktodial.config import parse_config
from clicktodial.connlimit import ConnectionLimit
from clicktodial.sip.address import Destination
from clicktodial.sip.transport import SIPTransportLayer, TransportError
from clicktodial.testing.transport import FakeReactor, LogCapture, ip_address


def pem_files(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sip.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert, private = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, private


def layer(tmp_path: Path, cert: Path, key: Path) -> tuple[SIPTransportLayer, FakeReactor]:
    config = parse_config(
        "[sip]\ndomain = 127.0.0.1\nlisten = 127.0.0.1:5060\ntransports = udp, tls\n"
        f"tls_listen = 127.0.0.1:5061\ntls_certificate = {cert}\ntls_private_key = {key}\n",
        "x.ini",
    ).sip
    reactor = FakeReactor()
    return SIPTransportLayer(reactor, config), reactor


def test_tls_listens_on_tls_listen_and_vias_name_its_port(tmp_path: Path) -> None:
    transport, reactor = layer(tmp_path, *pem_files(tmp_path))
    transport.startService()
    [(port, _factory, _context, _backlog, interface)] = reactor.sslServers
    assert (port, interface) == (5061, "127.0.0.1")
    assert transport.local_address("TLS") == ("127.0.0.1", 5061)
    assert transport.local_address("UDP") == ("127.0.0.1", 5060)
    transport.stopService()


def test_requests_over_tls_need_a_connection_the_peer_opened(tmp_path: Path) -> None:
    transport, _ = layer(tmp_path, *pem_files(tmp_path))
    transport.startService()
    with pytest.raises(TransportError, match="no TLS connection open"):
        transport._send_stream(b"OPTIONS", Destination("TLS", "127.0.0.1", 5071))
    transport.stopService()


def test_an_unreadable_certificate_stops_start_up_with_one_line(tmp_path: Path) -> None:
    transport, _ = layer(tmp_path, tmp_path / "missing.pem", tmp_path / "missing.key")
    with pytest.raises(CannotListenError, match="cannot load the TLS certificate or key"):
        transport.startService()


def test_an_idle_tls_connection_is_logged_as_tls_and_aborted_if_never_closed(
    tmp_path: Path,
) -> None:
    """
    The idle close names TLS (not TCP); a TLS peer that never answers close_notify does
    not keep the connection: it is aborted after stream_close_timeout.
    """
    transport, reactor = layer(tmp_path, *pem_files(tmp_path))
    transport.startService()
    factory = reactor.sslServers[0][1]
    peer = ip_address("TCP", "127.0.0.1", 40001)
    protocol = factory.buildProtocol(peer)
    tls = StringTransport(hostAddress=ip_address("TCP", "127.0.0.1", 5061), peerAddress=peer)
    with LogCapture() as log:
        protocol.makeConnection(tls)
        reactor.pump([1.0] * 301)
        assert tls.disconnecting and not tls.disconnected
        reactor.pump([1.0] * 5)
    assert tls.disconnected
    [idle] = [e for e in log.events if "closing idle" in e.get("log_format", "")]
    assert idle["transport"] == "TLS"
    transport.stopService()


def test_the_tls_listener_has_its_own_per_source_connection_cap(tmp_path: Path) -> None:
    """[sip] max_connections_per_source counts TLS connections apart from TCP ones."""
    cert, key = pem_files(tmp_path)
    config = parse_config(
        "[sip]\ndomain = 127.0.0.1\nlisten = 127.0.0.1:5060\ntransports = udp, tls\n"
        f"tls_listen = 127.0.0.1:5061\ntls_certificate = {cert}\ntls_private_key = {key}\n",
        "x.ini",
    ).sip
    reactor = FakeReactor()
    limit = ConnectionLimit(reactor, "sip-tls", 2)
    transport = SIPTransportLayer(reactor, config, connection_limits={"TLS": limit})
    transport.startService()
    factory = reactor.sslServers[0][1]
    built = [factory.buildProtocol(ip_address("TCP", "127.0.0.7", 40000 + i)) for i in range(4)]
    assert [p is not None for p in built] == [True, True, False, False]
    assert (limit.refused, limit.open) == (2, {"127.0.0.7": 2})
    transport.stopService()
