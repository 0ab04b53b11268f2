"""The log filters as functions: what is masked, and how a flood is counted."""

from __future__ import annotations

import logging

import pytest

from bot.log_hygiene import ClientErrorFilter, LogThrottle, SecretMask, mask_text


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("token xoxb-123-456-abcDEF here", "123-456-abcDEF", "here"),
        ("app token xapp-1-A0-99-ff", "A0-99-ff", "app token"),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi", "Authorization"),
        ("Authorization: Basic a2V5OnNlY3JldA==", "a2V5OnNlY3JldA==", "Basic"),
        ("url: https://hooks.slack.com/services/T0/B0/XyZ, body", "T0/B0/XyZ", "body"),
        ("https://hooks.slack.com/commands/T0/123/abc", "123/abc", "hooks.slack.com"),
        ("https://oapi.dingtalk.com/robot/send?access_token=deadbeef&x=1", "deadbeef", "x=1"),
        ("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abcd-1234", "abcd-1234", "send"),
        ("form response_url=https%3A%2F%2Fexample%2Fr%2Fsecret", "secret", "form"),
    ],
)
def test_credential_shapes_are_masked(text: str, hidden: str, kept: str) -> None:
    masked = mask_text(text)
    assert hidden not in masked
    assert kept in masked


def test_configured_secrets_and_library_url_paths_are_masked() -> None:
    assert mask_text("pw is s3cr3t-value!", ["s3cr3t-value"]) == "pw is ***!"
    assert mask_text("POST http://127.0.0.1:81/response/T/abc", urls=True) == (
        "POST http://127.0.0.1:81/***"
    )
    assert mask_text("POST http://127.0.0.1:81/response/T/abc") == (
        "POST http://127.0.0.1:81/response/T/abc"
    )


def _record(name: str, msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": name, "msg": msg, "args": args, "levelno": 10})
    record.__dict__.update(extra)
    return record


def test_secret_mask_rewrites_message_args_and_extras() -> None:
    mask = SecretMask(["hunter2-secret"])
    record = _record("slack_sdk.webhook", "Sending to %s", "https://x.example/T/B/path", error="x")
    assert mask.filter(record)
    assert record.getMessage() == "Sending to https://x.example/***"
    other = _record("bot.delivery", "failed", error="auth hunter2-secret refused")
    mask.filter(other)
    assert other.error == "auth *** refused"


def test_throttle_allows_one_line_per_window_and_counts_the_rest() -> None:
    now = [0.0]
    throttle = LogThrottle(every=1.0, monotonic=lambda: now[0])
    lines: list[int] = []
    for _ in range(50):
        throttle.log("unsigned", lines.append)
    throttle.log("stale", lines.append)
    assert lines == [1, 1]
    now[0] = 1.5
    throttle.log("unsigned", lines.append)
    assert lines == [1, 1, 50]  # this one and the 49 it stood for


def test_client_faults_from_aiohttp_become_one_warning_without_traceback() -> None:
    from aiohttp.http_exceptions import LineTooLong

    flt = ClientErrorFilter(LogThrottle(monotonic=lambda: 0.0))

    def record() -> logging.LogRecord:
        try:
            raise LineTooLong(b"x" * 50, "8190")
        except LineTooLong:
            import sys

            rec = _record("aiohttp.server", "Error handling request from %s", "127.0.0.1")
            rec.levelno, rec.exc_info = logging.ERROR, sys.exc_info()
            return rec

    first = record()
    assert flt.filter(first)
    assert first.levelno == logging.WARNING and first.exc_info is None
    assert "LineTooLong" in first.getMessage()
    assert not flt.filter(record())  # the same kind within the second
    crash = _record("aiohttp.server", "Error handling request")
    try:
        raise KeyError("a bug")
    except KeyError:
        import sys

        crash.exc_info = sys.exc_info()
    assert flt.filter(crash) and crash.exc_info is not None  # a real bug keeps its traceback
