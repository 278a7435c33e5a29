#!/usr/bin/env python3
"""
check_log_inject: can a phone or a web user write control characters into the daemon's
log (forged lines, terminal escape sequences for whoever reads it with tail or journalctl)?
Over SIP (UDP) it sends REGISTERs whose User-Agent, From display name, Call-ID and Digest
username hold ESC sequences (a bare CR or LF cannot pass a SIP header: the parser refuses
it; a %0D%0A in a URI's user part is decoded, but reaches only the structured "aor" field,
not a text line), then a malformed request; on the web it logs in with a
user name holding CR, LF and ESC (logged as "?": a malformed name is not echoed). Then it
reads the log (--log). PASS: the log holds no control character but the line ends (and the
tab starting a traceback's lines), while the markers are there, escaped.
"""

from __future__ import annotations

import re
import time

from attacktools import (
    SipClient,
    fail,
    log_text,
    main_guard,
    parse_args,
    passed,
    register,
    sip_request,
    web_login,
)

ESC = "\x1b[2J\x1b]0;owned\x07"
#: A raw control character other than a line's end or a traceback line's leading tab.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]|(?<!\n)\t")


def run() -> int:
    args, _ = parse_args(__doc__.split("\n\n")[0])
    if not args.log:
        return fail("needs --log (the daemon's log file)")
    before = len(log_text(args))
    with SipClient(args, "127.0.0.90") as phone:
        # A wrong password: "Authentication failed for {username}" is logged.
        register(
            args,
            args.user,
            "wrong-password",
            phone,
            headers=[f"User-Agent: evil-ua-MARK1{ESC}"],
            from_display=f'"MARK2{ESC}" ',
            username=f"MARK3{ESC}",
        )
        # A second Max-Forwards: 400, logged with the Call-ID.
        phone.send(
            sip_request(
                args,
                "REGISTER",
                args.user,
                phone.local,
                call_id=f"MARK4{ESC}",
                headers=["Max-Forwards: 69"],
            )
        )
        phone.final(2.0)
        phone.send(f"MARK5{ESC}\r\n\r\n".encode())
    web_status = web_login(
        args, f"MARK6\r\n2026-01-01T00:00:00+0000 [forged] hi{ESC}", "wrong", source="127.0.0.91"
    )
    time.sleep(1.0)
    text = log_text(args)[before:]
    raw = RAW_CONTROL.findall(text)
    # A web user name with control characters is malformed: logged as "?" (no echo).
    marks = [m for m in ("MARK3", "MARK6") if m in text]
    if "MARK6" not in marks and "web login failed for ? " in text:
        marks.append("MARK6 (as ?)")
    forged = len(re.findall(r"^\S+ \[forged\]", text, re.M))
    figures = (
        f"log lines written during the check: {text.count(chr(10))};"
        f" raw control characters in them: {len(raw)}"
        f" ({', '.join(sorted({repr(c) for c in raw})) or 'none'});"
        f" forged lines: {forged}; markers found: {', '.join(marks) or 'none'};"
        f" web login: {web_status}"
    )
    if raw or forged:
        print(figures)
        return fail(f"{len(raw)} raw control character(s), {forged} forged line(s) in the log")
    if len(marks) < 2:
        print(figures)
        return fail("the hostile values did not reach the log (is the level info?)")
    return passed(figures)


if __name__ == "__main__":
    main_guard(run)
