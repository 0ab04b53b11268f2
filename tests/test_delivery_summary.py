"""The slash reply's line about the last hour's JPush delivery reports (pure), and the counts
behind it read from the state store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from builders import NOW
from pydantic import SecretStr

from bot.commands import Command
from bot.quota import Scope, ScopeKind
from bot.render.format import block_texts
from bot.render.slash import delivery_summary, render_reply
from bot.store.sqlite import SqliteStore
from bot.views import load_views


@pytest.mark.parametrize(
    ("counts", "line"),
    [
        ({}, None),
        ({"reply": 4, "unknown_type": 1}, None),
        ({"4001": 0}, None),
        (
            {"4001": 1204, "4005": 3},
            "deliveries, last hour: delivered 1,204 · quota exhausted 3 · rate-limited 0",
        ),
        (
            {"4006": 2},
            "deliveries, last hour: delivered 0 · quota exhausted 0 · rate-limited 2",
        ),
        (
            {"4001": 5, "4002": 1, "4004": 2, "4100": 1, "4009": 2, "other": 1, "reply": 9},
            "deliveries, last hour: delivered 5 · quota exhausted 0 · rate-limited 0"
            " · blacklisted 1 · empty number 2 · other 4",
        ),
    ],
)
def test_delivery_summary(counts: dict[str, int], line: str | None) -> None:
    assert delivery_summary(counts) == line


async def test_an_apps_reply_counts_the_last_hours_reports_from_the_store() -> None:
    store = SqliteStore(":memory:")
    await store.open()
    shop = Scope("shop", ScopeKind.APP, "shop-key", SecretStr("s"))
    account = Scope("account", ScopeKind.ACCOUNT, "dev", SecretStr("d"))
    for i, (status, ago) in enumerate(
        [("4001", 5), ("4001", 50), ("4005", 10), ("4001", 70), ("reply", 1)]
    ):
        at = NOW - timedelta(minutes=ago)
        assert await store.record_report(f"k{i}", NOW + timedelta(hours=24), "shop", status, at)
    views = await load_views(store, [account, shop], NOW, trend_for="shop")
    by_scope = {v.scope: v for v in views}
    assert by_scope["shop"].deliveries == {"4001": 2, "4005": 1, "reply": 1}
    assert by_scope["account"].deliveries == {}
    reply = render_reply(Command("show", scope="shop"), views, NOW)
    assert "delivered 2 · quota exhausted 1 · rate-limited 0" in block_texts(reply["blocks"])
    everything = render_reply(Command("show"), views, NOW)
    assert "delivered" not in block_texts(everything["blocks"])
