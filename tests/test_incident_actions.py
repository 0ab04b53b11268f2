"""Acknowledge and snooze: parsing Slack's payloads and commands, and recording the change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botproc import button_press
from builders import fired
from hypothesis import given
from hypothesis import strategies as st

from bot.alerts_types import AlertBook, NoticeKind
from bot.commands import Command, parse_command
from bot.incident_actions import IncidentActions, parse_block_actions
from bot.incidents import IncidentPolicy
from bot.incidents import step as incidents_step
from bot.interactions import interaction_payload
from bot.quota import Level, QuotaType
from bot.store.base import CycleCommit, StateStore
from bot.store.factory import make_store

NOW = datetime(2026, 3, 1, 9, 41, tzinfo=UTC)


def press(**changes: Any) -> dict[str, Any]:
    payload = button_press("shop", "ack")
    payload.update(changes)
    return payload


PAYLOADS: dict[str, tuple[dict[str, Any], tuple[NoticeKind, timedelta | None] | None]] = {
    "ack": (button_press("shop", "ack"), (NoticeKind.ACK, None)),
    "unack": (button_press("shop", "unack"), (NoticeKind.UNACK, None)),
    "unsnooze": (button_press("shop", "unsnooze"), (NoticeKind.UNSNOOZE, None)),
    "snooze 1h": (
        button_press("shop", "snooze", option="1h"),
        (NoticeKind.SNOOZE, timedelta(hours=1)),
    ),
    "snooze 24h": (
        button_press("shop", "snooze", option="24h"),
        (NoticeKind.SNOOZE, timedelta(hours=24)),
    ),
    "snooze 7d": (
        button_press("shop", "snooze", option="7d"),
        (NoticeKind.SNOOZE, timedelta(days=7)),
    ),
    "snooze 2h: not a choice": (button_press("shop", "snooze", option="2h"), None),
    "snooze without option": (button_press("shop", "snooze"), None),
    "other action id": (button_press("shop", "delete"), None),
    "not block_actions": (press(type="view_submission"), None),
    "no user": (press(user=None), None),
    "user id with markup": (press(user={"id": "<!channel>"}), None),
    "no actions": (press(actions=[]), None),
    "action not an object": (press(actions=["ack"]), None),
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_parse_block_actions(name: str) -> None:
    payload, expected = PAYLOADS[name]
    found = parse_block_actions(payload, NOW)
    if expected is None:
        assert found is None
        return
    kind, length = expected
    assert found is not None and found.scope == "shop"
    assert found.notice.kind is kind and found.notice.by == "U0ONCALL"
    assert found.notice.until == (NOW + length if length else None)


def test_block_id_must_name_a_scope() -> None:
    payload = button_press("shop", "ack")
    payload["actions"][0]["block_id"] = "something-else"
    assert parse_block_actions(payload, NOW) is None
    payload["actions"][0]["block_id"] = "incident:Shop Name!"
    assert parse_block_actions(payload, NOW) is None


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_any_json_never_raises(payload: Any) -> None:
    if isinstance(payload, dict):
        parse_block_actions(payload, NOW)
        parse_block_actions({"type": "block_actions", **payload}, NOW)


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ("payload=%7B%22type%22%3A%22block_actions%22%7D", True),
        ("payload=not-json", False),
        ("payload=%5B1%2C2%5D", False),  # a list, not an object
        ("text=hello", False),
        ("payload=%7B%7D&payload=%7B%7D", False),
        ("", False),
        ("payload=" + "%5B" * 5000, False),  # nested too deep for json
    ],
)
def test_interaction_payload(body: str, ok: bool) -> None:
    assert (interaction_payload(body) is not None) is ok


SCOPES = ["account", "shop"]
COMMANDS: dict[str, Command] = {
    "ack shop": Command("ack", scope="shop"),
    "ACK Shop": Command("ack", scope="shop"),
    "unack account": Command("unack", scope="account"),
    "snooze shop": Command("snooze", scope="shop", duration=timedelta(hours=1)),
    "snooze shop 24h": Command("snooze", scope="shop", duration=timedelta(hours=24)),
    "snooze shop 7d": Command("snooze", scope="shop", duration=timedelta(days=7)),
    "snooze shop 90": Command("snooze", scope="shop", duration=timedelta(seconds=90)),
    "unsnooze shop": Command("unsnooze", scope="shop"),
    "ack": Command("unknown", word="ack"),
    "ack nowhere": Command("unknown", word="nowhere"),
    "ack all": Command("unknown", word="all"),
    "ack shop now": Command("unknown", word="now"),
    "snooze shop forever": Command("unknown", word="forever"),
    "snooze shop 0": Command("unknown", word="0"),
    "snooze shop 31d": Command("unknown", word="31d"),
    "snooze shop 1e400": Command("unknown", word="1e400"),
    "snooze shop 99999999999999999999d": Command("unknown", word="99999999999999999999d"),
    "snooze shop 1h extra": Command("unknown", word="extra"),
}


@pytest.mark.parametrize("text", list(COMMANDS))
def test_parse_incident_commands(text: str) -> None:
    assert parse_command(text, SCOPES) == COMMANDS[text]


# --- recording ------------------------------------------------------------------------------


@pytest.fixture
async def store() -> AsyncIterator[StateStore]:
    opened = make_store("memory://")
    await opened.open()
    yield opened
    await opened.close()


async def open_incident(store: StateStore) -> None:
    event = fired("shop", QuotaType.VOICE, Level.WARNING, 500, 1000, at=NOW, opened_at=NOW)
    plan = incidents_step(AlertBook().incidents, [event], NOW, IncidentPolicy(channel="C"), "c0")
    assert await store.commit_cycle(CycleCommit([], AlertBook(incidents=plan.book)), 0)


async def test_apply_records_and_queues_the_root_update(store: StateStore) -> None:
    await open_incident(store)
    woken: list[bool] = []
    actions = IncidentActions(
        store, clock=lambda: NOW, known_scopes={"shop"}, wake_delivery=lambda: woken.append(True)
    )
    action = parse_block_actions(button_press("shop", "ack"), NOW)
    assert action is not None
    assert await actions.apply(action)
    book, _ = await store.load_book()
    ack = book.incidents.open["shop"].ack
    assert ack is not None and ack.by == "U0ONCALL" and ack.at == NOW
    queued = await store.pending_messages()
    assert [m.kind for m in queued] == ["update", "reply"] and woken == [True]


async def test_apply_without_incident_or_unknown_scope(store: StateStore) -> None:
    actions = IncidentActions(store, clock=lambda: NOW, known_scopes={"shop"})
    action = parse_block_actions(button_press("shop", "ack"), NOW)
    assert action is not None
    assert not await actions.apply(action)
    other = parse_block_actions(button_press("elsewhere", "ack"), NOW)
    assert other is not None and not await actions.apply(other)
    assert await store.pending_messages() == []


async def test_handle_payload_answers_before_the_work(store: StateStore) -> None:
    await open_incident(store)
    actions = IncidentActions(store, clock=lambda: NOW, known_scopes={"shop"})
    assert await actions.handle_payload(button_press("shop", "snooze", option="24h")) is None
    await actions.close()  # lets the recorded change finish
    book, _ = await store.load_book()
    snooze = book.incidents.open["shop"].snooze
    assert snooze is not None and snooze.until == NOW + timedelta(hours=24)
