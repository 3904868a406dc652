"""The console's config rules and its credentials, sessions and CSRF tokens (no server).

An enabled console needs a listener (its own, or Prometheus's) and a password or token
(there is no default), and refuses weak or unusable ones with one
``config error: Console.<key>: ...`` line and exit 2.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from me2_scheduler.config import ConsoleConf, describe, load_config
from me2_scheduler.console import csrf
from me2_scheduler.console.auth import SESSION_SECONDS, Authenticator
from me2_scheduler.console.queries import like_pattern, percentile
from me2_scheduler.console.render import num, pct
from me2_scheduler.console.web import parse_request, safe_back
from me2_scheduler.errors import ConfigError

from .fixtures_config import run_cli, write
from .support import FakeClock

LISTENER = {"Prometheus": {"Host": "127.0.0.1", "Port": 9101}}
GOOD = {"Enabled": True, "User": "ops", "Password": "${ME2_CONSOLE_PASSWORD}"}
CONF = ConsoleConf(enabled=True, user="ops", password="a-long-enough-secret", token="t" * 20)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("console", "key", "problem"),
    [
        ({"Enabled": True, "User": "ops"}, "Console.Password", "there is no default password"),
        (
            {"Enabled": True, "User": "ops", "Password": "short"},
            "Console.Password",
            "must be at least 12 characters",
        ),
        ({"Password": "a-long-enough-secret"}, "Console.User", "must be set with"),
        ({"User": "o:ps", "Password": "a-long-enough-secret"}, "Console.User", "must not contain"),
        ({"Enabled": True, "Token": "tiny"}, "Console.Token", "must be at least 12"),
    ],
)
def test_an_enabled_console_needs_strong_credentials(
    tmp_path: Path, console: dict, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(write(tmp_path, {"Console": console, **LISTENER})))
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_an_enabled_console_needs_a_listener_its_own_or_prometheus(tmp_path: Path) -> None:
    console = {**GOOD, "Password": "a-long-enough-secret"}
    path = write(tmp_path, {"Console": console})
    with pytest.raises(ConfigError, match=r"needs Console\.Host .* or Prometheus\.Host") as caught:
        load_config(str(path))
    assert caught.value.key == "Console.Enabled"

    own = load_config(str(write(tmp_path, {"Console": {**console, "Host": "127.0.0.1"}})))
    assert (own.console.host, own.console.port, own.prometheus.host) == ("127.0.0.1", 9102, "")

    clash = {"Console": {**console, "Host": "127.0.0.1", "Port": 9101}, **LISTENER}
    with pytest.raises(ConfigError, match=r"must differ from Prometheus\.Port") as caught:
        load_config(str(write(tmp_path, clash)))
    assert caught.value.key == "Console.Port"


def test_a_password_left_unset_in_the_environment_stops_the_start_with_exit_2(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, {"Console": GOOD, **LISTENER})
    result = run_cli("check-config", "-f", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("config error: Console.Password: must be set when")
    assert "Traceback" not in result.stderr


def test_the_password_comes_from_the_environment_and_is_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ME2_CONSOLE_PASSWORD", "from-the-environment")
    config = load_config(str(write(tmp_path, {"Console": GOOD, **LISTENER})))
    assert config.console == ConsoleConf(True, "ops", "from-the-environment", "")
    described = describe(config)
    assert "from-the-environment" not in described
    assert yaml.safe_load(described)["Console"] == {
        "Enabled": True,
        "User": "ops",
        "Password": "******",
        "Token": "",
        "Host": "",
        "Port": 9102,
    }
    assert "from-the-environment" not in repr(config)


def test_the_console_is_off_by_default(tmp_path: Path) -> None:
    assert load_config(str(write(tmp_path, {}))).console == ConsoleConf()


# -- credentials and sessions ------------------------------------------------------------


def test_basic_and_bearer_credentials_are_checked_exactly() -> None:
    auth = Authenticator(CONF)
    assert auth.from_header(basic("ops", "a-long-enough-secret")).name == "ops"  # type: ignore[union-attr]
    assert auth.from_header(basic("ops", "a-long-enough-secreT")) is None
    assert auth.from_header(basic("admin", "a-long-enough-secret")) is None
    assert auth.from_header("Basic %%%not-base64") is None
    assert auth.from_header("Bearer " + "t" * 20).via == "token"  # type: ignore[union-attr]
    assert auth.from_header("Bearer " + "t" * 19) is None
    assert auth.from_header("Digest whatever") is None
    no_password = Authenticator(ConsoleConf(enabled=True, token="t" * 20))
    assert no_password.from_header(basic("", "")) is None
    assert not no_password.password_ok("", "")


def test_a_session_expires_and_cannot_be_forged_or_moved_to_another_console() -> None:
    clock = FakeClock(1_000_000.0)
    auth = Authenticator(CONF, clock=clock)
    cookie = auth.new_session("ops")
    operator = auth.session_operator(cookie)
    assert operator is not None and (operator.name, operator.via) == ("ops", "session")
    payload, _, signature = cookie.rpartition(".")
    user, expires, nonce = payload.split(".")
    longer = f"{user}.{int(expires) + 3600}.{nonce}"
    assert auth.session_operator(f"{longer}.{signature}") is None
    assert auth.session_operator("garbage") is None
    other = Authenticator(ConsoleConf(True, "ops", "another-long-secret", ""), clock=clock)
    assert other.session_operator(cookie) is None  # a changed password ends every session
    clock.advance(SESSION_SECONDS + 1)
    assert auth.session_operator(cookie) is None


def test_failed_logins_are_limited_per_minute() -> None:
    clock = FakeClock(0.0)
    auth = Authenticator(CONF, clock=clock)
    for _ in range(20):
        assert not auth.throttled()
        auth.failed()
    assert auth.throttled()
    clock.advance(61)
    assert not auth.throttled()


def test_the_csrf_token_is_bound_to_the_session_and_checked_with_the_origin() -> None:
    auth = Authenticator(CONF)
    first = auth.session_operator(auth.new_session("ops"))
    second = auth.session_operator(auth.new_session("ops"))
    assert first is not None and second is not None
    token = csrf.token_for(auth.key, first)
    assert token != csrf.token_for(auth.key, second)  # a new login, a new token

    def posted(form: dict[str, str], **headers: str) -> str:
        request = parse_request("POST", "/console/x", {"Host": "h:1", **headers}, b"", "/console")
        request = type(request)(**{**request.__dict__, "form": form})
        return csrf.problem(auth.key, first, request)

    assert posted({"csrf": token}) == ""
    assert posted({"csrf": token}, Origin="http://h:1") == ""
    assert "another site" in posted({"csrf": token}, Origin="http://evil:1")
    assert "another site" in posted({"csrf": token}, Origin="null")
    assert "no CSRF token" in posted({})
    assert "wrong" in posted({"csrf": csrf.token_for(auth.key, second)})


# -- small pieces ------------------------------------------------------------------------


def test_only_console_pages_are_followed_after_login_or_a_post() -> None:
    assert safe_back("/console/paused?reason=user", "/d") == "/console/paused?reason=user"
    for outside in (
        "https://evil.example/",
        "//evil.example/console/",
        "/metrics",
        "/console/..//evil",
        "/console/\nSet-Cookie:x",
        "",
    ):
        assert safe_back(outside, "/d") == "/d"


def test_numbers_and_percentiles_read_as_people_expect() -> None:
    assert num(1234567) == "1\u2009234\u2009567" and num(None) == "-"
    assert pct(0.9876) == "98.8\u2009%" and pct(None) == "-"
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([5], 99) == 5 and percentile([], 99) is None
    assert like_pattern("50%_off\\") == "%50\\%\\_off\\\\%"
