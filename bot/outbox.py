"""What one cycle's events become in the outbox: per destination, typed, in order.

Pure. With incidents on (Slack Web API delivery), the primary destination gets incident
operations (roots, thread replies, root updates) planned by bot.incidents; otherwise one grouped
message per cycle, as webhooks and the terminal cannot edit what they posted. Every other
destination (team chats) gets the grouped message too, in its own queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from bot import incidents
from bot.alerts_types import AlertBook, Event
from bot.incidents import IncidentPolicy
from bot.store.base import PRIMARY, OutboxMessage


@dataclass(frozen=True, slots=True)
class Routing:
    """Where alerts go: incidents (or grouped messages) on the primary destination, and the
    names of the other destinations that get one grouped message per cycle."""

    incidents: IncidentPolicy | None = None
    destinations: tuple[str, ...] = ()


def plan_messages(
    book: AlertBook,
    events: Sequence[Event],
    now: datetime,
    routing: Routing,
    id_prefix: str,
) -> tuple[AlertBook, list[OutboxMessage]]:
    """The book with its incidents advanced, and the messages to queue with it.

    `id_prefix` is a fresh `OutboxMessage.new_id(now)`: every id made from it sorts after
    every earlier cycle's, which is the order each destination sends in.
    """
    messages: list[OutboxMessage] = []
    if routing.incidents is not None:
        # Run even without events: an expired snooze reminds from here.
        plan = incidents.step(book.incidents, events, now, routing.incidents, id_prefix)
        book = replace(book, incidents=plan.book).mark_delivered(plan.quiet_keys, now)
        messages.extend(
            OutboxMessage(id=op.id, created_at=now, events=(), destination=PRIMARY, op=op)
            for op in plan.ops
        )
    elif events:
        messages.append(OutboxMessage(id=id_prefix, created_at=now, events=tuple(events)))
    if events:
        messages.extend(
            OutboxMessage(
                id=f"{id_prefix}-{name}", created_at=now, events=tuple(events), destination=name
            )
            for name in routing.destinations
            if name != PRIMARY
        )
    return book, messages
