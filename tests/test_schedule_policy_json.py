"""Scheduling policies: the JSON form people write, its one-sentence errors, the summary."""

from __future__ import annotations

from datetime import date

import pytest

from me2_scheduler.schedule_policy import (
    DEFAULT,
    PolicyError,
    SchedulePolicy,
    interval_hours,
    parse_policy,
    policy_to_dict,
    policy_zone,
    summary,
    validate_policy,
)
from tests.fixtures_schedule_policy import (
    ALL_ZERO,
    CHRISTMAS,
    MON,
    NEW_YEAR,
    NEW_YORK,
    SAT,
    SHANGHAI,
    SUN,
    THU,
    WED,
    WEEKDAYS,
    days,
    only,
    rates,
    window,
)

# --- the JSON form ----------------------------------------------------------------------------
SPEC_EXAMPLE = {
    "time_zone": "Asia/Shanghai",
    "windows": [{"start": "08:00", "end": "23:00", "days": ["mon", "tue", "wed", "thu", "fri"]}],
    "min_interval_hours": 2,
    "max_interval_hours": 6,
    "day_rates": {"sat": 2, "sun": 2},
    "quiet_dates": ["2026-12-25"],
}


def test_the_json_form_reads_every_field():
    assert parse_policy(SPEC_EXAMPLE) == SchedulePolicy(
        time_zone="Asia/Shanghai",
        windows=(window("08:00", "23:00", *WEEKDAYS),),
        min_interval_hours=2.0,
        max_interval_hours=6.0,
        day_rates=rates(sat=2, sun=2),
        quiet_dates=(CHRISTMAS,),
    )


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({}, DEFAULT),
        ({"windows": []}, DEFAULT),
        ({"day_rates": {"SAT": 2}}, SchedulePolicy(day_rates=rates(sat=2))),
        ({"day_rates": {"sun": 3, "weekend": 2}}, SchedulePolicy(day_rates=rates(sat=2, sun=3))),
        (days(["weekdays", "sun"]), only("08:00", "09:00", *WEEKDAYS, SUN)),
        ({"windows": [{"start": "8:00", "end": "24:00"}]}, only("08:00", "00:00")),
        (
            {"windows": [{"start": "08:00:30", "end": "09:00", "days": ["sun", "sun"]}]},
            only("08:00:30", "09:00", SUN),
        ),
        (
            {"quiet_dates": ["2026-12-26", "2026-12-25", "2026-12-26"]},
            SchedulePolicy(quiet_dates=(CHRISTMAS, date(2026, 12, 26))),
        ),
    ],
)
def test_the_json_form_is_forgiving_where_meaning_is_clear(doc, expected):
    assert parse_policy(doc) == expected


@pytest.mark.parametrize(
    "doc", [SPEC_EXAMPLE, {}, {"windows": [{"start": "22:00", "end": "02:30:15", "days": ["fri"]}]}]
)
def test_the_json_form_round_trips(doc):
    p = parse_policy(doc)
    assert policy_to_dict(p) == doc
    assert parse_policy(policy_to_dict(p)) == p


BAD_DOCS = [
    ({"time_zone": "Mars/Base"}, "time_zone", "not a known IANA time zone"),
    ({"time_zone": 8}, "time_zone", "must be a zone name"),
    ({"windows": [{"start": "8am", "end": "09:00"}]}, "windows[0].start", "HH:MM"),
    ({"windows": [{"start": "25:00", "end": "09:00"}]}, "windows[0].start", "HH:MM"),
    ({"windows": [{"start": "24:00", "end": "09:00"}]}, "windows[0].start", "HH:MM"),
    ({"windows": [{"start": "08:00", "end": "08:60"}]}, "windows[0].end", "HH:MM"),
    ({"windows": [{"start": "08:00", "end": "٠٩:00"}]}, "windows[0].end", "HH:MM"),
    ({"windows": [{"start": "08:00"}]}, "windows[0].end", "is missing"),
    (days(["funday"]), "windows[0].days[0]", "not a day name"),
    (days("mon"), "windows[0].days", "list of day names"),
    (days([]), "windows[0].days", "is empty"),
    (
        {"windows": [{"start": "08:00", "end": "09:00", "colour": 1}]},
        "windows[0].colour",
        "not a window",
    ),
    ({"windows": ["08:00-09:00"]}, "windows[0]", "must be an object"),
    ({"windows": {"start": "08:00"}}, "windows", "must be a list"),
    ({"min_interval_hours": 7, "max_interval_hours": 6}, "min_interval_hours", "exceed"),
    ({"min_interval_hours": 0}, "min_interval_hours", "above 0"),
    ({"max_interval_hours": 9000}, "max_interval_hours", "at most 8760"),
    ({"max_interval_hours": "6"}, "max_interval_hours", "number of hours"),
    ({"max_interval_hours": True}, "max_interval_hours", "number of hours"),
    ({"day_rates": {"sat": -1}}, "day_rates.sat", "0 or more"),
    ({"day_rates": {"caturday": 2}}, "day_rates.caturday", "not a day name"),
    ({"day_rates": {"sat": "2"}}, "day_rates.sat", "a rate such as 2"),
    ({"day_rates": ALL_ZERO}, "day_rates", "never opens"),
    ({"day_rates": [2]}, "day_rates", "must be an object"),
    ({"quiet_dates": ["2026-02-30"]}, "quiet_dates[0]", "not a date YYYY-MM-DD"),
    ({"quiet_dates": ["25/12/2026"]}, "quiet_dates[0]", "not a date YYYY-MM-DD"),
    ({"quiet_dates": ["20261225"]}, "quiet_dates[0]", "not a date YYYY-MM-DD"),
    ({"quiet_dates": "2026-12-25"}, "quiet_dates", "must be a list"),
    ({"colour": "blue"}, "colour", "not a policy field"),
    ([{"start": "08:00"}], "policy", "must be a JSON object"),
]


@pytest.mark.parametrize(("doc", "field", "phrase"), BAD_DOCS)
def test_a_bad_field_gets_one_clear_sentence_naming_it(doc, field, phrase):
    with pytest.raises(PolicyError) as refused:
        parse_policy(doc)
    assert (refused.value.field, len(refused.value.problems)) == (field, 1)
    assert phrase in refused.value.problem
    assert str(refused.value) == f"{field}: {refused.value.problem}"
    assert "\n" not in str(refused.value)


def test_every_bad_field_is_named_at_once():
    doc = {
        "time_zone": "Nowhere",
        "windows": [{"start": "x", "end": "y"}],
        "day_rates": {"sun": -2},
    }
    with pytest.raises(PolicyError) as refused:
        parse_policy(doc)
    fields = [field for field, _ in refused.value.problems]
    assert sorted(fields) == ["day_rates.sun", "time_zone", "windows[0].end", "windows[0].start"]
    assert str(refused.value).count("; ") == 3


def test_validation_checks_a_one_sided_override_against_the_service_intervals():
    p = SchedulePolicy(min_interval_hours=8)
    validate_policy(p, "UTC")  # nothing to compare with
    with pytest.raises(
        PolicyError, match=r"^min_interval_hours: .*\(8 h\) exceed the maximum \(6 h\)"
    ):
        validate_policy(p, "UTC", default_min_h=2, default_max_h=6)
    assert interval_hours(p, 2, 6) == (8, 6)
    assert interval_hours(DEFAULT, 2, 6) == (2, 6)


def test_an_empty_zone_is_the_service_zone_which_must_be_known():
    validate_policy(DEFAULT, "Asia/Shanghai")
    validate_policy(SchedulePolicy(time_zone="UTC"), "Not/AZone")  # the policy's own is used
    with pytest.raises(PolicyError, match=r"^time_zone: is empty, so the service zone"):
        validate_policy(DEFAULT, "Not/AZone")
    assert policy_zone(DEFAULT, SHANGHAI) is SHANGHAI
    assert policy_zone(SchedulePolicy(time_zone="America/New_York"), SHANGHAI) == NEW_YORK
    with pytest.raises(PolicyError, match=r"^time_zone: 'Not/AZone' is not a known"):
        policy_zone(SchedulePolicy(time_zone="Not/AZone"), SHANGHAI)


# --- summary ----------------------------------------------------------------------------------
SUMMARIES = [
    (DEFAULT, "always active"),
    (
        SchedulePolicy(
            time_zone="Asia/Shanghai",
            windows=(window("08:00", "23:00"),),
            day_rates=rates(sat=2, sun=2),
        ),
        "Asia/Shanghai 08:00-23:00, Mon-Fri x1, Sat-Sun x2",
    ),
    (
        SchedulePolicy(
            time_zone="Europe/London",
            windows=(window("07:00", "09:00", *WEEKDAYS), window("10:00", "23:30", SAT, SUN)),
            min_interval_hours=1,
            max_interval_hours=3,
            quiet_dates=(CHRISTMAS,),
        ),
        "Europe/London 07:00-09:00 Mon-Fri + 10:00-23:30 Sat-Sun, every 1-3 h, quiet on 2026-12-25",
    ),
    (
        SchedulePolicy(
            windows=(window("22:00:30", "02:00", MON, WED, THU),), day_rates=rates(sun=0)
        ),
        "22:00:30-02:00 Mon,Wed-Thu, Mon-Sat x1, Sun x0",
    ),
    (
        SchedulePolicy(
            min_interval_hours=0.5, quiet_dates=(date(2026, 12, 31), NEW_YEAR, CHRISTMAS)
        ),
        "always active, every 0.5 h or more, 3 quiet dates 2026-12-25..2027-01-01",
    ),
    (
        SchedulePolicy(time_zone="UTC", max_interval_hours=12),
        "UTC always active, every 12 h or less",
    ),
]


@pytest.mark.parametrize(("p", "text"), SUMMARIES)
def test_the_summary_reads_as_one_line(p, text):
    assert summary(p) == text
