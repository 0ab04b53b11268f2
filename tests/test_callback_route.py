"""GET/POST /jpush/callback over a real aiohttp server, with an intake that records calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from bot.callback_route import CallbackRoute
from bot.delivery_reports import MAX_BODY, CallbackApp, DeliveryReport, Signer, signature_for
from bot.errors import StoreError

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
TS = str(int(NOW.timestamp() * 1000))
SHOP = CallbackApp("shop", "shop-key", "shop-secret")
REPORT_4005 = {"msgId": "1", "status": 4005, "receiveTime": 1, "phone": "13800138000"}


class Intake:
    def __init__(self) -> None:
        self.reports: list[DeliveryReport] = []
        self.seen: set[str] = set()
        self.fail: Exception | None = None

    async def accept(self, report: DeliveryReport) -> bool:
        if self.fail is not None:
            raise self.fail
        self.reports.append(report)
        fresh = report.replay_key not in self.seen
        self.seen.add(report.replay_key)
        return fresh


class Refusals:
    def __init__(self) -> None:
        self.statuses: list[int] = []

    def callback_refused(self, status: int) -> None:
        self.statuses.append(status)


Client = TestClient[web.Request, web.Application]


@pytest.fixture
def intake() -> Intake:
    return Intake()


@pytest.fixture
def refusals() -> Refusals:
    return Refusals()


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, intake: Intake, refusals: Refusals) -> Client:
    app = web.Application(client_max_size=MAX_BODY)
    CallbackRoute(Signer([SHOP]), intake, lambda: NOW, refusals).add_to(app)
    return await aiohttp_client(app)


def signed(
    *, nonce: str = "42", timestamp: str = TS, secret: str = "shop-secret", **extra: str
) -> dict[str, str]:
    fields = {
        "nonce": nonce,
        "timestamp": timestamp,
        "signature": signature_for("shop-key", secret, nonce, timestamp),
        "type": "SMS_REPORT",
        "data": json.dumps(
            {"msgId": "1", "status": 4005, "receiveTime": 1, "phone": "13800138000"}
        ),
    }
    fields.update(extra)
    return fields


@pytest.mark.parametrize(
    ("query", "status", "body"),
    [
        ("?echostr=a1B2c3D4", 200, "a1B2c3D4"),
        ("?echostr=" + "z" * 64, 200, "z" * 64),
        ("?echostr=" + "z" * 65, 400, None),
        ("?echostr=", 400, None),
        ("", 400, None),
        ("?echostr=%3Cscript%3E", 400, None),
        ("?echostr=a%20b", 400, None),
        ("?echostr=%FF", 400, None),
    ],
)
async def test_address_check(client: Client, query: str, status: int, body: str | None) -> None:
    response = await client.get(f"/jpush/callback{query}")
    assert response.status == status
    assert response.content_type == "text/plain"
    if body is not None:
        assert await response.text() == body


async def test_signed_report_reaches_the_intake_once(client: Client, intake: Intake) -> None:
    response = await client.post("/jpush/callback", data=signed())
    assert (response.status, await response.text()) == (200, "ok")
    again = await client.post("/jpush/callback", data=signed())
    assert (again.status, await again.text()) == (200, "ok (seen before)")
    assert [(r.scope, r.status, r.phone_tail) for r in intake.reports] == [
        ("shop", 4005, "8000"),
        ("shop", 4005, "8000"),
    ]


OLD = str(int((NOW - timedelta(hours=25)).timestamp() * 1000))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (urlencode(signed(signature="0" * 40)), 401),
        (urlencode(signed(secret="wrong")), 401),
        (urlencode(signed(timestamp=OLD)), 401),
        (urlencode(signed(data="not json")), 400),
        (urlencode(signed(timestamp="soon")), 400),
        (urlencode({k: v for k, v in signed().items() if k != "data"}), 400),
        (urlencode({k: v for k, v in signed().items() if k != "nonce"}), 400),
        (urlencode(signed()).replace("type=SMS_REPORT", "type=%FF"), 400),
        ("", 400),
        ("a" * (MAX_BODY + 1), 413),
    ],
)
async def test_bad_requests_never_reach_the_intake(
    client: Client, intake: Intake, refusals: Refusals, body: str, status: int
) -> None:
    response = await client.post(
        "/jpush/callback",
        data=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == status
    assert intake.reports == []
    assert refusals.statuses == [status]


async def test_oversized_body_without_content_length_is_413(client: Client, intake: Intake) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b"x" * 1024

    response = await client.post("/jpush/callback", data=chunks())
    assert response.status == 413
    assert intake.reports == []


@pytest.mark.parametrize("failure", [StoreError("redis down"), TimeoutError(), RuntimeError("bug")])
async def test_intake_failure_is_503_never_500(
    client: Client, intake: Intake, failure: Exception
) -> None:
    intake.fail = failure
    response = await client.post("/jpush/callback", data=signed())
    assert response.status == 503


async def test_other_methods_are_405(client: Client) -> None:
    response = await client.put("/jpush/callback", data=signed())
    assert response.status == 405


async def test_refusals_are_logged_once_per_second_per_reason(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(5):
        await client.post("/jpush/callback", data=signed(signature="1" * 40))
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1
    assert "13800138000" not in caplog.text
