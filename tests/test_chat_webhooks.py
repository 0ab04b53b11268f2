"""DingTalk, Feishu and WeCom robots: signing, answers, masking, pacing, against loopback fakes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fake_chats import FakeRobot
from hypothesis import given
from hypothesis import strategies as st

from bot.chat_formats import (
    WECOM_MARKDOWN_MAX_BYTES,
    clip_utf8,
    dingtalk_markdown,
    feishu_card,
    utf8_len,
    wecom_markdown,
)
from bot.chat_webhooks import (
    ChatWebhookNotifier,
    Outcome,
    classify_answer,
    dingtalk_sign,
    dingtalk_signed_url,
    feishu_sign,
    mask_url,
)
from bot.destinations import ChatKind
from bot.errors import DeliveryPaced, DeliveryRefused, DeliveryRetryable
from bot.pacing import Pacer, RateLimit

SECRET = "SECabcdef0123456789-very-secret"
TOKEN = "tok9f8e7d6c5b4a39281706f5e4d3c2b1a0"


# --- signing: vectors computed with openssl, not with this code ------------------------------
# printf '1577262236757\nSEC1234567890abcdef' | openssl dgst -sha256 -hmac SEC1234567890abcdef
#   -binary | base64
# printf '' | openssl dgst -sha256 -mac HMAC -macopt "key:1756800000<LF>orbit-test-secret"
#   -binary | base64


def test_dingtalk_sign_vector() -> None:
    assert (
        dingtalk_sign("SEC1234567890abcdef", 1577262236757)
        == "f7qQ1A8KagEZ45y1gasTtKsEq5ERTeDXP9T+WkIqzDk="
    )


def test_feishu_sign_vector() -> None:
    assert (
        feishu_sign("orbit-test-secret", 1756800000)
        == "sN+9ZKa5w6BQmKyxCaxNA1DWEgtEnZaOcfEOCqZ26fg="
    )


def test_dingtalk_signed_url_encodes_the_signature() -> None:
    url = dingtalk_signed_url(
        "https://oapi.dingtalk.com/robot/send?access_token=abc",
        "SEC1234567890abcdef",
        1577262236757,
    )
    assert url == (
        "https://oapi.dingtalk.com/robot/send?access_token=abc&timestamp=1577262236757"
        "&sign=f7qQ1A8KagEZ45y1gasTtKsEq5ERTeDXP9T%2BWkIqzDk%3D"
    )


# --- masking ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}",
            "https://oapi.dingtalk.com/robot/send?access_token=***",
        ),
        (
            f"https://open.feishu.cn/open-apis/bot/v2/hook/{TOKEN}",
            "https://open.feishu.cn/open-apis/bot/v2/hook/***",
        ),
        (
            "https://open.larksuite.com/open-apis/bot/v2/hook/short",
            "https://open.larksuite.com/open-apis/bot/v2/hook/***",
        ),
        (
            f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={TOKEN}&debug=1",
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***&debug=***",
        ),
        ("https://user:pw@example.com:8443/x", "https://***@example.com:8443/x"),
        (f"https://example.com/{TOKEN}/send", "https://example.com/***/send"),
        ("not a url", "<unparsable URL>"),
        ("http://[::1/x", "<unparsable URL>"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=8, max_size=64))
def test_mask_url_never_shows_the_credential(token: str) -> None:
    for url in (
        f"https://oapi.dingtalk.com/robot/send?access_token={token}",
        f"https://open.feishu.cn/open-apis/bot/v2/hook/{token}",
        f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={token}",
    ):
        # Only the credential must go: a token that happens to spell part of the address
        # ("dingtalk") is still shown as that part.
        assert token not in mask_url(url).replace(url[: url.rindex(token)], "")


# --- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "body", "outcome"),
    [
        (ChatKind.DINGTALK, 200, {"errcode": 0, "errmsg": "ok"}, Outcome.OK),
        (
            ChatKind.DINGTALK,
            200,
            {"errcode": 130101, "errmsg": "send too fast"},
            Outcome.RATE_LIMITED,
        ),
        (ChatKind.DINGTALK, 200, {"errcode": 310000, "errmsg": "sign not match"}, Outcome.REFUSED),
        (
            ChatKind.DINGTALK,
            200,
            {"errcode": 310000, "errmsg": "keywords not in content"},
            Outcome.REFUSED,
        ),
        (
            ChatKind.DINGTALK,
            200,
            {"errcode": 300001, "errmsg": "token is not exist"},
            Outcome.REFUSED,
        ),
        (ChatKind.DINGTALK, 200, {"errcode": -1, "errmsg": "system busy"}, Outcome.TRANSIENT),
        (ChatKind.WECOM, 200, {"errcode": 0, "errmsg": "ok"}, Outcome.OK),
        (
            ChatKind.WECOM,
            200,
            {"errcode": 45009, "errmsg": "api freq out of limit"},
            Outcome.RATE_LIMITED,
        ),
        (ChatKind.WECOM, 200, {"errcode": 93000, "errmsg": "invalid webhook url"}, Outcome.REFUSED),
        (ChatKind.WECOM, 200, {"errcode": "45009"}, Outcome.RATE_LIMITED),
        (ChatKind.FEISHU, 200, {"code": 0, "msg": "success"}, Outcome.OK),
        (ChatKind.FEISHU, 200, {"StatusCode": 0, "StatusMessage": "success"}, Outcome.OK),
        (
            ChatKind.FEISHU,
            200,
            {"code": 11232, "msg": "frequency limited psm"},
            Outcome.RATE_LIMITED,
        ),
        (ChatKind.FEISHU, 200, {"code": 9499, "msg": "too many request"}, Outcome.RATE_LIMITED),
        (ChatKind.FEISHU, 400, {"code": 9499, "msg": "Bad Request"}, Outcome.TRANSIENT),
        (ChatKind.FEISHU, 200, {"code": 19021, "msg": "sign match fail"}, Outcome.REFUSED),
        (ChatKind.FEISHU, 200, {"code": 19024, "msg": "Key Words Not Found"}, Outcome.REFUSED),
        (ChatKind.FEISHU, 200, {"code": 19001, "msg": "token invalid"}, Outcome.REFUSED),
        # the errcode of another robot is not read as this one's
        (ChatKind.FEISHU, 200, {"errcode": 0}, Outcome.TRANSIENT),
        (ChatKind.WECOM, 429, None, Outcome.RATE_LIMITED),
        (ChatKind.WECOM, 502, None, Outcome.TRANSIENT),
        (ChatKind.WECOM, 404, None, Outcome.REFUSED),
        (ChatKind.DINGTALK, 200, None, Outcome.TRANSIENT),
        (ChatKind.DINGTALK, 200, ["errcode", 0], Outcome.TRANSIENT),
        (ChatKind.DINGTALK, 200, {"errcode": True}, Outcome.TRANSIENT),
        (ChatKind.DINGTALK, 500, {"errcode": 0}, Outcome.TRANSIENT),
    ],
)
def test_classify_answer(kind: ChatKind, status: int, body: Any, outcome: Outcome) -> None:
    assert classify_answer(kind, status, body).outcome is outcome


# --- formats ---------------------------------------------------------------------------------


@given(st.text(max_size=3000), st.integers(min_value=1, max_value=5000))
def test_clip_utf8_fits_and_keeps_a_prefix(text: str, limit: int) -> None:
    clipped = clip_utf8(text, limit)
    assert utf8_len(clipped) <= limit
    if utf8_len(text) <= limit:
        assert clipped == text
    else:
        assert text.startswith(clipped.removesuffix("\n…").rstrip())


def test_wecom_markdown_is_clipped_to_4096_bytes() -> None:
    text = "\n".join(f"余额不足 {i:04d} 条" for i in range(1000))
    content = wecom_markdown(text)["markdown"]["content"]
    assert utf8_len(content) <= WECOM_MARKDOWN_MAX_BYTES
    assert content.endswith("\n…")


# --- pacing ----------------------------------------------------------------------------------


@given(
    st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), min_size=1, max_size=80),
    st.sampled_from([(RateLimit(20, 60.0),), (RateLimit(100, 60.0), RateLimit(5, 1.0))]),
)
def test_pacer_never_exceeds_any_limit(gaps: list[float], limits: tuple[RateLimit, ...]) -> None:
    now = [0.0]
    pacer = Pacer(limits, clock=lambda: now[0])
    sent: list[float] = []
    for gap in gaps:
        now[0] += gap
        now[0] += pacer.delay()
        assert pacer.delay() == 0
        pacer._sent.append(now[0])
        sent.append(now[0])
    for limit in limits:
        for i, start in enumerate(sent):
            within = [t for t in sent[i:] if t < start + limit.per]
            assert len(within) <= limit.count


async def test_pacer_waits_in_order_and_hands_back_long_waits() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer((RateLimit(2, 10.0),), clock=lambda: now[0], sleep=sleep)
    await pacer.acquire(max_wait=60)
    await pacer.acquire(max_wait=60)
    await pacer.acquire(max_wait=60)  # waits for the first two to leave the window
    await pacer.acquire(max_wait=60)
    assert slept == [10.0]
    assert now[0] == 10.0
    with pytest.raises(DeliveryPaced) as caught:
        await pacer.acquire(max_wait=1)
    assert caught.value.retry_after == pytest.approx(10.0)
    pacer.hold(100)
    assert pacer.delay() == pytest.approx(100)


# --- against the fakes -----------------------------------------------------------------------


@pytest.fixture
async def robots() -> AsyncIterator[list[FakeRobot]]:
    started: list[FakeRobot] = []
    yield started
    for robot in started:
        await robot.stop()


async def _robot(robots: list[FakeRobot], kind: str, **kwargs: Any) -> FakeRobot:
    robot = FakeRobot(kind, token=TOKEN, **kwargs)
    await robot.start()
    robots.append(robot)
    return robot


def _payload(kind: ChatKind, text: str = "SMS balance low") -> dict[str, Any]:
    if kind is ChatKind.DINGTALK:
        return dingtalk_markdown("SMS balance", text)
    if kind is ChatKind.FEISHU:
        return feishu_card("SMS balance", text, "warning")
    return wecom_markdown(text)


@pytest.mark.parametrize("kind", list(ChatKind))
@pytest.mark.parametrize("signed", [True, False])
async def test_delivers_to_each_robot(
    robots: list[FakeRobot], kind: ChatKind, signed: bool
) -> None:
    secret = SECRET if signed and kind is not ChatKind.WECOM else None
    robot = await _robot(robots, kind.value, secret=secret)
    notifier = ChatWebhookNotifier(kind, robot.url, secret=secret)
    try:
        await notifier.send(_payload(kind, "SMS 余额 low: shop 800"))
    finally:
        await notifier.close()
    assert robot.codes() == [0]
    assert "SMS 余额 low: shop 800" in robot.posts[0].text


@pytest.mark.parametrize("kind", [ChatKind.DINGTALK, ChatKind.FEISHU])
@pytest.mark.parametrize("problem", ["wrong secret", "no secret", "clock 2 h off"])
async def test_bad_signature_is_a_configuration_error(
    robots: list[FakeRobot], kind: ChatKind, problem: str
) -> None:
    robot = await _robot(robots, kind.value, secret=SECRET)
    secret = {"wrong secret": "SECwrong", "no secret": None, "clock 2 h off": SECRET}[problem]
    skew = 7200.0 if problem == "clock 2 h off" else 0.0
    notifier = ChatWebhookNotifier(
        kind, robot.url, secret=secret, wall_clock=lambda: time.time() - skew
    )
    try:
        with pytest.raises(DeliveryRefused) as caught:
            await notifier.send(_payload(kind))
    finally:
        await notifier.close()
    text = str(caught.value) + caught.value.reason
    assert SECRET not in text and TOKEN not in text
    assert ("DINGTALK_SECRET" if kind is ChatKind.DINGTALK else "FEISHU_SECRET") in text


@pytest.mark.parametrize("kind", list(ChatKind))
async def test_wrong_token_is_a_configuration_error(
    robots: list[FakeRobot], kind: ChatKind
) -> None:
    robot = await _robot(robots, kind.value)
    url = robot.url.replace(TOKEN, "tok-not-the-right-one-0000000000")
    notifier = ChatWebhookNotifier(kind, url)
    try:
        with pytest.raises(DeliveryRefused) as caught:
            await notifier.send(_payload(kind))
    finally:
        await notifier.close()
    assert "tok-not-the-right-one" not in str(caught.value)


@pytest.mark.parametrize("kind", [ChatKind.DINGTALK, ChatKind.FEISHU])
async def test_missing_keyword_is_a_configuration_error(
    robots: list[FakeRobot], kind: ChatKind
) -> None:
    robot = await _robot(robots, kind.value, keyword="JPush")
    notifier = ChatWebhookNotifier(kind, robot.url)
    try:
        with pytest.raises(DeliveryRefused):
            await notifier.send(_payload(kind, "no key word here"))
        await notifier.send(_payload(kind, "JPush SMS balance low"))
    finally:
        await notifier.close()
    assert len(robot.accepted()) == 1


@pytest.mark.parametrize("kind", list(ChatKind))
async def test_rate_limit_answer_holds_the_destination(
    robots: list[FakeRobot], kind: ChatKind
) -> None:
    robot = await _robot(robots, kind.value)
    code = {"dingtalk": 130101, "feishu": 11232, "wecom": 45009}[kind.value]
    robot.answer_next(code)
    notifier = ChatWebhookNotifier(kind, robot.url, rate_limited_retry=30.0)
    try:
        with pytest.raises(DeliveryRetryable) as caught:
            await notifier.send(_payload(kind))
        assert not isinstance(caught.value, DeliveryPaced)
        assert caught.value.retry_after == 30.0
        assert notifier.seconds_until_ready() == pytest.approx(30.0, abs=1.0)
        # The next attempt is not even made while the robot asked us to wait.
        with pytest.raises(DeliveryPaced):
            await notifier.send(_payload(kind))
    finally:
        await notifier.close()
    assert robot.codes() == [code]


async def test_unreachable_robot_is_transient_and_says_nothing_secret() -> None:
    url = f"http://127.0.0.1:9/robot/send?access_token={TOKEN}"
    notifier = ChatWebhookNotifier(ChatKind.DINGTALK, url, secret=SECRET, timeout=5)
    try:
        with pytest.raises(DeliveryRetryable) as caught:
            await notifier.send(_payload(ChatKind.DINGTALK))
    finally:
        await notifier.close()
    assert TOKEN not in str(caught.value) and SECRET not in str(caught.value)
    assert notifier.display_url == "http://127.0.0.1:9/robot/send?access_token=***"


async def test_long_text_still_reaches_wecom(robots: list[FakeRobot]) -> None:
    robot = await _robot(robots, "wecom")
    notifier = ChatWebhookNotifier(ChatKind.WECOM, robot.url)
    try:
        await notifier.send(wecom_markdown("短信余额\n" * 2000))
    finally:
        await notifier.close()
    assert robot.codes() == [0]
