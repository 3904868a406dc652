"""The console app in-process on real MariaDB, Redis and an Action simulator.

Pages are asked through ``App.handle`` exactly as the console child asks
them; the numbers they show are checked against MySQL and the index, the
actions against the rows and the access log, and every statement a page
load runs is EXPLAINed on a real table.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import pymysql
import pytest

from me2_devkit.simulators import RunningSimulator, SimulatorControl
from me2_devkit.testing.servers import MariaDBServer
from me2_scheduler.clock import epoch
from me2_scheduler.config import Config, PrometheusConf, RedisConf
from me2_scheduler.console import csrf
from me2_scheduler.console.auth import REALM
from me2_scheduler.console.server import Console
from me2_scheduler.storage.reconcile import rebuild

from .fixtures_console import (
    BASIC,
    PASSWORD,
    TOKEN,
    USER,
    ask,
    console_config,
    page,
    post,
    shown,
)
from .support import insert_schedules, this_second, wait_until


@pytest.fixture
def console(
    dispatch_config: Callable[..., Config], action_simulator: RunningSimulator
) -> Iterator[Console]:
    made = Console(console_config(dispatch_config(action_simulator.address)))
    yield made
    made.close()


def seed(mariadb: MariaDBServer, database: str) -> None:
    """600 active, 40 paused by failures, 25 by users, 5 from before pause reasons, 30 disabled."""
    # Five minutes past the hour, so no avatar slips into "due within the hour"
    # while a slow box renders the page.
    soon = this_second() + timedelta(hours=1, minutes=5)
    rows: list[tuple] = [(i, "active", soon + timedelta(seconds=i), None) for i in range(1, 601)]
    rows += [(i, "paused", soon, "failures") for i in range(601, 641)]
    rows += [(i, "paused", soon, "user") for i in range(641, 666)]
    rows += [(i, "paused", soon, None) for i in range(666, 671)]
    rows += [(i, "disabled", soon, None) for i in range(671, 701)]
    insert_schedules(mariadb, database, rows)
    errors = [
        ("Action failed: deadline exceeded" if i % 2 else "breaker is open", i)
        for i in range(601, 641)
    ]
    with (
        pymysql.connect(
            host="127.0.0.1", port=mariadb.port, user="root", database=database, autocommit=True
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.executemany(
            "UPDATE avatar_schedules SET failed_count = 5, last_error = %s,"
            " last_failed_time = UTC_TIMESTAMP() WHERE avatar_id = %s",
            errors,
        )


@pytest.fixture
def seeded(console: Console, mariadb: MariaDBServer, database: str) -> None:
    """``seed``'s schedules in MySQL, and the index rebuilt from them."""
    seed(mariadb, database)
    rebuild(console.store, console.index)


@pytest.mark.usefixtures("seeded")
def test_the_overview_shows_the_counts_of_mysql_and_the_index(
    console: Console, mariadb: MariaDBServer, database: str
) -> None:
    html = page(console, "/console/")
    by_status = dict(
        mariadb.query(database, "SELECT status, COUNT(*) FROM avatar_schedules GROUP BY status")
    )
    assert shown(html, "active") == str(by_status["active"]) == "600"
    assert shown(html, "paused") == str(by_status["paused"]) == "70"
    assert shown(html, "auto-paused") == "40"
    assert shown(html, "disabled") == str(by_status["disabled"]) == "30"
    assert shown(html, "due-hour") == "0"  # all due in an hour and more
    assert shown(html, "operator") == USER


@pytest.mark.usefixtures("seeded")
def test_the_timeline_counts_the_due_avatars_of_each_minute(console: Console) -> None:
    html = page(console, "/console/timeline?hours=2")
    assert shown(html, "timeline-total") == "600"  # due from 65 minutes on, over ten minutes
    counts = [int(n) for n in re.findall(r'<td class="n">(\d+)</td>', html)]
    assert len(counts) == 120 and sum(counts) == 600
    assert page(console, "/console/timeline?hours=1").count("<meter") == 60


def test_the_paused_list_filters_by_reason_and_error_and_pages_by_avatar_id(
    console: Console, mariadb: MariaDBServer, database: str
) -> None:
    seed(mariadb, database)
    html = page(console, "/console/paused")  # auto-paused by default
    assert shown(html, "paused-total") == "40"
    listed = [int(a) for a in re.findall(r'id="paused-(\d+)"', html)]
    assert listed == list(range(601, 641))
    assert "deadline exceeded" in html and "breaker is open" in html
    html = page(console, "/console/paused?reason=failures&q=breaker")
    assert [int(a) for a in re.findall(r'id="paused-(\d+)"', html)] == list(range(602, 641, 2))
    html = page(console, "/console/paused?reason=all")
    assert shown(html, "paused-total") == "70"
    first = [int(a) for a in re.findall(r'id="paused-(\d+)"', html)]
    assert first == list(range(601, 651))
    after = re.search(r'id="next-page" href="([^"]+)"', html)
    assert after is not None
    rest = page(console, after[1].replace("&amp;", "&"))
    assert [int(a) for a in re.findall(r'id="paused-(\d+)"', rest)] == list(range(651, 671))
    assert "next-page" not in rest
    unknown = page(console, "/console/paused?reason=unknown")
    assert [int(a) for a in re.findall(r'id="paused-(\d+)"', unknown)] == list(range(666, 671))


@pytest.mark.usefixtures("seeded")
def test_resume_from_the_paused_list_goes_through_the_api_and_names_the_operator(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="me2_scheduler.rpc")
    answer = post(console, "/console/avatars/605/resume", back="/console/paused?reason=failures")
    assert answer.status == 303
    assert dict(answer.headers)["Location"] == "/console/paused?reason=failures"
    row = console.store.get(605)
    assert row is not None
    assert (row.status, row.failed_count, row.pause_reason) == ("active", 0, None)
    assert console.index.due_score(605) == epoch(row.next_schedule_time)  # MySQL, then Redis
    line = next(r.getMessage() for r in caplog.records if "ResumeAvatarSchedule" in r.getMessage())
    assert line.startswith("rpc ResumeAvatarSchedule avatar_id=605 code=0 ")
    assert line.endswith(f"operator={USER} via=console")
    cookie = next(v for k, v in answer.headers if k == "Set-Cookie")
    flashed = ask(console, "GET", "/console/paused", headers={"Cookie": cookie.split(";")[0]})
    assert "Resume avatar 605: success" in flashed.body.decode()
    assert "paused-605" not in flashed.body.decode()
    refused = post(console, "/console/avatars/671/resume")  # disabled: the state table says 409
    assert refused.status == 303
    assert console.store.get(671).status == "disabled"  # type: ignore[union-attr]


@pytest.mark.usefixtures("seeded")
def test_trigger_dispatches_through_action_and_the_history_shows_its_key(
    console: Console, action_simulator: RunningSimulator
) -> None:
    assert post(console, "/console/avatars/7/trigger").status == 303
    with SimulatorControl(action_simulator.address) as control:
        stats = control.stats()
    assert stats.calls_per_avatar == {7: 1}
    html = page(console, "/console/avatars/7")
    assert shown(html, "status") == "active"
    assert shown(html, "schedule-count") == "1"
    keys = re.findall(r'<td class="key">(7:\d+)</td>', html)
    assert keys == list(stats.calls_per_key)  # the key Action was called with
    assert "manual" in html and "success" in html
    for button in ("pause", "trigger", "disable"):
        assert f'id="{button}"' in html
    assert 'id="resume"' not in html


def test_the_avatar_page_pages_its_history_with_idempotency_keys(
    console: Console, mariadb: MariaDBServer, database: str
) -> None:
    insert_schedules(mariadb, database, [(9, "active", this_second(), None)])
    planned = [epoch(this_second()) - 60 * n for n in range(25)]
    history = ",".join(
        f"(9, 'auto', FROM_UNIXTIME({p}), FROM_UNIXTIME({p}), 'success', '9:{p * 1000}')"
        for p in reversed(planned)
    )
    mariadb.query(
        database,
        "INSERT INTO avatar_schedule_history (avatar_id, `trigger`,"
        " planned_time, started_time, outcome, idempotency_key) VALUES " + history,
    )
    html = page(console, "/console/avatars/9")
    keys = re.findall(r'<td class="key">(9:\d+)</td>', html)
    assert keys == [f"9:{p * 1000}" for p in planned[:20]]  # newest first
    older = re.search(r'id="older" href="([^"]+)"', html)
    assert older is not None
    rest = re.findall(r'<td class="key">(9:\d+)</td>', page(console, older[1]))
    assert rest == [f"9:{p * 1000}" for p in planned[20:]]


@pytest.mark.usefixtures("seeded")
def test_verify_finds_a_lost_avatar_and_repair_puts_it_back_with_progress(console: Console) -> None:
    console.index.remove(3)
    assert post(console, "/console/index/verify").status == 303
    done = wait_until(lambda: _finished(console), 60, "the verify job")
    assert "missing 1 e.g. 3" in shown(done, "job-result")
    assert console.index.due_score(3) is None
    assert post(console, "/console/index/repair").status == 303
    done = wait_until(lambda: _finished(console), 60, "the repair job")
    assert "1 difference(s) repaired" in done
    assert console.index.due_score(3) is not None
    assert post(console, "/console/index/rebuild").status == 303
    done = wait_until(lambda: _finished(console), 60, "the rebuild job")
    assert "index rebuilt: 600 active avatars" in done


def _finished(console: Console) -> str:
    html = page(console, "/console/index")
    return html if 'id="job-result"' in html else ""


# -- refusals -------------------------------------------------------------------------


def test_reads_and_writes_need_credentials_and_writes_a_csrf_token(console: Console) -> None:
    assert ask(console, "GET", "/console/", auth=None).status == 303  # a browser: to the login
    script = ask(console, "GET", "/console/", auth=None, headers={"Accept": "*/*"})
    assert script.status == 401 and ("WWW-Authenticate", REALM) in script.headers
    wrong = "Basic " + base64.b64encode(f"{USER}:not-the-password".encode()).decode()
    assert ask(console, "GET", "/console/", auth=wrong).status == 401
    assert ask(console, "GET", "/console/", auth=f"Bearer {TOKEN}").status == 200
    assert ask(console, "GET", "/console/", auth="Bearer nope").status == 401
    assert ask(console, "POST", "/console/avatars/1/pause", auth=None, form={}).status == 401
    no_token = ask(console, "POST", "/console/avatars/1/pause", form={})
    assert no_token.status == 403 and "CSRF" in no_token.body.decode()
    wrong_token = ask(console, "POST", "/console/avatars/1/pause", form={"csrf": "0" * 40})
    assert wrong_token.status == 403
    operator = console.app.auth.from_header(BASIC)
    token = csrf.token_for(console.app.auth.key, operator)  # type: ignore[arg-type]
    evil_origin = {"Origin": "https://evil.example"}
    elsewhere = ask(
        console, "POST", "/console/avatars/1/pause", form={"csrf": token}, headers=evil_origin
    )
    assert elsewhere.status == 403 and "another site" in elsewhere.body.decode()
    assert ask(console, "GET", "/console/static/console.css", auth=None).status == 200


def test_the_login_form_sets_a_session_that_works_until_forged(console: Console) -> None:
    wrong = {"user": USER, "password": "wrong-password!", "next": "/console/"}
    refused = ask(console, "POST", "/console/login", auth=None, form=wrong)
    assert refused.status == 401 and "wrong user name or password" in refused.body.decode()
    right = {"user": USER, "password": PASSWORD, "next": "/console/paused"}
    answer = ask(console, "POST", "/console/login", auth=None, form=right)
    assert answer.status == 303 and dict(answer.headers)["Location"] == "/console/paused"
    cookie = dict(answer.headers)["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in dict(answer.headers)["Set-Cookie"]
    assert ask(console, "GET", "/console/", auth=None, headers={"Cookie": cookie}).status == 200
    forged = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
    assert ask(console, "GET", "/console/", auth=None, headers={"Cookie": forged}).status == 303
    outside = {"user": USER, "password": PASSWORD, "next": "https://evil.example/"}
    away = ask(console, "POST", "/console/login", auth=None, form=outside)
    assert dict(away.headers)["Location"] == "/console/"  # no open redirect


def test_bad_input_is_answered_400_with_what_is_wrong(console: Console) -> None:
    for target, problem in [
        ("/console/timeline?hours=0", "hours must be a whole number from 1 to 24"),
        ("/console/paused?reason=bored", "reason must be one of"),
        ("/console/paused?after=-1", "after must be a whole number"),
        ("/console/avatars?id=abc", "the avatar id must be a whole number"),
        ("/console/avatars/0", "the avatar id must be a whole number from 1"),
    ]:
        answer = ask(console, "GET", target)
        assert answer.status == 400, target
        assert problem in answer.body.decode(), target
    assert ask(console, "GET", "/console/nothing-here").status == 404
    assert ask(console, "GET", "/console/index/verify").status == 405


def test_an_unreachable_redis_is_a_503_page_not_a_traceback(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    config = replace(
        console.services.config,
        redis=RedisConf(host="127.0.0.1:9", key="x:y"),
        prometheus=PrometheusConf(),
    )
    broken = Console(config)
    try:
        answer = ask(broken, "GET", "/console/", headers={"Accept": "*/*"})
    finally:
        broken.close()
    assert answer.status == 503
    assert answer.body.decode().startswith("storage unavailable: redis ")
    assert "Traceback" not in caplog.text
