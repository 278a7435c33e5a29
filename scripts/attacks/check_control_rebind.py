#!/usr/bin/env python3
"""
check_control_rebind: can a web page in a browser on the daemon's host use the internal
control API ([calls] control_listen)? It sends what a browser would: a "simple" cross-origin
POST (text/plain, with Origin and Sec-Fetch-Site: cross-site), and a POST after DNS
rebinding (Host: a name of the attacker's, resolving to 127.0.0.1), and counts the calls
placed. PASS: each gets 403 not-local and no call is placed, while a local tool (no Origin,
Host 127.0.0.1) is still served.
"""

from __future__ import annotations

import json

from attacktools import fail, http_request, main_guard, parse_args, passed


def run() -> int:
    args, _ = parse_args(__doc__.split("\n\n")[0])
    body = json.dumps({"caller": args.user, "callee": args.user2}).encode()
    port = args.control_port
    browser_like = {
        "cross-origin simple POST": {
            "Host": f"127.0.0.1:{port}", "Origin": "http://attacker.example.com",
            "Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-Mode": "no-cors"},
        "cross-origin, Origin only": {
            "Host": f"127.0.0.1:{port}", "Origin": "http://attacker.example.com"},
        "DNS rebinding (same-origin to the attacker's name)": {
            "Host": f"rebind.attacker.example.com:{port}", "Content-Type": "text/plain",
            "Sec-Fetch-Site": "same-origin"},
        "DNS rebinding, no fetch metadata (older browser)": {
            "Host": f"rebind.attacker.example.com:{port}", "Content-Type": "text/plain"},
    }
    placed, answers = 0, []
    for name, headers in browser_like.items():
        status, _, text = http_request(args.control_host, port, "POST", "/calls", body, headers)
        try:
            error = json.loads(text).get("error")
        except (ValueError, AttributeError):
            error = None
        answers.append(f"{name}: {status} {error or ''}".strip())
        if status in (200, 201):
            placed += 1
            call = json.loads(text)
            http_request(args.control_host, port, "DELETE",
                         f"/calls/{call.get('call_id', '')}?by={args.user}",
                         headers={"Host": f"127.0.0.1:{port}"})
    status, _, _ = http_request(args.control_host, port, "GET", "/calls",
                                headers={"Host": f"127.0.0.1:{port}"})
    figures = "\n".join(answers) + (
        f"\nbrowser-like requests that placed a call: {placed} of {len(browser_like)};"
        f" a local tool's GET /calls: {status}")
    if placed:
        return fail(f"{placed} of {len(browser_like)} browser-like requests placed a call")
    if not all(": 403 not-local" in a for a in answers):
        return fail("a browser-like request was not refused with 403 not-local")
    if status != 200:
        return fail(f"a local tool's GET /calls got {status}")
    return passed(figures)


if __name__ == "__main__":
    main_guard(run)
