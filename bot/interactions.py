"""POST /slack/interactions: Slack's interactivity requests (the root's buttons).

The body is read and its signature checked by the same SlackSignature as the slash command
(401, 413, 503 without a signing secret); a signed body that is not a form with one JSON object
in `payload` gets 400. Anything else is acknowledged at once with an empty 200: the change
itself is recorded after the answer (IncidentActions.handle_payload).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from bot.incident_actions import IncidentActions
from bot.metrics import Metrics
from bot.slack_signature import Refusal, SlackSignature

log = logging.getLogger(__name__)


def interaction_payload(body: str) -> dict[str, Any] | None:
    """The JSON object in the form field `payload`, or None when there is none."""
    try:
        fields = parse_qs(body, strict_parsing=False, max_num_fields=50)
    except ValueError:
        return None
    values = fields.get("payload")
    if not values or len(values) != 1:
        return None
    try:
        payload = json.loads(values[0])
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


class InteractionsRoute:
    def __init__(
        self, actions: IncidentActions, signature: SlackSignature, metrics: Metrics
    ) -> None:
        self._actions = actions
        self._signature = signature
        self._metrics = metrics

    async def handle(self, request: web.Request) -> web.Response:
        body = await self._signature.read(request)
        if isinstance(body, Refusal):
            return body.counted(self._metrics)
        payload = interaction_payload(body)
        if payload is None:
            log.warning("/slack/interactions: signed, but no JSON object in `payload`")
            return web.json_response({"error": "malformed payload"}, status=400)
        await self._actions.handle_payload(payload)
        return web.Response(status=200)
