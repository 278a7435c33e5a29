"""
The readiness probes of :mod:`clicktodial.testing.daemon` and the test ports of
``tests/conftest.py``, on real loopback sockets (no peer process, nothing waited for).
"""

import socket

from conftest import TEST_PORTS, _ephemeral_low, find_free_port

from clicktodial.testing.daemon import tcp_connected, udp_bound


def test_udp_bound_sees_a_bound_socket_and_not_a_closed_one() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert udp_bound(port)
    assert not udp_bound(port)


def test_tcp_connected_holds_once_a_connection_reaches_the_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert not tcp_connected(port), "listening is not connected"
        with socket.create_connection(("127.0.0.1", port)):
            assert tcp_connected(port)


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() -> None:
    ports = [find_free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    if _ephemeral_low() >= TEST_PORTS.stop:
        assert all(port in TEST_PORTS for port in ports)
    for port in ports[:3]:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind(("127.0.0.1", port))
