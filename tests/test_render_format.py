"""Shared formatting: errors shown once and bounded, time zones, the language tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.forecast import Forecast
from bot.quota import FetchError, QuotaType, ScopeKind, Status
from bot.render.format import (
    MAX_CODE_TEXT,
    MAX_ERROR_TEXT,
    Locale,
    escape_markdown,
    fmt_clock,
    fmt_error,
    fmt_when,
    runs_out,
    runs_out_cell,
)
from bot.render.lang import LANGUAGES, lang_for
from bot.render.tones import TONES, Tone

NOW = datetime(2026, 11, 26, 9, 44, tzinfo=UTC)  # a Thursday


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (FetchError(50019, "server error"), "server error (50019)"),
        # what the JPush client says: the code is in the message already, so it is not repeated
        (FetchError(50019, "JPush server error (50019)"), "JPush server error (50019)"),
        (FetchError(50002, "auth failed (50002)", config=True), "auth failed (50002)"),
        (FetchError(404, "request rejected: HTTP 404"), "request rejected: HTTP 404"),
        (
            FetchError(50123, "JPush server error: HTTP 500, code 50123: boom"),
            "JPush server error: HTTP 500, code 50123: boom",
        ),
        # a code that only appears inside a longer number is still shown
        (FetchError(500, "JPush server error (50019)"), "JPush server error (50019) (500)"),
        (FetchError(None, "network error: connection reset"), "network error: connection reset"),
        (FetchError(None, "  \n "), "unknown error"),
        (FetchError(7, "two\nlines\tand  tabs"), "two lines and tabs (7)"),
    ],
)
def test_fmt_error_shows_the_code_once(error: FetchError, expected: str) -> None:
    assert fmt_error(error) == expected


@given(st.text(max_size=2000), st.one_of(st.none(), st.integers()))
def test_fmt_error_is_one_bounded_line(message: str, code: int | None) -> None:
    text = fmt_error(FetchError(code, message))
    assert "\n" not in text
    assert len(text) <= MAX_ERROR_TEXT + len(" ()") + MAX_CODE_TEXT
    if code is not None:
        assert text.count(str(code)[: MAX_CODE_TEXT - 1]) >= 1


def test_a_huge_code_is_clipped() -> None:
    text = fmt_error(FetchError(10**40, "boom"))
    assert text.startswith("boom (1")
    assert len(text) == len("boom ()") + MAX_CODE_TEXT


def test_times_follow_the_locale_time_zone() -> None:
    shanghai = Locale(tz=timezone(timedelta(hours=8), "CST"))
    assert fmt_when(NOW, NOW, shanghai) == "Thu 17:44 CST"
    assert fmt_when(NOW + timedelta(days=30), NOW, shanghai) == "2026-12-26 17:44 CST"
    assert fmt_clock(NOW, shanghai) == "17:44 CST"
    # the weekday is the local one: 20:00 UTC Thursday is Friday in Shanghai
    assert fmt_when(NOW.replace(hour=20), NOW, shanghai) == "Fri 04:44 CST"


def test_runs_out_has_one_phrasing() -> None:
    forecast = Forecast(per_hour=50.0, empty_at=NOW + timedelta(days=2))
    assert runs_out(forecast, NOW) == "runs out in about 2 days (Sat 09:44 UTC), burning 1,200/day"
    assert runs_out_cell(forecast, NOW) == "about 2 days (Sat 09:44 UTC)"


def test_every_language_table_is_complete() -> None:
    for code, lang in LANGUAGES.items():
        assert lang.code == code
        assert set(lang.type_label) == set(lang.type_name) == set(QuotaType)
        assert set(lang.status_word) == set(Status)
        assert set(lang.scope_kind) == set(ScopeKind)
        for table in (lang.tone_tag, lang.tone_count, lang.tone_header):
            assert set(table) == set(Tone)
    assert set(TONES) == set(Tone)


def test_an_unknown_language_is_a_clear_error() -> None:
    assert lang_for("en").code == "en"
    with pytest.raises(ValueError, match="unknown message language 'xx'"):
        Locale.of("xx")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("shop", "shop"),
        ("my_app", "my\\_app"),
        ("[click](http://evil)", "\\[click\\](http://evil)"),
        ("**bold** `code` # <b>", "\\*\\*bold\\*\\* \\`code\\` \\# \\<b\\>"),
        ("a\\b", "a\\\\b"),
    ],
)
def test_escape_markdown(raw: str, expected: str) -> None:
    assert escape_markdown(raw) == expected
