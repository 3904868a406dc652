"""CSRF tokens: every POST carries one, bound to the operator's session or credentials.

The token is an HMAC, under the console's key, of what identifies the
caller: the session's nonce (a new token per login), else the basic-auth
user or the bearer token. A page puts it in each form's hidden ``csrf``
field (scripts may send the ``X-CSRF-Token`` header instead). Another site
can make a browser send the cookie or the basic credentials, but cannot
read a page to learn the token. An ``Origin`` header, when a browser sends
one, must also name this host.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from me2_scheduler.console.auth import Operator
from me2_scheduler.console.web import Request

FIELD = "csrf"
HEADER = "X-CSRF-Token"


def token_for(key: bytes, operator: Operator) -> str:
    """The CSRF token of ``operator``'s session or credentials."""
    digest = hmac.new(key, ("csrf\0" + operator.binding).encode(), hashlib.sha256).hexdigest()
    return digest[:40]


def problem(key: bytes, operator: Operator, request: Request) -> str:
    """Why ``request`` fails the CSRF check, "" when it passes."""
    origin = request.header("Origin")
    if origin and urlsplit(origin).netloc != request.header("Host"):  # "null" fails too
        return "the form was sent from another site"
    given = request.form.get(FIELD) or request.header(HEADER)
    if not given:
        return "the form has no CSRF token; reload the page and try again"
    if not hmac.compare_digest(given.encode(), token_for(key, operator).encode()):
        return "the CSRF token is wrong or from an old session; reload the page and try again"
    return ""
