"""
The internal call-control API: a tiny JSON-over-HTTP face of the
L{ICallController}, served only on a loopback endpoint (C{[calls]
control_listen}), without authentication.  It lets tests and local tools
place calls in a running daemon until the web API does; the web layer will
talk to the controller directly.

* C{POST /calls} with C{{"caller": "alice", "callee": "bob"}}: 201 and the
  call (L{CallInfo} as JSON); 403 with C{{"error": reason}} when refused;
* C{POST /calls} with a list of such objects (at most L{MAX_BATCH}): places
  them in order; 200 and one result per call, each the call with
  C{"status": 201} or C{{"status": 403, "error": reason}} (load tests place
  many calls per request this way);
* C{GET /calls/ID}: the call in progress, else its record; 404 if unknown;
* C{DELETE /calls/ID?by=USERNAME}: hang up; 200 C{{"hung_up": true|false}};
* C{GET /calls}: the calls in progress.

Loopback is not enough: any web page open in a browser on the same host can send a
"simple" cross-origin POST to it, or reach it through DNS rebinding (a name of the
attacker's resolving to 127.0.0.1). So every request that carries an C{Origin} header, a
C{Sec-Fetch-Site} other than C{none}, or a C{Host} that is not a loopback literal
(C{127.x.y.z}, C{[::1]}) or C{localhost} (with an optional port) gets 403
C{{"error": "not-local"}} before anything else (L{LocalOnlyResource}). A browser always
sends C{Host} and the name it resolved in it; tools (curl, treq, the tests) send neither
C{Origin} nor C{Sec-Fetch-Site}.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from clicktodial.calls.events import CallInfo
from clicktodial.calls.policy import CallRefused
from clicktodial.interfaces import ICallController, ICallRecordStore
from clicktodial.store.values import CallRecord

__all__ = ["MAX_BATCH", "CallControlResource", "LocalOnlyResource", "not_local_reason"]

#: The most calls one POST may place.
MAX_BATCH = 1000

_BAD_BODY = {"error": 'expected {"caller": ..., "callee": ...} or a list of them'}


def _json(request: Request, status: int, value: object) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(value).encode()


def _info(value: CallInfo | CallRecord) -> dict[str, Any]:
    return attrs.asdict(value)


class _Call(Resource):
    isLeaf = True

    def __init__(self, controller: ICallController, records: ICallRecordStore,
                 call_id: str) -> None:
        super().__init__()
        self.controller = controller
        self.records = records
        self.call_id = call_id

    def render_GET(self, request: Request) -> object:
        info = self.controller.get_call(self.call_id)
        if info is not None:
            return _json(request, 200, _info(info))

        def found(record: CallRecord | None) -> None:
            if record is None:
                request.write(_json(request, 404, {"error": "no such call"}))
            else:
                request.write(_json(request, 200, _info(record)))
            request.finish()

        self.records.get_call(self.call_id).addCallback(found)
        return NOT_DONE_YET

    def render_DELETE(self, request: Request) -> bytes:
        args = request.args or {}
        by = args.get(b"by", [b""])[0].decode() or None
        return _json(request, 200, {"hung_up": self.controller.hang_up(self.call_id, by)})


class CallControlResource(Resource):
    """C{/calls} (see the module docstring)."""

    def __init__(self, controller: ICallController, records: ICallRecordStore) -> None:
        super().__init__()
        self.controller = controller
        self.records = records

    def getChild(self, path: bytes, request: Request) -> Resource:
        if not path:
            return self
        return _Call(self.controller, self.records, path.decode("ascii", "replace"))

    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, [_info(info) for info in self.controller.active_calls()])

    def render_POST(self, request: Request) -> object:
        try:
            content = request.content
            body = json.loads(content.read() if content is not None else b"")
            batch = isinstance(body, list)
            pairs = [_pair(item) for item in (body if batch else [body])]
        except (ValueError, KeyError, TypeError):
            return _json(request, 400, _BAD_BODY)
        if batch and len(pairs) > MAX_BATCH:
            return _json(request, 400, {"error": f"at most {MAX_BATCH} calls per request"})
        placed = [self._place(caller, callee) for caller, callee in pairs]
        if not batch:
            def single(result: tuple[int, dict[str, Any]]) -> None:
                request.write(_json(request, *result))
                request.finish()

            placed[0].addCallback(single)
            return NOT_DONE_YET

        def every(results: list[tuple[int, dict[str, Any]]]) -> None:
            request.write(_json(request, 200, [{"status": status, **value}
                                               for status, value in results]))
            request.finish()

        gatherResults(placed).addCallback(every)
        return NOT_DONE_YET

    def _place(self, caller: str, callee: str) -> Deferred[tuple[int, dict[str, Any]]]:
        """Place one call: fires with (HTTP status, JSON value); never fails."""

        def refused(failure: Failure) -> tuple[int, dict[str, Any]]:
            if failure.check(CallRefused):
                error = failure.value
                return 403, {"error": error.reason,  # type: ignore[union-attr]
                             "message": str(error)}
            return 500, {"error": failure.getErrorMessage()}

        return self.controller.place_call(caller, callee).addCallbacks(
            lambda info: (201, _info(info)), refused)


def _pair(item: object) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise TypeError("not an object")
    return str(item["caller"]), str(item["callee"])


_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]]+))(?::[0-9]{1,5})?")


def _local_host(host: str) -> bool:
    """C{host} (a C{Host} header) names loopback: C{127.x.y.z}, C{[::1]} or C{localhost}."""
    match = _HOST.fullmatch(host)
    if match is None:
        return False
    name = match.group("name")
    if name is not None and name.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(match.group("v6") or name)
    except ValueError:
        return False
    # An IPv6 literal only in brackets, an IPv4 one only bare.
    return address.is_loopback and (address.version == 6) == (match.group("v6") is not None)


def not_local_reason(request: Request) -> str | None:
    """Why C{request} may come from a browser page (see the module docstring), or None."""
    if request.requestHeaders.hasHeader(b"origin"):
        return "the request has an Origin header"
    fetch_site = request.getHeader(b"sec-fetch-site")
    if fetch_site is not None and fetch_site.strip().lower() != b"none":
        return "the request has Sec-Fetch-Site: " + fetch_site.decode("latin-1")
    host = request.getHeader(b"host")
    if host is None or not _local_host(host.decode("latin-1").strip()):
        return "Host is not 127.x.y.z, [::1] or localhost"
    return None


class _NotLocal(Resource):
    isLeaf = True

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def render(self, request: Request) -> bytes:
        return _json(request, 403, {"error": "not-local", "message": self.reason})


class LocalOnlyResource(Resource):
    """
    Serves C{wrapped}'s children to requests that cannot come from a browser page
    (L{not_local_reason}); 403 C{{"error": "not-local"}} to the others.
    """

    def __init__(self, wrapped: Resource) -> None:
        super().__init__()
        self.wrapped = wrapped

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        reason = not_local_reason(request)
        if reason is not None:
            return _NotLocal(reason)
        return self.wrapped.getChildWithDefault(path, request)

    def render(self, request: Request) -> bytes:
        reason = not_local_reason(request)
        if reason is not None:
            return _NotLocal(reason).render(request)
        return self.wrapped.render(request)


def make_control_root(controller: ICallController, records: ICallRecordStore) -> Resource:
    """The control API's root: C{/calls}, to local clients only (L{LocalOnlyResource})."""
    root = Resource()
    root.putChild(b"calls", CallControlResource(controller, records))
    return LocalOnlyResource(root)
