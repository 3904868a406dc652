"""The console app: a ``Request`` in, a ``Response`` out, every route behind auth.

Routes (below ``/console``): ``/`` overview, ``/timeline``, ``/paused``,
``/avatars/<id>``, ``/index``; POST ``/avatars/<id>/<action>`` and
``/index/<job>`` for the writes; ``/login`` and ``/logout``; ``/static/``.
Only the login page and the stylesheet are served without credentials.
A request without credentials is sent to the login form if it is a
browser's, else answered 401 with a basic-auth challenge; wrong credentials
are 401; a POST without its CSRF token is 403. After a POST the browser is
redirected (303) to the page to show, with the outcome in a one-shot cookie.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from urllib.parse import quote

from me2_scheduler.console import csrf, pages
from me2_scheduler.console.auth import REALM, Authenticator, Operator
from me2_scheduler.console.pages import BadInput, Services
from me2_scheduler.console.render import Templates
from me2_scheduler.console.web import Request, Response, safe_back
from me2_scheduler.errors import RedisIndexError, StoreError

PREFIX = "/console"
FLASH_COOKIE = "me2_console_flash"
STATIC = {"console.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    target: Callable[..., object]


def _routes() -> list[Route]:
    table: list[tuple[str, str, Callable[..., object]]] = [
        ("GET", r"/", pages.overview),
        ("GET", r"/timeline", pages.timeline),
        ("GET", r"/paused", pages.paused),
        ("GET", r"/avatars", pages.find_avatar),
        ("GET", r"/avatars/(?P<avatar_id>\d{1,18})", pages.avatar),
        ("GET", r"/index", pages.index_health),
        ("POST", r"/avatars/(?P<avatar_id>\d{1,18})/(?P<action>[a-z]+)", pages.avatar_action),
        ("POST", r"/index/(?P<kind>[a-z]+)", pages.index_job),
    ]
    return [Route(method, re.compile(pattern + r"\Z"), target) for method, pattern, target in table]


class App:
    """The whole console over its ``Services``; ``handle`` never raises."""

    def __init__(self, services: Services, auth: Authenticator, templates: Templates) -> None:
        self.services = services
        self.auth = auth
        self.templates = templates
        self.routes = _routes()

    def handle(self, request: Request) -> Response:
        """Answer ``request`` (its path without the ``/console`` prefix)."""
        try:
            return self._route(request)
        except BadInput as exc:
            return self._error(request, 400, str(exc))
        except (StoreError, RedisIndexError) as exc:
            log.error("console %s %s: %s", request.method, request.path, exc)
            return self._error(request, 503, f"storage unavailable: {exc}")
        except Exception:
            log.exception("console %s %s failed", request.method, request.path)
            return self._error(request, 500, "internal error; see the service log")

    def _route(self, request: Request) -> Response:
        if request.path.startswith("/static/"):
            return self._static(request.path.removeprefix("/static/"))
        if request.path == "/login":
            return self._login(request)
        if request.header("Authorization") and self.auth.throttled():
            return Response.text(429, "too many failed logins; wait a minute\n")
        operator = self.auth.identify(request)
        if operator is None:
            return self._challenge(request)
        if request.method == "POST":
            refused = csrf.problem(self.auth.key, operator, request)
            if refused:
                log.warning(
                    "console: POST %s by %s refused: %s", request.path, operator.name, refused
                )
                return self._error(request, 403, refused, operator)
            if request.path == "/logout":
                return self._logout()
        return self._dispatch(request, operator)

    def _dispatch(self, request: Request, operator: Operator) -> Response:
        allowed = False
        for route in self.routes:
            found = route.pattern.match(request.path)
            if found is None:
                continue
            if route.method != request.method:
                allowed = True
                continue
            if request.method == "POST":
                back, ok, text = route.target(self.services, request, found, operator)
                return self._flash(Response.redirect(back), ok, text)
            shown = route.target(self.services, request, found)
            if isinstance(shown, Response):
                return shown
            template, context = shown
            return self._page(request, operator, template, context)
        if allowed:
            return self._error(request, 405, f"{request.method} is not allowed here", operator)
        return self._error(request, 404, f"no such page: {PREFIX}{request.path}", operator)

    # -- rendering ----------------------------------------------------------------

    def _page(
        self, request: Request, operator: Operator, template: str, context: dict, status: int = 200
    ) -> Response:
        flash = self._read_flash(request)
        body = self.templates.render(
            template,
            operator=operator,
            csrf_token=csrf.token_for(self.auth.key, operator),
            flash=flash,
            here=PREFIX + request.path + _query_string(request),
            section=template.removesuffix(".html"),
            **context,
        )
        response = Response(status, body.encode())
        if flash is not None:
            response.headers.append(("Set-Cookie", f"{FLASH_COOKIE}=; Path=/console/; Max-Age=0"))
        return response

    def _error(
        self, request: Request, status: int, message: str, operator: Operator | None = None
    ) -> Response:
        if not request.wants_html:
            return Response.text(status, message + "\n")
        context = {"status": status, "message": message}
        if operator is None:
            body = self.templates.render("error.html", operator=None, flash=None, **context)
            return Response(status, body.encode())
        return self._page(request, operator, "error.html", context, status)

    def _flash(self, response: Response, ok: bool, text: str) -> Response:
        raw = json.dumps({"ok": ok, "text": text[:500]}).encode()
        value = base64.urlsafe_b64encode(raw).decode()
        cookie = f"{FLASH_COOKIE}={value}; Path=/console/; HttpOnly; SameSite=Strict"
        response.headers.append(("Set-Cookie", cookie))
        return response

    @staticmethod
    def _read_flash(request: Request) -> dict | None:
        value = request.cookies.get(FLASH_COOKIE, "")
        if not value:
            return None
        try:
            shown = json.loads(base64.urlsafe_b64decode(value))
            return {"ok": bool(shown["ok"]), "text": str(shown["text"])}
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None

    def _static(self, name: str) -> Response:
        if name not in STATIC:
            return Response.text(404, f"no such file: {name}\n")
        data = resources.files("me2_scheduler.console").joinpath("static", name).read_bytes()
        return Response(200, data, STATIC[name])

    # -- login --------------------------------------------------------------------

    def _challenge(self, request: Request) -> Response:
        if request.header("Authorization"):
            self.auth.failed()
            return Response.text(401, "wrong credentials\n", WWW_Authenticate=REALM)
        if request.wants_html and request.method == "GET":
            here = PREFIX + request.path + _query_string(request)
            return Response.redirect(f"{PREFIX}/login?next={quote(here, safe='/')}")
        return Response.text(401, "credentials required\n", WWW_Authenticate=REALM)

    def _login(self, request: Request) -> Response:
        back = safe_back(request.form.get("next") or request.query.get("next", ""), PREFIX + "/")
        if request.method != "POST":
            return self._login_page(back, "", 200)
        if self.auth.throttled():
            return self._login_page(back, "too many failed logins; wait a minute", 429)
        user, password = request.form.get("user", ""), request.form.get("password", "")
        if not self.auth.password_ok(user, password):
            self.auth.failed()
            log.warning("console: failed login for %r from %s", user[:64], request.client)
            return self._login_page(back, "wrong user name or password", 401)
        log.info("console: %s logged in from %s", user, request.client)
        response = Response.redirect(back)
        cookie = self.auth.session_cookie(self.auth.new_session(user))
        response.headers.append(("Set-Cookie", cookie))
        return response

    def _login_page(self, back: str, problem: str, status: int) -> Response:
        body = self.templates.render(
            "login.html", operator=None, flash=None, next=back, problem=problem
        )
        return Response(status, body.encode())

    def _logout(self) -> Response:
        response = Response.redirect(f"{PREFIX}/login")
        response.headers.append(("Set-Cookie", self.auth.session_cookie("", max_age=0)))
        return response


def _query_string(request: Request) -> str:
    if not request.query:
        return ""
    return "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in request.query.items())
