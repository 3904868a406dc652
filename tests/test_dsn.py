"""The Go MySQL DSN parser: go-sql-driver/mysql's ParseDSN, edge case by edge case."""

from __future__ import annotations

import pytest

from me2_scheduler.dsn import (
    MysqlDsn,
    local_zone_name,
    mask_dsn,
    parse_dsn,
    parse_go_duration,
    zone_exists,
)
from me2_scheduler.errors import ConfigError

SEED_DSN = "root:123456@tcp(127.0.0.1:3306)/me2?charset=utf8mb4&parseTime=true"


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        pytest.param(
            SEED_DSN,
            {
                "user": "root",
                "password": "123456",
                "host": "127.0.0.1",
                "port": 3306,
                "database": "me2",
                "charset": "utf8mb4",
                "parse_time": True,
                "loc": "UTC",
            },
            id="the-seed-dsn",
        ),
        pytest.param(
            "me2:p:a@ss@w@rd@tcp(db.internal:3307)/me2",
            {"user": "me2", "password": "p:a@ss@w@rd", "host": "db.internal", "port": 3307},
            id="password-with-colon-and-at",
        ),
        pytest.param(
            "me2:pa/ss@tcp(db:3306)/me2",
            {"user": "me2", "password": "pa/ss", "database": "me2"},
            id="password-with-slash",
        ),
        pytest.param("me2@tcp(db:3306)/me2", {"user": "me2", "password": ""}, id="no-password"),
        pytest.param(
            "tcp(db:3306)/me2", {"user": "", "password": "", "host": "db"}, id="no-user-info"
        ),
        pytest.param("me2:@tcp(db:3306)/me2", {"user": "me2", "password": ""}, id="empty-password"),
        pytest.param(
            "root:pw@unix(/run/mysqld/mysqld.sock)/me2",
            {"unix_socket": "/run/mysqld/mysqld.sock", "database": "me2"},
            id="unix-socket",
        ),
        pytest.param("root@unix()/me2", {"unix_socket": "/tmp/mysql.sock"}, id="unix-default-path"),
        pytest.param(
            "root@tcp([::1]:3307)/me2", {"host": "::1", "port": 3307}, id="ipv6-with-port"
        ),
        pytest.param(
            "root@tcp([fe80::1])/me2", {"host": "fe80::1", "port": 3306}, id="ipv6-no-port"
        ),
        pytest.param("root@tcp(::1)/me2", {"host": "::1", "port": 3306}, id="bare-ipv6"),
        pytest.param(
            "root@tcp(db.internal)/me2", {"host": "db.internal", "port": 3306}, id="no-port"
        ),
        pytest.param("root@tcp()/me2", {"host": "127.0.0.1", "port": 3306}, id="empty-address"),
        pytest.param("root@/me2", {"host": "127.0.0.1", "port": 3306}, id="no-network"),
        pytest.param("/me2", {"user": "", "host": "127.0.0.1", "database": "me2"}, id="only-db"),
        pytest.param("root@tcp(db:3306)/", {"database": ""}, id="empty-database"),
        pytest.param(
            "root@tcp(db:3306)/?parseTime=1",
            {"database": "", "parse_time": True},
            id="empty-database-with-params",
        ),
        pytest.param("root@tcp(db)/me%2Dtest", {"database": "me-test"}, id="escaped-database"),
        pytest.param("root@tcp(db)/me2?loc=Local", {"loc": "Asia/Shanghai"}, id="loc-local"),
        pytest.param(
            "root@tcp(db)/me2?loc=Asia%2FTokyo", {"loc": "Asia/Tokyo"}, id="loc-url-escaped"
        ),
        pytest.param("root@tcp(db)/me2?loc=UTC", {"loc": "UTC"}, id="loc-utc"),
        pytest.param("root@tcp(db)/me2?loc=", {"loc": "UTC"}, id="loc-empty-is-utc"),
        pytest.param("root@tcp(db)/me2?timeout=5s", {"timeout_s": 5.0}, id="timeout-seconds"),
        pytest.param("root@tcp(db)/me2?timeout=1m30s", {"timeout_s": 90.0}, id="timeout-compound"),
        pytest.param("root@tcp(db)/me2?timeout=500ms", {"timeout_s": 0.5}, id="timeout-millis"),
        pytest.param(
            "root@tcp(db)/me2?readTimeout=30s&writeTimeout=1m30s",
            {"read_timeout_s": 30.0, "write_timeout_s": 90.0, "timeout_s": 5.0},
            id="read-and-write-timeouts",
        ),
        pytest.param(
            "root@tcp(db)/me2?timeout=2s&readTimeout=1.5s&writeTimeout=750ms",
            {"timeout_s": 2.0, "read_timeout_s": 1.5, "write_timeout_s": 0.75},
            id="all-three-timeouts",
        ),
        pytest.param(
            "root@tcp(db)/me2?parseTime=true",
            {"read_timeout_s": None, "write_timeout_s": None},
            id="io-timeouts-absent",
        ),
        pytest.param(
            "root@tcp(db)/me2?charset=utf8mb4,utf8", {"charset": "utf8mb4"}, id="charset-list"
        ),
        pytest.param("root@tcp(db)/me2?parseTime=False", {"parse_time": False}, id="parse-false"),
        pytest.param(
            "root@tcp(db)/me2?autocommit=true&collation=utf8mb4_bin&tls=skip-verify&x",
            {"database": "me2", "charset": "utf8mb4", "parse_time": False},
            id="unknown-params-ignored",
        ),
    ],
)
def test_dsn_is_parsed_as_go_sql_driver_parses_it(
    dsn: str, expected: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Shanghai")  # what loc=Local resolves to
    parsed = parse_dsn(dsn)
    assert {name: getattr(parsed, name) for name in expected} == expected


BAD_PREFIX = "root:pw@tcp(db:3306)/me2?"  # a good DSN, before its bad params


def bad_param(query: str, fragment: str, id: str) -> object:
    """A case of a good DSN with the bad ``query``, whose error says ``fragment``."""
    return pytest.param(BAD_PREFIX + query, fragment, id=id)


@pytest.mark.parametrize(
    ("dsn", "fragment"),
    [
        pytest.param("root:pw@tcp(db:3306)me2", "missing the slash", id="missing-slash"),
        pytest.param("root:pw@tcp(db:3306", "missing the slash", id="missing-slash-and-brace"),
        pytest.param("root:pw@tcp(db:3306/me2", "missing closing brace", id="unclosed-address"),
        bad_param("loc=Asia/Shanghai", "forget to escape", id="unescaped-slash"),
        bad_param("loc=Mars%2FOlympus", "unknown time zone", id="bad-loc"),
        bad_param("loc=Asia%2", "bad %-escape", id="bad-loc-escape"),
        bad_param("parseTime=yes", "parseTime", id="bad-bool"),
        pytest.param("root:pw@tcp(db:70000)/me2", "port", id="port-out-of-range"),
        pytest.param("root:pw@tcp(db:abc)/me2", "port", id="port-not-a-number"),
        pytest.param("root:pw@db.internal:3306/me2", "unsupported network", id="forgot-tcp"),
        pytest.param("root:pw@tcp([::1/me2", "missing closing brace", id="unclosed-ipv6"),
    ],
)
def test_malformed_dsn_is_a_config_error_on_the_datasource_key(dsn: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_dsn(dsn)
    assert caught.value.key == "Mysql.DataSource"
    assert fragment in caught.value.problem


# A bad value of a timeout parameter, and what its error says after the parameter's name.
BAD_DURATIONS = {
    "30": ": invalid duration",  # no unit
    "5x": ": invalid duration",
    "": ": invalid duration",
    "0s": " must be positive",
    "-1s": " must be positive",
    "9000h": " must be at most 8760h",
}


@pytest.mark.parametrize("name", ["timeout", "readTimeout", "writeTimeout"])
@pytest.mark.parametrize("value", list(BAD_DURATIONS))
def test_a_bad_timeout_is_a_config_error_naming_its_parameter(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_dsn(f"{BAD_PREFIX}{name}={value}")
    assert caught.value.key == "Mysql.DataSource"
    assert name + BAD_DURATIONS[value] in caught.value.problem


@pytest.mark.parametrize(
    ("dsn", "password"),
    [
        ("me2:S3cr3t-pw@tcp(db:3306)me2", "S3cr3t-pw"),
        ("me2:S3cr3t:p@w@tcp(db:99999)/me2", "S3cr3t:p@w"),
        ("me2:S3cr3t/pw@tcp(db:3306)", "S3cr3t/pw"),  # the slash lands in the password
        ("me2:S3cr3t(pw@db:3306/me2", "S3cr3t(pw"),
        ("me2:S3cr3t)pw@tcp(db/me2", "S3cr3t)pw"),
        ("me2:Shanghai@tcp(db)/me2?loc=Asia/Shanghai", "Shanghai"),
        ("me2:Olympus@tcp(db)/me2?loc=Mars%2FOlympus", "Olympus"),
        ("me2:5x@tcp(db)/me2?timeout=5x", "5x"),
        ("me2:9q@tcp(db)/me2?readTimeout=9q", "9q"),
    ],
)
def test_dsn_error_never_shows_the_password(dsn: str, password: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_dsn(dsn)
    assert password not in str(caught.value)
    assert dsn not in str(caught.value)


def test_parsed_dsn_repr_hides_the_password() -> None:
    parsed = parse_dsn("me2:hunter2-secret@tcp(db:3306)/me2")
    assert parsed.password == "hunter2-secret"
    assert "hunter2-secret" not in repr(parsed)


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        (SEED_DSN, "root:******@tcp(127.0.0.1:3306)/me2?charset=utf8mb4&parseTime=true"),
        ("me2:p:a@ss@tcp(db)/me2", "me2:******@tcp(db)/me2"),
        ("me2@tcp(db)/me2", "me2@tcp(db)/me2"),
        ("me2:@tcp(db)/me2", "me2:@tcp(db)/me2"),
        ("tcp(db)/me2", "tcp(db)/me2"),
    ],
)
def test_mask_dsn_replaces_only_the_password(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("5s", 5.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("2µs", 2e-6),
        ("10ns", 1e-8),
        (".5s", 0.5),
        ("-3s", -3.0),
    ],
)
def test_go_duration_is_parsed_to_seconds(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "5 s", "1d", "1h-5m", ".s", "five seconds"])
def test_malformed_go_duration_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


@pytest.mark.parametrize(
    ("tz", "zone"),
    [
        ("Europe/Paris", "Europe/Paris"),
        (":America/New_York", "America/New_York"),
        ("/usr/share/zoneinfo/Asia/Tokyo", "Asia/Tokyo"),
        ("", "UTC"),  # Go: TZ set but empty means UTC
        ("Mars/Olympus", "UTC"),  # Go falls back to UTC for a TZ it cannot load
    ],
)
def test_local_zone_follows_tz_as_go_does(
    tz: str, zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", tz)
    assert local_zone_name() == zone


def test_local_zone_without_tz_is_a_real_iana_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TZ", raising=False)
    name = local_zone_name()
    assert zone_exists(name)
    assert not name.startswith("/")


def test_loc_local_in_dsn_is_resolved_to_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    assert parse_dsn("root@tcp(db)/me2?loc=Local").loc == "Europe/Berlin"


def test_dsn_defaults_match_go_sql_driver() -> None:
    parsed = parse_dsn("root@tcp(db)/me2")
    assert (parsed.loc, parsed.parse_time, parsed.charset) == ("UTC", False, "utf8mb4")
    assert parsed.timeout_s == MysqlDsn().timeout_s == 5.0
    assert (parsed.read_timeout_s, parsed.write_timeout_s) == (None, None)
