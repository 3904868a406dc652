"""The console's test helpers: its credentials, one request through its app, what a page shows.

Plain functions for the console tests (in-process app and browser); each
test module makes its own ``Console`` fixture from ``console_config``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from urllib.parse import urlencode

from me2_scheduler.config import Config, ConsoleConf
from me2_scheduler.console import csrf
from me2_scheduler.console.server import Console
from me2_scheduler.console.web import Response, parse_request

USER, PASSWORD, TOKEN = "ops", "correct-horse-battery", "scripts-token-0123456789"
CONSOLE = ConsoleConf(enabled=True, user=USER, password=PASSWORD, token=TOKEN)
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
HOST = "console.test"


def console_config(config: Config) -> Config:
    """``config`` with the console on, as the tests log in to it."""
    return replace(config, console=CONSOLE)


def ask(
    console: Console,
    method: str,
    target: str,
    *,
    auth: str | None = BASIC,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """One request through the app, as the supervisor's proxy hands it on."""
    sent = {"Accept": "text/html", "Host": HOST, **(headers or {})}
    if auth:
        sent["Authorization"] = auth
    body = b""
    if form is not None:
        sent["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode(form).encode()
    return console.app.handle(parse_request(method, target, sent, body, "/console"))


def page(console: Console, target: str) -> str:
    """The HTML of a page that must answer 200."""
    answer = ask(console, "GET", target)
    assert answer.status == 200, answer.body[:2000]
    return answer.body.decode()


def post(console: Console, target: str, **form: str) -> Response:
    """A form posted with the basic-auth operator's CSRF token."""
    operator = console.app.auth.from_header(BASIC)
    assert operator is not None
    token = csrf.token_for(console.app.auth.key, operator)
    return ask(console, "POST", target, form={"csrf": token, **form})


def shown(html: str, element_id: str) -> str:
    """The text of the element with ``element_id`` (inner tags stripped, spaces folded)."""
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert found, f"no #{element_id}"
    return " ".join(re.sub(r"<[^>]+>", "", found[1]).split()).replace("\u2009", "")
