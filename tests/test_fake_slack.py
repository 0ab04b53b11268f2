"""The fake Slack Web API behaves like Slack for the calls the bot makes (via slack-sdk itself)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from fake_slack import Answer, FakeSlack
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

META = {"event_type": "sms_balance_alert", "event_payload": {"message_id": "m1", "scope": "shop"}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    slack = FakeSlack()
    await slack.start()
    yield slack
    await slack.stop()


def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=f"{fake.url}/api/", timeout=5)


async def test_threads_broadcasts_and_updates(fake: FakeSlack) -> None:
    web = client(fake)
    root = await web.chat_postMessage(channel="C1", text="root", metadata=META)
    reply = await web.chat_postMessage(
        channel="C1", text="quiet", thread_ts=root["ts"], metadata=META
    )
    loud = await web.chat_postMessage(
        channel="C1", text="loud", thread_ts=root["ts"], reply_broadcast=True
    )
    assert root["ts"] < reply["ts"] < loud["ts"]
    await web.chat_update(channel="C1", ts=root["ts"], text="root, updated")
    (shown,) = fake.roots("C1")
    assert shown.text == "root, updated" and shown.edits == 1
    assert [m.text for m in fake.channel("C1")] == ["root, updated", "loud"]
    assert [m.text for m in fake.thread(shown)] == ["quiet", "loud"]
    assert shown.metadata == META
    with pytest.raises(SlackApiError) as err:
        await web.chat_update(channel="C1", ts="999.000001", text="x")
    assert err.value.response["error"] == "message_not_found"
    with pytest.raises(SlackApiError) as err:
        await web.chat_postMessage(channel="C1", text="x", thread_ts="999.000001")
    assert err.value.response["error"] == "thread_not_found"


async def test_history_and_replies_with_metadata(fake: FakeSlack) -> None:
    web = client(fake)
    first = await web.chat_postMessage(channel="C1", text="first", metadata=META)
    second = await web.chat_postMessage(channel="C1", text="second")
    await web.chat_postMessage(channel="C2", text="elsewhere")
    reply = await web.chat_postMessage(
        channel="C1", text="in thread", thread_ts=first["ts"], metadata=META
    )
    history = await web.conversations_history(channel="C1", include_all_metadata=True)
    assert [m["text"] for m in history["messages"]] == ["second", "first"]
    assert history["messages"][1]["metadata"] == META
    plain = await web.conversations_history(channel="C1")
    assert all("metadata" not in m for m in plain["messages"])
    newer = await web.conversations_history(channel="C1", oldest=first["ts"])
    assert [m["ts"] for m in newer["messages"]] == [second["ts"]]
    replies = await web.conversations_replies(
        channel="C1", ts=first["ts"], include_all_metadata=True, oldest=first["ts"]
    )
    assert [m["ts"] for m in replies["messages"]] == [first["ts"], reply["ts"]]
    assert replies["messages"][1]["metadata"] == META


async def test_lost_answer_keeps_the_message(fake: FakeSlack) -> None:
    fake.answer_next(Answer(lose_answer=True))
    # No SDK retry: its default one re-posts after a cut connection, which is the duplicate
    # the bot's look-up exists to avoid.
    web = AsyncWebClient(
        token="xoxb-test", base_url=f"{fake.url}/api/", timeout=5, retry_handlers=[]
    )
    with pytest.raises(aiohttp.ClientError):
        await web.chat_postMessage(channel="C1", text="did it arrive?", metadata=META)
    (kept,) = fake.roots("C1")
    assert kept.metadata == META
    assert len(fake.accepted()) == 1


async def test_missing_history_scopes(fake: FakeSlack) -> None:
    fake.history_scopes = False
    web = client(fake)
    await web.chat_postMessage(channel="C1", text="posting still works")
    with pytest.raises(SlackApiError) as err:
        await web.conversations_history(channel="C1", include_all_metadata=True)
    assert err.value.response["error"] == "missing_scope"


async def test_ts_follows_the_wall_clock(fake: FakeSlack) -> None:
    web = client(fake)
    before = time.time()
    posted = await web.chat_postMessage(channel="C1", text="now")
    assert before - 1 <= float(posted["ts"]) <= time.time() + 1
