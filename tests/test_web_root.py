"""The root web resource: / and /healthz, through a real Site via treq's StubTreq."""

from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred

from clicktodial.web.resource import make_root_resource


def result_of(stub: StubTreq, d: "Deferred[Any]") -> Any:
    """Run the in-memory request to completion and return the Deferred's result."""
    results: list[Any] = []
    d.addBoth(results.append)
    stub.flush()
    assert len(results) == 1, "the request did not complete"
    return results[0]


def get(path: str) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    stub = StubTreq(make_root_resource())
    response = result_of(stub, stub.get(f"http://clicktodial.test{path}"))
    body = result_of(stub, response.content())
    headers = dict(response.headers.getAllRawHeaders())
    return response.code, headers, body


def test_healthz_answers_200_ok_in_plain_text() -> None:
    code, headers, body = get("/healthz")
    assert (code, body) == (200, b"ok")
    assert headers[b"Content-Type"] == [b"text/plain; charset=utf-8"]


def test_root_is_an_html_page_naming_clicktodial() -> None:
    code, headers, body = get("/")
    assert code == 200
    assert headers[b"Content-Type"][0].startswith(b"text/html")
    assert body.startswith(b"<!DOCTYPE html>")
    assert b"<title>clicktodial</title>" in body


def test_unknown_path_is_404() -> None:
    code, _, _ = get("/no/such/page")
    assert code == 404
