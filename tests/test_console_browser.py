"""The console in a real browser: headless Chromium (Debian's) on the real service.

``me2-scheduler run`` with the console on (its password from the
environment), on MariaDB, Redis and the Action simulator; Selenium drives
``/usr/bin/chromium`` through ``/usr/bin/chromedriver`` (no download: the
paths are given and Selenium Manager is kept offline). The operator logs in,
reads the overview against MySQL, resumes an auto-paused avatar from the
paused list and sees Action called for it; a wrong password and a form
without its CSRF token are refused.

With ``ME2_CONSOLE_SCREENSHOTS=<dir>`` the test also saves the main pages
as PNGs there (``docs/console/`` holds the ones the README shows).
"""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

from me2_devkit.simulators import SimulatorControl
from me2_devkit.testing.stack import Service, Simulator
from me2_scheduler.protos import scheduler_pb2

from .fixtures_console import PASSWORD, USER
from .fixtures_service import DEFAULTS, Running, write_service_config
from .support import wait_until

pytestmark = pytest.mark.timeout(300)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOTS = os.environ.get("ME2_CONSOLE_SCREENSHOTS", "")
AVATARS = range(1, 41)
FAILING = (3, 4)  # Action always fails them: auto-paused after two failures


@pytest.fixture
def running(tmp_path, mariadb, redis_server, database, redis_key) -> Iterator[Running]:
    action = Simulator("action", tmp_path, ("--fail-avatars", ",".join(map(str, FAILING))))
    action.start()
    values = {
        **DEFAULTS,
        "max_failures": 2,
        "min_h": 5 / 3600,
        "max_h": 10 / 3600,
        "cron": "* * * * *",
    }
    env = {"ME2_CONSOLE_PASSWORD": PASSWORD}
    intervals = {"MinIntervalHours": values["min_h"], "MaxIntervalHours": values["max_h"]}
    extra = {
        "DiaryRpc": {"Endpoints": [action.address]},
        "ActionSchedule": intervals,
        "Console": {"Enabled": True, "User": USER, "Password": "${ME2_CONSOLE_PASSWORD}"},
    }
    written = write_service_config(
        tmp_path, mariadb, redis_server, database, redis_key, action.address, values, env, **extra
    )
    service = Service(written.path, tmp_path, env=env).start()
    try:
        service.wait_ready()
        service.process.wait_for_output(r"console serving /console/")  # type: ignore[union-attr]
        ports = written.rpc_port, written.metrics_port
        yield Running(service, written.path, mariadb, database, action, *ports)
    finally:
        service.stop()
        action.stop()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert os.access(binary, os.X_OK), f"{binary} missing: run scripts/ensure-system.sh"
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1360,1000",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def text(driver: WebDriver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text.replace("\u2009", "")


def snap(driver: WebDriver, name: str) -> None:
    """Save the page as ``<ME2_CONSOLE_SCREENSHOTS>/<name>.png`` when asked to."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1360, min(max(int(height), 700), 2400))
        driver.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))
        driver.set_window_size(1360, 1000)


def mysql_counts(running: Running) -> dict[str, str]:
    by_status = dict(running.query("SELECT status, COUNT(*) FROM avatar_schedules GROUP BY status"))
    ((auto,),) = running.query(
        "SELECT COUNT(*) FROM avatar_schedules WHERE status='paused' AND pause_reason='failures'"
    )
    counts = {key: str(by_status.get(key, 0)) for key in ("active", "paused", "disabled")}
    return counts | {"auto-paused": str(auto)}


def page_counts(driver: WebDriver) -> dict[str, str]:
    return {key: text(driver, key) for key in ("active", "paused", "disabled", "auto-paused")}


def paused_rows(driver: WebDriver) -> list[str | None]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#paused-list tbody tr")
    return [row.get_attribute("id") for row in rows]


def status_of(url: str, auth: str | None = None, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers={"Accept": "text/html"})
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def prepare(running: Running) -> None:
    """40 avatars: two auto-paused by failures, one paused by a user, one disabled."""
    running.enable(*AVATARS)
    stub = running.stub()
    stub.PauseAvatarSchedule(scheduler_pb2.PauseAvatarScheduleRequest(avatar_id=10), timeout=10)
    stub.DisableAvatarSchedule(scheduler_pb2.DisableAvatarScheduleRequest(avatar_id=11), timeout=10)
    for avatar_id in FAILING:  # fail now rather than in 20-40 s
        for _ in range(2):
            request = scheduler_pb2.TriggerScheduleRequest(avatar_id=avatar_id)
            stub.TriggerSchedule(request, timeout=10)
    wait_until(lambda: mysql_counts(running)["auto-paused"] == "2", 60, "two auto-paused avatars")


def test_an_operator_logs_in_reads_the_overview_and_resumes_an_auto_paused_avatar(
    running: Running, browser: WebDriver
) -> None:
    base = f"http://127.0.0.1:{running.metrics_port}/console"
    prepare(running)

    browser.get(base + "/")
    assert browser.current_url.startswith(base + "/login")  # no session: the login form
    snap(browser, "login")
    log_in(browser, "not-the-password")
    assert "wrong user name or password" in text(browser, "problem")
    wrong = "Basic " + base64.b64encode(f"{USER}:not-the-password".encode()).decode()
    assert status_of(base + "/", auth=wrong) == 401
    log_in(browser, PASSWORD)
    assert browser.current_url == base + "/"
    assert text(browser, "operator") == USER

    def overview_matches_mysql() -> bool:
        browser.refresh()
        return page_counts(browser) == mysql_counts(running)

    wait_until(overview_matches_mysql, 30, "the overview's counts to match MySQL")
    seeded = {"active": "36", "paused": "3", "disabled": "1", "auto-paused": "2"}
    assert page_counts(browser) == seeded
    snap(browser, "overview")

    old_page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.LINK_TEXT, "Paused").click()
    WebDriverWait(browser, 30).until(staleness_of(old_page))
    assert paused_rows(browser) == ["paused-3", "paused-4"]
    assert "simulated failure" in text(browser, "paused-3")
    snap(browser, "paused")

    control = SimulatorControl(running.action.address)
    control.configure(fail_avatars=[4])  # avatar 3's problem is fixed
    calls_before = control.stats().calls_per_avatar.get(3, 0)
    submit(browser, "resume-3")
    assert "Resume avatar 3: success" in text(browser, "flash")
    assert paused_rows(browser) == ["paused-4"]
    assert running.row(3)["status"] == "active"
    wait_until(
        lambda: control.stats().calls_per_avatar.get(3, 0) > calls_before,
        90,
        "Action to be called for the resumed avatar",
    )
    wait_until(
        lambda: any(h[0] == "success" and h[1] == "auto" for h in running.history(3)),
        30,
        "the resumed avatar's dispatch to be recorded",
    )
    control.close()

    # A form whose CSRF token was taken out is refused, and changes nothing.
    browser.execute_script("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    submit(browser, "resume-4")
    assert browser.find_element(By.TAG_NAME, "h1").text == "403"
    assert "CSRF token" in text(browser, "error")
    assert running.row(4)["status"] == "paused"
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert status_of(base + "/avatars/4/resume", auth=basic, data=b"x=1") == 403

    browser.get(base + "/avatars/3")
    assert text(browser, "status") == "active"
    keys = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#history td.key")]
    assert any(key.startswith("3:") for key in keys)
    snap(browser, "avatar")
    if SCREENSHOTS:
        more_screenshots(browser, base, running)


def log_in(driver: WebDriver, password: str) -> None:
    driver.find_element(By.ID, "user").clear()
    driver.find_element(By.ID, "user").send_keys(USER)
    driver.find_element(By.ID, "password").send_keys(password)
    submit(driver, "login")


def submit(driver: WebDriver, button_id: str) -> None:
    """Click a form's button and wait until the page it leads to has replaced this one."""
    old_page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, button_id).click()
    WebDriverWait(driver, 30).until(staleness_of(old_page))


def more_screenshots(driver: WebDriver, base: str, running: Running) -> None:
    """The timeline, the index page after a verify, and the overview after a while of work."""
    driver.get(base + "/timeline?hours=1")
    snap(driver, "timeline")
    driver.get(base + "/index")
    submit(driver, "verify")

    def verified() -> bool:
        try:
            driver.get(base + "/index")
            return bool(driver.find_elements(By.ID, "job-result"))
        except WebDriverException:
            return False

    wait_until(verified, 60, "the verify job to finish")
    snap(driver, "index")
    count = "SELECT COUNT(*) FROM avatar_schedule_history"
    wait_until(lambda: running.query(count)[0][0] >= 200, 120, "200 dispatches")
    driver.get(base + "/")
    snap(driver, "overview")
    driver.get(base + "/avatars/3")
    snap(driver, "avatar")
