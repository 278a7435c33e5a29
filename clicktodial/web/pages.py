"""
The HTML pages: log in / out, the directory with "Call" buttons, a call's progress, my call
history, my account, and the admin's user management.

Every page is the ``templates/layout.xml`` layout around content built with
:data:`twisted.web.template.tags` (so everything is escaped). Every state-changing request
is a POST form carrying the session's CSRF token. Pages work without JavaScript;
``static/app.js`` makes them live through ``/api/v1/events``.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from typing import Any
from urllib.parse import quote, unquote

from hyperlink import URL
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from twisted.web.template import Element, Flattenable, Tag, XMLString, renderer, tags
from twisted.web.template import renderElement as render_element

from clicktodial import __version__
from clicktodial.calls.events import CallInfo
from clicktodial.dialplan.numbers import LocalName
from clicktodial.store.admin import remove_user
from clicktodial.store.errors import NoSuchUser, UserExists
from clicktodial.store.traces import CallTrace, TracedMessage
from clicktodial.store.values import User, UserChanges, is_valid_username
from clicktodial.web.app import Principal, WebApp, iso_time, new_secret
from clicktodial.web.events import Registration
from clicktodial.web.http import HTTPError, Route, RoutedResource, is_finished, read_form
from clicktodial.web.sessions import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    constant_time_equal,
    set_cookie,
)
from clicktodial.web.trace import message_json

__all__ = ["STATE_LABELS", "PagesResource", "login_location", "safe_next"]

_LAYOUT = XMLString(files("clicktodial.web").joinpath("templates", "layout.xml").read_bytes())

#: What each public call state is called on the call page.
STATE_LABELS = {
    "calling-caller": "Ringing your phone",
    "calling-callee": "Ringing the other phone",
    "connected": "Connected",
    "ended": "Ended",
    "failed": "Failed",
}

#: Fixed notices a redirect may ask for (never text from the request).
NOTICES = {
    "password": "Your password was changed.",
    "created": "The user was created.",
    "saved": "The user was saved.",
    "removed": "The user was removed.",
    "loggedout": "You are logged out.",
}

PAGE_SIZE = 20
#: The longest page address kept across a login (``next``).
MAX_NEXT = 2048
MAX_PASSWORD = 256
MIN_PASSWORD = 8
MAX_DISPLAY_NAME = 100


def safe_next(value: str) -> str | None:
    """
    Where to go after logging in (``/login?next=``): a page of this site, as a path with
    its query (the fragment dropped), ASCII-only; :class:`None` for anything else. An
    absolute URL, a scheme, another host (``//evil.example``, ``/\\evil.example``, which
    browsers read as ``//``), control characters or spaces (browsers strip some of them),
    and the login and logout pages themselves are refused: no open redirect
    (docs/dialplan.md, "Phone links of any web page").
    """
    if not value or len(value) > MAX_NEXT or not value.startswith("/"):
        return None
    if value.startswith("//") or "\\" in value:
        return None
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        return None
    try:
        url = URL.from_text(value)
    except ValueError:
        return None
    if url.scheme or url.host or url.port is not None or url.userinfo or not url.rooted:
        return None
    if url.path[:1] in (("login",), ("logout",)):
        return None
    text: str = url.replace(fragment="").to_uri().to_text()
    return text if text.startswith("/") and not text.startswith("//") else None


def login_location(next_page: str | None) -> str:
    """``/login``, with ``next`` when it is a safe page of ours (:func:`safe_next`)."""
    safe = safe_next(next_page) if next_page is not None else None
    return "/login" if safe is None else "/login?next=" + quote(safe, safe="/")


class Layout(Element):
    """The page around ``content``: head, navigation, notice and footer."""

    loader = _LAYOUT

    def __init__(
        self,
        title: str,
        content: Flattenable,
        principal: Principal | None = None,
        notice: str | None = None,
        error: str | None = None,
        refresh: bool = False,
        go_to: str | None = None,
    ) -> None:
        super().__init__()
        self.title = title
        self.body = content
        self.principal = principal
        self.notice_text = notice
        self.error_text = error
        self.auto_refresh = refresh
        #: A path of ours (:func:`safe_next`) the page goes on to at once.
        self.go_to = go_to

    def render_page(self, request: Request) -> None:
        """Write this page as the response to ``request``."""
        render_element(request, self)

    @renderer
    def page(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return tag.fillSlots(title=self.title, version=__version__)

    @renderer
    def csrf_meta(self, request: IRequest | None, tag: Tag) -> Flattenable:
        if self.principal is None or self.principal.session is None:
            return ""
        return tags.meta(name="csrf-token", content=self.principal.session.csrf_token)

    @renderer
    def refresh(self, request: IRequest | None, tag: Tag) -> Flattenable:
        if self.go_to is not None:
            return tags.meta(**{"http-equiv": "refresh", "content": f"0;url={self.go_to}"})
        # Without JavaScript, a page showing something in progress reloads itself.
        if not self.auto_refresh:
            return ""
        return tags.noscript(tags.meta(**{"http-equiv": "refresh", "content": "3"}))

    @renderer
    def nav(self, request: IRequest | None, tag: Tag) -> Flattenable:
        if self.principal is None:
            return tag(tags.a("Log in", href="/login"))
        links: list[Flattenable] = [
            tags.a("Directory", href="/directory"),
            tags.a("History", href="/history"),
            tags.a("Account", href="/account"),
        ]
        if self.principal.is_admin:
            links.append(tags.a("Users", href="/admin/users"))
        links.append(
            post_form(
                "/logout",
                self.principal,
                tags.button("Log out " + self.principal.username, type="submit", class_="link"),
                class_="inline",
            )
        )
        return tag(*links)

    @renderer
    def notice(self, request: IRequest | None, tag: Tag) -> Flattenable:
        out: list[Flattenable] = []
        if self.notice_text:
            out.append(tags.p(self.notice_text, class_="notice", role="status"))
        if self.error_text:
            out.append(tags.p(self.error_text, class_="error", role="alert"))
        return out

    @renderer
    def content(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return self.body


def _possessive(username: str, principal: Principal) -> str:
    return "your phone" if username == principal.username else f"{username}'s phone"


def ladder_arrow(message: TracedMessage, first_ms: int) -> Tag:
    """One message as an arrow of the ladder; clicking it shows the whole message."""
    value = message_json(message, 0, first_ms)
    classes = f"arrow from-{value['from']} to-{value['to']}"
    label = str(value["label"])
    if message.retransmission:
        classes += " retransmission"
        label += " (retransmission)"
    title = (
        f"{message.transport} {value['direction']} {value['remote']}"
        f" · {message.leg}'s leg · {len(message.data)} bytes"
    )
    return tags.li(class_="msg", **{"data-at": str(message.at_ms)})(
        tags.details(
            tags.summary(class_=classes, title=title)(
                tags.span(f"{value['time_ms']} ms", class_="t"),
                tags.span(class_="line")(tags.span(label, class_="label")),
            ),
            tags.pre(str(value["message"]), class_="sip"),
        )
    )


def ladder(
    view: CallInfo, trace: CallTrace | None, reason: str | None, principal: Principal
) -> Tag:
    """
    The call's SIP messages as a ladder: the caller's phone, the daemon and the callee's
    phone as columns, one arrow per message (time since the first), the reason the call
    ended in plain words above it. ``static/app.js`` adds messages live.
    """
    messages = trace.messages if trace is not None else ()
    first = messages[0].at_ms if messages else 0
    head = tags.li(class_="ladder-head")(
        tags.span(
            _possessive(view.caller, principal).capitalize(), tags.br(), tags.small(view.caller)
        ),
        tags.span("clicktodial"),
        tags.span(
            _possessive(view.callee, principal).capitalize(), tags.br(), tags.small(view.callee)
        ),
    )
    links: list[Flattenable] = [
        tags.a("As text", href=f"/api/v1/calls/{view.call_id}/trace?format=text", id="trace-text"),
    ]
    if principal.is_admin:
        links += [
            " · ",
            tags.a(
                "Download pcap", href=f"/api/v1/calls/{view.call_id}/trace.pcap", id="trace-pcap"
            ),
        ]
    dropped = trace.dropped if trace is not None else 0
    note = tags.p(
        f"{dropped} more message(s) not kept: the trace reached its bound.",
        class_="hint",
        id="trace-dropped",
    )
    if not dropped:
        note.attributes["hidden"] = "hidden"
    reason_tag = tags.p(reason or "", class_="trace-reason", id="trace-reason", role="status")
    if not reason:
        reason_tag.attributes["hidden"] = "hidden"
    empty = tags.p("No SIP message kept for this call.", class_="hint", id="trace-empty")
    if messages:
        empty.attributes["hidden"] = "hidden"
    return tags.section(
        id="trace", class_="trace", **{"data-call-id": view.call_id, "data-first": str(first)}
    )(
        tags.h2("What happened"),
        reason_tag,
        tags.p(class_="hint")("SIP messages; tap an arrow to see the message. ", *links),
        tags.div(class_="ladder-scroll")(
            tags.ol(class_="ladder", id="ladder")(head, *(ladder_arrow(m, first) for m in messages))
        ),
        empty,
        note,
    )


def post_form(
    action: str, principal: Principal | None, *children: Flattenable, **attributes: str
) -> Tag:
    """A POST form to ``action`` carrying the session's CSRF token."""
    token = principal.session.csrf_token if principal and principal.session else ""
    return tags.form(method="post", action=action, **attributes)(
        tags.input(type="hidden", name="csrf", value=token), *children
    )


def field(label: str, name: str, kind: str = "text", value: str = "", **extra: str) -> Tag:
    """A labelled input."""
    return tags.label(
        tags.span(label), tags.input(type=kind, name=name, value=value, **extra), class_="field"
    )


def _number_words(view: CallInfo) -> str:
    """A call to a number in the history: its class and the trunk it went through."""
    if view.number is None and view.destination_class is None:
        return ""
    words = view.destination_class or ""
    if view.trunk is not None:
        words += f" via {view.trunk}"
    return words


def _phone_links() -> Tag:
    """
    The offer to handle tel: and sip: links of any page (static/app.js shows the button
    where navigator.registerProtocolHandler exists: a secure context or localhost).
    """
    return tags.section(id="phone-links", class_="phone-links", hidden="hidden")(
        tags.h2("Phone links"),
        tags.p(
            "Let this browser open tel: and sip: links of any web page here: you see the"
            " number and confirm before anything rings."
        ),
        tags.button(
            "Use clicktodial for phone links",
            type="button",
            id="register-handlers",
            **{"data-template": "/dial?uri=%s"},
        ),
        tags.span("", id="register-result", class_="notice"),
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = int(seconds + 0.5)
    return f"{whole // 60}:{whole % 60:02d}"


def _when(when: float | None) -> str:
    text = iso_time(when)
    return text.replace("T", " ")[:19] + " UTC" if text else ""


def _clean_text(value: str, name: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise HTTPError(400, f"{name}: at most {limit} printable characters")
    return value


def _new_password(value: str, confirm: str | None = None) -> str:
    if not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise HTTPError(400, f"passwords have {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    if confirm is not None and confirm != value:
        raise HTTPError(400, "the two new passwords differ")
    return value


class PagesResource(RoutedResource):
    """The HTML pages of a :class:`WebApp`, dispatched on the whole request path."""

    def __init__(self, app: WebApp) -> None:
        super().__init__(app.limits.max_body)
        self.app = app

    def path_of(self, request: Request) -> str:
        path = unquote(request.path.decode("ascii", "replace"))
        return path.rstrip("/") or "/"

    def routes(self) -> Sequence[Route]:
        return (
            Route("GET", "/", self.home),
            Route("GET", "/login", self.login_page),
            Route("POST", "/login", self.login),
            Route("POST", "/logout", self.logout),
            Route("GET", "/directory", self.directory),
            Route("POST", "/calls", self.place_call),
            Route("GET", "/dial", self.dial_page),
            Route("GET", "/calls/{call_id}", self.call_page),
            Route("POST", "/calls/{call_id}/hangup", self.hang_up),
            Route("GET", "/history", self.history),
            Route("GET", "/account", self.account),
            Route("POST", "/account/password", self.change_password),
            Route("POST", "/account/sip-secret", self.new_sip_secret),
            Route("GET", "/admin/users", self.admin_users),
            Route("POST", "/admin/users", self.admin_create),
            Route("GET", "/admin/users/{username}", self.admin_user),
            Route("POST", "/admin/users/{username}", self.admin_save),
            Route("POST", "/admin/users/{username}/remove", self.admin_remove),
            Route("GET", "/admin/trunks", self.admin_trunks),
        )

    # -- plumbing ------------------------------------------------------------------------

    def error(self, request: Request, error: HTTPError) -> None:
        if is_finished(request):
            return
        if error.status == 401:
            asked = self._page_asked(request)
            hop = safe_next(asked) if asked is not None else None
            if hop is not None and self._cookies_withheld(request):
                # Our cookies are SameSite=Strict: a link from another site (a tel: link
                # through the protocol handler) arrives without the session. One hop of
                # our own asks again, same-site, with the session if there is one.
                content = tags.p(tags.a("Continue", href=hop, id="continue"))
                self.show(request, Layout("Opening the link", content, go_to=hop))
                return
            # A page asked for while logged out (a phone link's /dial?uri=...) is where the
            # login leads back to.
            self.redirect(request, login_location(asked))
            return
        request.setResponseCode(error.status)
        page = Layout(
            "Error", tags.p(tags.a("Back to the directory", href="/directory")), error=error.message
        )
        page.render_page(request)

    def _page_asked(self, request: Request) -> str | None:
        """The path and query of a GET (the page to come back to), else None."""
        if request.method != b"GET" or request.uri is None:
            return None
        try:
            return request.uri.decode("ascii")
        except UnicodeDecodeError:
            return None

    def _cookies_withheld(self, request: Request) -> bool:
        """A navigation from another site (Fetch Metadata) that brought no session cookie."""
        return (
            request.getHeader(b"sec-fetch-site") == b"cross-site"
            and request.getCookie(SESSION_COOKIE) is None
        )

    def _next_of(self, request: Request, form: dict[str, str] | None = None) -> str | None:
        """The safe ``next`` of the login page's query or of its form."""
        if form is not None:
            return safe_next(form.get("next", ""))
        raw = (request.args or {}).get(b"next", [b""])[0]
        return safe_next(raw.decode("utf-8", "replace"))

    def redirect(self, request: Request, location: str) -> None:
        """303 See Other to a path of ours."""
        request.setResponseCode(303)
        request.setHeader(b"location", location.encode("ascii"))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.write(b"see " + location.encode("ascii"))
        request.finish()

    def set_cookie(self, request: Request, name: bytes, value: str) -> None:
        """Set one of our cookies (Secure as ``[web] secure_cookies`` says)."""
        set_cookie(request, name, value, secure=self.app.cookie_secure(request))

    def clear_cookie(self, request: Request, name: bytes) -> None:
        clear_cookie(request, name, secure=self.app.cookie_secure(request))

    def show(self, request: Request, layout: Layout, status: int = 200) -> None:
        request.setResponseCode(status)
        layout.render_page(request)

    async def user(self, request: Request, form: dict[str, str] | None = None) -> Principal:
        """The logged-in user; for a POST, also checks the form's CSRF token."""
        principal = await self.app.authenticate(request, allow_token=False)
        if principal is None or principal.session is None:
            raise HTTPError(401, "log in first")
        if form is not None:
            self.app.check_csrf(principal.session, form.get("csrf", ""))
        return principal

    async def admin(self, request: Request, form: dict[str, str] | None = None) -> Principal:
        principal = await self.user(request, form)
        if not principal.is_admin:
            raise HTTPError(403, "only administrators may manage users")
        return principal

    def notice_of(self, request: Request) -> str | None:
        code = (request.args or {}).get(b"done", [b""])[0].decode("ascii", "replace")
        return NOTICES.get(code)

    # -- log in / out --------------------------------------------------------------------

    async def home(self, request: Request) -> None:
        principal = await self.app.authenticate(request, allow_token=False)
        self.redirect(request, "/directory" if principal else "/login")

    def _login_form(
        self, request: Request, username: str = "", next_page: str | None = None
    ) -> Tag:
        # Before a session exists, the login form's CSRF token is a double-submit cookie.
        token = new_secret()
        self.set_cookie(request, LOGIN_COOKIE, token)
        return tags.form(method="post", action="/login", class_="card")(
            tags.input(type="hidden", name="csrf", value=token),
            tags.input(type="hidden", name="next", value=next_page) if next_page else "",
            field(
                "Username",
                "username",
                value=username,
                autocomplete="username",
                required="required",
                autofocus="autofocus",
            ),
            field(
                "Password",
                "password",
                "password",
                autocomplete="current-password",
                required="required",
            ),
            tags.button("Log in", type="submit"),
        )

    async def login_page(self, request: Request) -> None:
        form = self._login_form(request, next_page=self._next_of(request))
        self.show(request, Layout("Log in", form, notice=self.notice_of(request)))

    async def login(self, request: Request) -> None:
        form = read_form(request)
        cookie = (request.getCookie(LOGIN_COOKIE) or b"").decode("ascii", "replace")
        username = form.get("username", "")[:100]
        next_page = self._next_of(request, form)
        if not cookie or not constant_time_equal(cookie, form.get("csrf", "")):
            self.show(
                request,
                Layout(
                    "Log in",
                    self._login_form(request, username, next_page),
                    error="Your login form expired: please try again.",
                ),
                403,
            )
            return
        try:
            session = await self.app.login(request, username, form.get("password", ""))
        except HTTPError as e:
            if is_finished(request):
                return
            for name, value in e.headers.items():
                request.setHeader(name, value)
            message = (
                "Wrong username or password."
                if e.status == 401
                else "Too many failed logins: please wait a few minutes."
            )
            self.show(
                request,
                Layout("Log in", self._login_form(request, username, next_page), error=message),
                e.status,
            )
            return
        self.clear_cookie(request, LOGIN_COOKIE)
        self.set_cookie(request, SESSION_COOKIE, session.session_id)
        self.redirect(request, next_page or "/directory")

    async def logout(self, request: Request) -> None:
        form = read_form(request)
        session = self.app.session_of(request)
        if session is not None:
            self.app.check_csrf(session, form.get("csrf", ""))
            self.app.sessions.remove(session.session_id)
        self.clear_cookie(request, SESSION_COOKIE)
        self.redirect(request, "/login?done=loggedout")

    # -- directory and calls -------------------------------------------------------------

    async def directory(
        self, request: Request, error: str | None = None, status: int = 200
    ) -> None:
        principal = await self.user(request)
        rows = []
        for user, registration in await self.app.directory():
            rows.append(self._directory_row(principal, user, registration))
        # One form around the table: each Call button submits its callee (fewer elements to
        # render than a form per row, and one CSRF field).
        table = post_form(
            "/calls",
            principal,
            tags.table(class_="directory", id="directory")(
                tags.thead(tags.tr(tags.th("Name"), tags.th("Phone"), tags.th(""))),
                tags.tbody(*rows),
            ),
        )
        self.show(
            request,
            Layout(
                "Directory",
                [self._dial_form(principal), table, _phone_links()],
                principal,
                error=error,
            ),
            status,
        )

    def _dial_form(self, principal: Principal, number: str = "") -> Tag:
        """Call a number (or a tel:/sip: address, or a user name) through the dial plan."""
        return post_form("/calls", principal, class_="dial", id="dial-form")(
            field(
                "Number",
                "number",
                "tel",
                number,
                placeholder="+44 20 7946 0958",
                autocomplete="tel",
                maxlength="256",
                required="required",
            ),
            tags.button("Call number", type="submit", class_="call"),
        )

    async def dial_page(self, request: Request) -> None:
        """
        ``GET /dial?uri=tel:...``: where a phone link of any page leads once clicktodial
        handles tel: and sip: links (navigator.registerProtocolHandler). Shows what the
        link calls and a Call button; a GET never places a call (docs/dialplan.md).
        """
        principal = await self.user(request)
        raw = (request.args or {}).get(b"uri", [b""])[0]
        text = raw.decode("utf-8", "replace")[:256]
        try:
            target = await self.app.preview_dial(principal, text)
        except HTTPError as e:
            if e.status not in (400, 403):
                raise
            content = [
                tags.p("Link: ", tags.code(text, id="dial-uri")),
                tags.p(tags.a("Back to the directory", href="/directory")),
            ]
            self.show(
                request, Layout("Call this number?", content, principal, error=e.message), e.status
            )
            return
        if isinstance(target, LocalName):
            shown, what = target.name, "local (a user of the directory)"
        else:
            shown, what = str(target.number), target.destination_class
        details = tags.dl(class_="details")(
            tags.dt("Link"),
            tags.dd(tags.code(text), id="dial-uri"),
            tags.dt("Number"),
            tags.dd(shown, id="dial-number"),
            tags.dt("Class"),
            tags.dd(what, id="dial-class"),
        )
        form = post_form("/calls", principal, id="confirm-form")(
            tags.input(type="hidden", name="number", value=shown),
            tags.button(
                "Call", type="submit", class_="call", id="confirm-call", autofocus="autofocus"
            ),
            " ",
            tags.a("Cancel", href="/directory"),
        )
        self.show(request, Layout("Call this number?", [details, form], principal))

    def _directory_row(self, principal: Principal, user: User, registration: Registration) -> Tag:
        online = registration.registered
        status = tags.span(
            "online" if online else "offline", class_="presence " + ("on" if online else "off")
        )
        action: Flattenable = ""
        if user.username != principal.username and not user.disabled:
            button = tags.button(
                "Call", type="submit", name="callee", value=user.username, class_="call"
            )
            if not online:
                button.attributes["hidden"] = "hidden"
            action = button
        name = tags.td(
            tags.strong(user.display_name or user.username),
            " ",
            tags.span(user.username, class_="username"),
        )
        row = tags.tr(**{"data-user": user.username})
        if user.disabled:
            row.attributes["class"] = "disabled"
        return row(name, tags.td(status), tags.td(action))

    async def place_call(self, request: Request) -> None:
        form = read_form(request)
        principal = await self.user(request, form)
        try:
            if "number" in form:
                view = await self.app.dial(principal, form["number"])
            else:
                view = await self.app.place_call(principal, form.get("callee", ""))
        except HTTPError as e:
            if e.status in (400, 403, 404, 409, 429):
                await self.directory(request, error=e.message, status=e.status)
                return
            raise
        self.redirect(request, f"/calls/{view.call_id}")

    async def call_page(self, request: Request, call_id: str) -> None:
        principal = await self.user(request)
        view = await self.app.find_call(principal, call_id)
        content: Flattenable = self._call(principal, view)
        if self.app.keeps_traces:
            trace = await self.app.trace_of(view)
            content = [
                content,
                ladder(view, trace, self.app.failure_words(view, principal), principal),
            ]
        self.show(request, Layout("Call", content, principal, refresh=view.active))

    def _call(self, principal: Principal, view: CallInfo) -> Tag:
        order = ["calling-caller", "calling-callee", "connected", "ended"]
        steps = tags.ol(class_="steps")(
            tags.li(f"Ringing your phone ({view.caller})", class_="step-calling-caller"),
            tags.li(f"Ringing {view.callee}", class_="step-calling-callee"),
            tags.li("Connected", class_="step-connected"),
            tags.li("Ended", class_="step-ended"),
        )
        reached = order.index(view.state) if view.state in order else -1
        for i, step in enumerate(steps.children):
            if isinstance(step, Tag) and i <= reached:
                step.attributes["class"] = str(step.attributes["class"]) + " reached"
        hangup = post_form(
            f"/calls/{view.call_id}/hangup",
            principal,
            tags.button(
                "Hang up" if view.state == "connected" else "Cancel",
                type="submit",
                class_="danger",
                id="hangup",
            ),
            class_="hangup-form",
        )
        if not view.active:
            hangup.attributes["hidden"] = "hidden"
        details = tags.dl(class_="details")(
            tags.dt("Caller"),
            tags.dd(view.caller),
            tags.dt("Callee"),
            tags.dd(view.callee),
            tags.dt("Started"),
            tags.dd(_when(view.created_at)),
            tags.dt("Reason"),
            tags.dd(view.end_reason or "", id="call-reason"),
            tags.dt("Duration"),
            tags.dd(_duration(view.duration), id="call-duration"),
        )
        for label, value, ident in (
            ("Number", view.number, "call-number"),
            ("Class", view.destination_class, "call-class"),
            ("Trunk", view.trunk, "call-trunk"),
            ("Refused", view.refusal, "call-refusal"),
        ):
            if value is not None:
                details.children.extend([tags.dt(label), tags.dd(value, id=ident)])
        if view.media_relay not in (None, "off"):
            details.children.extend(
                [
                    tags.dt("Media relay"),
                    tags.dd(view.media_relay or "", id="call-media-relay"),
                ]
            )
        section = tags.section(
            id="call", **{"data-call-id": view.call_id, "data-state": view.state}
        )
        return section(
            tags.p(class_="state")(
                "State: ", tags.strong(STATE_LABELS.get(view.state, view.state), id="call-state")
            ),
            steps,
            details,
            hangup,
        )

    async def hang_up(self, request: Request, call_id: str) -> None:
        form = read_form(request)
        principal = await self.user(request, form)
        try:
            await self.app.hang_up(principal, call_id)
        except HTTPError as e:
            if e.status != 409:
                raise
        self.redirect(request, f"/calls/{call_id}")

    async def history(self, request: Request) -> None:
        principal = await self.user(request)
        raw = (request.args or {}).get(b"page", [b"1"])[0]
        page = int(raw) if raw.isdigit() and 0 < int(raw) < 100_000 else 1
        views, more = await self.app.history(principal.username, PAGE_SIZE, (page - 1) * PAGE_SIZE)
        rows = [
            tags.tr(**{"data-call-id": v.call_id})(
                tags.td(tags.a(_when(v.created_at), href=f"/calls/{v.call_id}")),
                tags.td("to " + v.callee if v.caller == principal.username else "from " + v.caller),
                tags.td(_number_words(v)),
                tags.td(STATE_LABELS.get(v.state, v.state)),
                tags.td(v.refusal or v.end_reason or ""),
                tags.td(_duration(v.duration)),
            )
            for v in views
        ]
        content: list[Flattenable] = [
            tags.table(class_="history", id="history")(
                tags.thead(
                    tags.tr(
                        tags.th("When"),
                        tags.th("With"),
                        tags.th("Number"),
                        tags.th("State"),
                        tags.th("Reason"),
                        tags.th("Duration"),
                    )
                ),
                tags.tbody(*rows),
            )
            if rows
            else tags.p("No calls yet.")
        ]
        pager: list[Flattenable] = []
        if page > 1:
            pager.append(tags.a("Newer", href=f"/history?page={page - 1}"))
        if more:
            pager.append(tags.a("Older", href=f"/history?page={page + 1}"))
        content.append(tags.nav(*pager, class_="pager"))
        self.show(request, Layout("My calls", content, principal))

    # -- my account ----------------------------------------------------------------------

    async def account(
        self,
        request: Request,
        error: str | None = None,
        status: int = 200,
        secret: str | None = None,
    ) -> None:
        principal = await self.user(request)
        soft = self.app.softphone
        name = principal.username
        plain = [t.upper() for t in soft.transports if t != "tls"]
        rows: list[tuple[str, str]] = [
            ("Address", f"sip:{name}@{soft.domain}"),
            ("Server", soft.server),
        ]
        if plain:
            rows.append(("Port", str(soft.port)))
        if soft.tls_port is not None:
            rows.append(("TLS port", str(soft.tls_port)))
        rows += [
            ("Transport", ", ".join(plain + (["TLS"] if soft.tls_port is not None else []))),
            ("Username", name),
            ("Domain", soft.domain),
            ("Authentication username", name),
            ("Realm", soft.realm),
            ("Digest algorithm", " or ".join(soft.digest_algorithms)),
        ]
        settings = tags.dl(class_="details softphone")(
            *[part for label, value in rows for part in (tags.dt(label), tags.dd(value))]
        )
        how = tags.p(class_="hint")(
            "In your phone, the account is the address above; the registrar (or outbound"
            " proxy) is the server and port, over one of the transports; it authenticates"
            " with the username and your SIP password (not your web password) using Digest.",
        )
        shown: Flattenable = ""
        if secret is not None:
            shown = tags.div(class_="secret", role="status")(
                tags.p("Your new SIP password (shown only now; enter it in your phone):"),
                tags.code(secret, id="sip-secret"),
            )
        content = [
            tags.section(
                tags.h2("Configure your softphone"),
                settings,
                how,
                shown,
                post_form(
                    "/account/sip-secret",
                    principal,
                    tags.button("Generate a new SIP password", type="submit"),
                    class_="card",
                ),
                tags.p(
                    "A new SIP password replaces the old one: phones using the old one stop"
                    " registering.",
                    class_="hint",
                ),
            ),
            tags.section(
                tags.h2("Change my web password"),
                post_form(
                    "/account/password",
                    principal,
                    field(
                        "Current password",
                        "current",
                        "password",
                        autocomplete="current-password",
                        required="required",
                    ),
                    field(
                        "New password",
                        "new",
                        "password",
                        autocomplete="new-password",
                        required="required",
                        minlength=str(MIN_PASSWORD),
                    ),
                    field(
                        "New password again",
                        "confirm",
                        "password",
                        autocomplete="new-password",
                        required="required",
                    ),
                    tags.button("Change password", type="submit"),
                    class_="card",
                ),
            ),
        ]
        self.show(
            request,
            Layout("My account", content, principal, notice=self.notice_of(request), error=error),
            status,
        )

    async def change_password(self, request: Request) -> None:
        form = read_form(request)
        principal = await self.user(request, form)
        try:
            new = _new_password(form.get("new", ""), form.get("confirm", ""))
        except HTTPError as e:
            await self.account(request, error=e.message, status=400)
            return
        if await self.app.users.check_password(principal.username, form.get("current", "")) is None:
            await self.account(request, error="Your current password is wrong.", status=403)
            return
        await self.app.users.update_user(principal.username, UserChanges(password=new))
        # Other browsers logged in with the old password are logged out; this one gets a
        # fresh session.
        self.app.sessions.remove_user(principal.username)
        session = self.app.sessions.create(principal.username)
        self.set_cookie(request, SESSION_COOKIE, session.session_id)
        self.redirect(request, "/account?done=password")

    async def new_sip_secret(self, request: Request) -> None:
        form = read_form(request)
        principal = await self.user(request, form)
        secret = new_secret()
        await self.app.users.update_user(principal.username, UserChanges(sip_password=secret))
        await self.account(request, secret=secret)

    # -- administration ------------------------------------------------------------------

    async def admin_users(
        self,
        request: Request,
        error: str | None = None,
        status: int = 200,
        form: dict[str, str] | None = None,
    ) -> None:
        principal = await self.admin(request)
        form = form or {}
        rows = [
            tags.tr(**{"data-user": u.username})(
                tags.td(tags.a(u.username, href=f"/admin/users/{u.username}")),
                tags.td(u.display_name),
                tags.td("admin" if u.is_admin else ""),
                tags.td("disabled" if u.disabled else "active"),
                tags.td("yes" if reg.registered else "no"),
            )
            for u, reg in await self.app.directory()
        ]
        create = post_form(
            "/admin/users",
            principal,
            field(
                "Username",
                "username",
                value=form.get("username", ""),
                required="required",
                pattern="[a-z0-9._\\-]{1,64}",
            ),
            field("Display name", "display_name", value=form.get("display_name", "")),
            field("Web password", "password", "password", autocomplete="new-password"),
            field(
                "SIP password (empty: generate one)",
                "sip_password",
                "password",
                autocomplete="new-password",
            ),
            tags.label(
                tags.input(type="checkbox", name="is_admin", value="yes"),
                " Administrator",
                class_="check",
            ),
            tags.button("Create user", type="submit"),
            class_="card",
        )
        content = [
            tags.table(class_="users", id="users")(
                tags.thead(
                    tags.tr(
                        tags.th("Username"),
                        tags.th("Name"),
                        tags.th("Role"),
                        tags.th("Account"),
                        tags.th("Phone"),
                    )
                ),
                tags.tbody(*rows),
            ),
            tags.h2("New user"),
            create,
        ]
        self.show(
            request,
            Layout("Users", content, principal, notice=self.notice_of(request), error=error),
            status,
        )

    async def admin_trunks(self, request: Request) -> None:
        """The SIP trunks ([trunk:NAME]): registration, reachability, calls (read-only)."""
        principal = await self.admin(request)
        trunks = self.app.trunks
        statuses = trunks.statuses() if trunks is not None else []
        rows = []
        for status in statuses:
            registration = status.registration
            state = str(registration.state)
            if registration.reason:
                state += f": {registration.reason}"
            rows.append(
                tags.tr(**{"data-trunk": status.name})(
                    tags.td(status.name),
                    tags.td(status.proxy),
                    tags.td(state, class_=f"registration {registration.state}"),
                    tags.td(_when(registration.expires_at)),
                    tags.td(str(status.reachability), class_=f"reachability {status.reachability}"),
                    tags.td(f"{status.active_calls} / {status.max_calls}"),
                    tags.td(f"{status.max_cps:g}"),
                    tags.td(str(status.refused_calls)),
                    tags.td(str(status.refused_inbound)),
                )
            )
        if rows:
            content: list[Flattenable] = [
                tags.table(class_="trunks", id="trunks")(
                    tags.thead(
                        tags.tr(
                            tags.th("Trunk"),
                            tags.th("Proxy"),
                            tags.th("Registration"),
                            tags.th("Expires"),
                            tags.th("Keep-alive"),
                            tags.th("Calls"),
                            tags.th("Calls/s"),
                            tags.th("Calls refused"),
                            tags.th("Inbound refused"),
                        )
                    ),
                    tags.tbody(*rows),
                )
            ]
        else:
            content = [tags.p("No SIP trunks are configured ([trunk:NAME] sections).")]
        self.show(request, Layout("Trunks", content, principal))

    async def admin_create(self, request: Request) -> None:
        form = read_form(request)
        await self.admin(request, form)
        try:
            username = form.get("username", "").strip()
            if not is_valid_username(username):
                raise HTTPError(400, "usernames are 1-64 of a-z, 0-9, '.', '_' and '-'")
            display_name = _clean_text(
                form.get("display_name", ""), "display name", MAX_DISPLAY_NAME
            )
            password = form.get("password") or None
            if password is not None:
                _new_password(password)
            sip_password = form.get("sip_password") or new_secret()
            try:
                await self.app.users.add_user(
                    username,
                    password=password,
                    sip_password=sip_password,
                    display_name=display_name,
                    is_admin=form.get("is_admin") == "yes",
                )
            except UserExists:
                raise HTTPError(409, f"the user {username} exists already") from None
        except HTTPError as e:
            await self.admin_users(request, error=e.message, status=e.status, form=form)
            return
        self.redirect(request, "/admin/users?done=created")

    async def _target(self, username: str) -> User:
        user = await self.app.users.get_user(username) if is_valid_username(username) else None
        if user is None:
            raise HTTPError(404, "no such user")
        return user

    async def admin_user(
        self, request: Request, username: str, error: str | None = None, status: int = 200
    ) -> None:
        principal = await self.admin(request)
        user = await self._target(username)
        checkbox: Any = tags.input
        edit = post_form(
            f"/admin/users/{user.username}",
            principal,
            field("Display name", "display_name", value=user.display_name),
            tags.label(
                checkbox(
                    type="checkbox",
                    name="is_admin",
                    value="yes",
                    **({"checked": "checked"} if user.is_admin else {}),
                ),
                " Administrator",
                class_="check",
            ),
            tags.label(
                checkbox(
                    type="checkbox",
                    name="disabled",
                    value="yes",
                    **({"checked": "checked"} if user.disabled else {}),
                ),
                " Disabled (cannot log in, register or be called)",
                class_="check",
            ),
            field(
                "New web password (empty: unchanged)",
                "password",
                "password",
                autocomplete="new-password",
            ),
            field(
                "New SIP password (empty: unchanged)",
                "sip_password",
                "password",
                autocomplete="new-password",
            ),
            tags.button("Save", type="submit"),
            class_="card",
        )
        remove = post_form(
            f"/admin/users/{user.username}/remove",
            principal,
            tags.label(
                tags.input(type="checkbox", name="confirm", value="yes", required="required"),
                f" Yes, remove {user.username} and their registrations",
                class_="check",
            ),
            tags.button("Remove user", type="submit", class_="danger"),
            class_="card",
        )
        content = [edit, tags.h2("Remove"), remove]
        self.show(request, Layout(f"User {user.username}", content, principal, error=error), status)

    async def admin_save(self, request: Request, username: str) -> None:
        form = read_form(request)
        principal = await self.admin(request, form)
        user = await self._target(username)
        try:
            password = form.get("password") or None
            if password is not None:
                _new_password(password)
            disabled = form.get("disabled") == "yes"
            is_admin = form.get("is_admin") == "yes"
            if user.username == principal.username and (disabled or not is_admin):
                raise HTTPError(400, "you cannot disable yourself or drop your own admin role")
            changes = UserChanges(
                display_name=_clean_text(
                    form.get("display_name", ""), "display name", MAX_DISPLAY_NAME
                ),
                password=password,
                sip_password=form.get("sip_password") or None,
                disabled=disabled,
                is_admin=is_admin,
            )
        except HTTPError as e:
            await self.admin_user(request, username, error=e.message, status=e.status)
            return
        await self.app.users.update_user(user.username, changes)
        if disabled or password is not None:
            self.app.sessions.remove_user(user.username)
        self.redirect(request, "/admin/users?done=saved")

    async def admin_remove(self, request: Request, username: str) -> None:
        form = read_form(request)
        principal = await self.admin(request, form)
        user = await self._target(username)
        if user.username == principal.username:
            raise HTTPError(400, "you cannot remove yourself")
        if form.get("confirm") != "yes":
            raise HTTPError(400, "tick the box to confirm the removal")
        try:
            await remove_user(
                self.app.store, user.username, self.app.clock.seconds(), self.app.locations
            )
        except NoSuchUser:
            raise HTTPError(404, "no such user") from None
        self.app.sessions.remove_user(user.username)
        self.redirect(request, "/admin/users?done=removed")
