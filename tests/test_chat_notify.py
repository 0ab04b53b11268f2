"""The chat robots built from settings: each renders a cycle in its format and language."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
from fake_chats import FakeRobot
from test_messages import NOW, realistic_cycle

from bot.chat_notify import make_chat_destinations
from bot.destinations import ChatKind
from bot.render.format import Locale
from bot.settings import load_settings

SECRET = "SECchat-notify-0123456789"


@pytest.fixture
async def robots() -> AsyncIterator[dict[str, FakeRobot]]:
    made = {
        "dingtalk": FakeRobot("dingtalk", secret=SECRET),
        "feishu": FakeRobot("feishu", secret=SECRET + "f"),
        "wecom": FakeRobot("wecom"),
    }
    for robot in made.values():
        await robot.start()
    yield made
    for robot in made.values():
        await robot.stop()


def test_nothing_configured_means_no_chat_destination() -> None:
    settings = load_settings(
        None, jpush_apps=json.dumps([{"name": "a", "app_key": "k", "master_secret": "m"}])
    )
    assert make_chat_destinations(settings) == []


async def test_each_configured_robot_gets_the_cycle_in_its_language(
    robots: dict[str, FakeRobot],
) -> None:
    settings = load_settings(
        None,
        jpush_apps=json.dumps([{"name": "a", "app_key": "k", "master_secret": "m"}]),
        dingtalk_webhook_url=robots["dingtalk"].url,
        dingtalk_secret=SECRET,
        feishu_webhook_url=robots["feishu"].url,
        feishu_secret=SECRET + "f",
        wecom_webhook_url=robots["wecom"].url,
    )
    loc = Locale.of("zh-CN", ZoneInfo("Asia/Shanghai"))
    destinations = make_chat_destinations(settings, loc)
    assert [d.kind for d in destinations] == list(ChatKind)
    for destination in destinations:
        assert SECRET not in destination.display_url
        assert robots[destination.name].token not in destination.display_url
        try:
            await destination.send_events(realistic_cycle(), NOW)
        finally:
            await destination.close()
    for robot in robots.values():
        assert robot.codes() == [0]
        assert "短信余量严重不足" in robot.posts[0].text
        assert "全类型" in robot.posts[0].text
