"""JPush (JSMS) delivery-report callbacks: signature, window, parsing, privacy.

Pure: bytes and `now` in, a verified `DeliveryReport` (or a `Rejection` naming the HTTP status)
out. No I/O, no clock.

JPush posts a form (`nonce`, `timestamp` in ms, `signature`, `type`, `data`) to the callback
address set per app in its console. `signature` is the lower-case hex SHA-1 of
`appKey={appKey}&appMasterSecret={masterSecret}&nonce={nonce}&timestamp={timestamp}`, so the
app that signed a report is found by trying every configured app's credentials; the report
belongs to that app's scope. The address itself is checked by a GET with `echostr`, which must
be echoed back.

Order of checks: the fields the signature covers are read first, the signature is matched, the
timestamp window applied, and only then is the rest of the body (`type`, `data`) parsed. A phone
number never leaves this module whole (its last 4 digits at most) and an `SMS_REPLY`'s content
is never read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote_to_bytes

MAX_BODY = 64 * 1024
# Reports older than this are refused; JPush's last retry comes 12 hours after the first try.
WINDOW = timedelta(hours=24)
# A sender's clock may run a little ahead of ours; further ahead is not a JPush report.
FUTURE_SKEW = timedelta(minutes=5)

SMS_REPORT = "SMS_REPORT"
SMS_REPLY = "SMS_REPLY"

DELIVERED = 4001
QUOTA_EXHAUSTED = 4005
RATE_EXCEEDED = 4006
OTHER = 4100
# JPush's status codes. 4007-4010 are voice-message and content-filter outcomes, documented by
# JPush beside the SMS ones; they are counted under their own code like the rest.
STATUS_NAMES: Mapping[int, str] = {
    4001: "delivered",
    4002: "blacklisted",
    4003: "handset problem",
    4004: "empty number",
    4005: "quota exhausted",
    4006: "rate exceeded",
    4007: "not answered",
    4008: "busy",
    4009: "unreachable",
    4010: "blocked word",
    4100: "other",
}

# Every value the `status` label of sms_delivery_reports_total can take.
STATUS_LABELS = frozenset({*(str(code) for code in STATUS_NAMES), "other", "reply", "unknown_type"})

_ECHOSTR = re.compile(r"[A-Za-z0-9]{1,64}")
_NONCE = re.compile(r"-?[0-9A-Za-z_]{1,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,16}")
_SIGNATURE = re.compile(r"[0-9a-f]{40}")
_TYPE = re.compile(r"[A-Z0-9_]{1,32}")
_SIGNED_FIELDS = ("nonce", "timestamp", "signature")
_FIELDS = frozenset({*_SIGNED_FIELDS, "type", "data"})
MAX_MSG_ID = 64
_CHINA = timezone(timedelta(hours=8))  # JPush's own clock, for times without a zone


class Rejection(Exception):
    """A callback request that is not accepted: `status` is the HTTP answer, `reason` is for
    the log (never holds a secret, a phone number or a body)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CallbackApp:
    """One configured app whose credentials may have signed a report."""

    scope: str
    app_key: str
    master_secret: str


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """One verified callback. `status` and `msg_id` are set for `SMS_REPORT` only."""

    scope: str
    nonce: str
    signature: str
    sent_at: datetime  # the callback's own timestamp
    type: str  # SMS_REPORT, SMS_REPLY or whatever else JPush sends (then ignored)
    status: int | None = None
    msg_id: str | None = None
    received_at: datetime | None = None  # when the handset got it, if JPush says
    phone_tail: str | None = None  # last 4 digits at most

    @property
    def replay_key(self) -> str:
        """What makes a callback the same one again: JPush retries with the same nonce and
        signature (which covers the app and the timestamp)."""
        return f"{self.nonce}:{self.signature}"

    @property
    def forget_after(self) -> datetime:
        """After this instant the window refuses the callback anyway: no need to remember it."""
        return self.sent_at + WINDOW

    @property
    def status_label(self) -> str:
        """The status as a metric label: the code when known, `other` for anything else."""
        if self.type == SMS_REPLY:
            return "reply"
        if self.status is None:
            return "unknown_type"
        return str(self.status) if self.status in STATUS_NAMES else "other"


# --- signature ------------------------------------------------------------------------------


def signature_for(app_key: str, master_secret: str, nonce: str, timestamp: str) -> str:
    """The signature JPush sends for these values."""
    text = f"appKey={app_key}&appMasterSecret={master_secret}&nonce={nonce}&timestamp={timestamp}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class Signer:
    """Matches a signature against every configured app, in time independent of which (if any)
    app matches: every app is tried and compared with `hmac.compare_digest`."""

    def __init__(self, apps: Iterable[CallbackApp]) -> None:
        self._apps = tuple(apps)
        # The fixed prefix of each app's signed text, hashed once: a report costs one short
        # update per app, not a full hash of the secret.
        self._prefixes = tuple(
            (
                app,
                hashlib.sha1(
                    f"appKey={app.app_key}&appMasterSecret={app.master_secret}&nonce=".encode()
                ),
            )
            for app in self._apps
        )

    @property
    def apps(self) -> tuple[CallbackApp, ...]:
        return self._apps

    def match(self, nonce: str, timestamp: str, signature: str) -> CallbackApp | None:
        tail = f"{nonce}&timestamp={timestamp}".encode()
        given = signature.encode()
        found: CallbackApp | None = None
        for app, prefix in self._prefixes:
            digest = prefix.copy()
            digest.update(tail)
            if hmac.compare_digest(digest.hexdigest().encode(), given) and found is None:
                found = app
        return found


# --- the address check ----------------------------------------------------------------------


def echo(echostr: str | None) -> str | None:
    """The body answering JPush's address check, or None when `echostr` is not 1 to 64
    letters and digits (it is echoed verbatim, so nothing else may pass)."""
    if echostr is None or not _ECHOSTR.fullmatch(echostr):
        return None
    return echostr


# --- the callback -----------------------------------------------------------------------------


def read_form(body: bytes) -> dict[str, str]:
    """The callback's fields (first value of each), decoded strictly as UTF-8.

    Raises Rejection(400) for a body that is not a UTF-8 form; unknown fields are skipped.
    """
    if len(body) > MAX_BODY:
        raise Rejection(413, "body over 64 KiB")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejection(400, "body is not valid UTF-8") from None
    fields: dict[str, str] = {}
    for pair in body.split(b"&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        name = _unquote(raw_name, "a field name")
        if name not in _FIELDS or name in fields:
            continue
        fields[name] = _unquote(raw_value, name)
    return fields


def _unquote(raw: bytes, what: str) -> str:
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise Rejection(400, f"{what} is not valid UTF-8") from None


def verify(
    fields: Mapping[str, str], signer: Signer, now: datetime
) -> tuple[CallbackApp, datetime]:
    """The app that signed the callback and the callback's time; Rejection otherwise.

    400 for fields that are missing or malformed (no signature can be checked on them), 401
    for a signature no configured app produced or a timestamp outside the window.
    """
    missing = [name for name in _SIGNED_FIELDS if not fields.get(name)]
    if missing:
        raise Rejection(400, f"missing field(s): {', '.join(missing)}")
    nonce, timestamp, signature = fields["nonce"], fields["timestamp"], fields["signature"]
    if not _NONCE.fullmatch(nonce):
        raise Rejection(400, "malformed nonce")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise Rejection(400, "timestamp is not a number of milliseconds")
    if not _SIGNATURE.fullmatch(signature):
        # Not 40 lower-case hex digits: no SHA-1 could match, so it is simply not signed.
        raise Rejection(401, "malformed signature")
    app = signer.match(nonce, timestamp, signature)
    if app is None:
        raise Rejection(401, "signature matches no configured app (wrong master secret?)")
    sent_at = datetime.fromtimestamp(int(timestamp) / 1000, UTC)
    if sent_at < now - WINDOW:
        raise Rejection(401, "timestamp older than 24 hours")
    if sent_at > now + FUTURE_SKEW:
        raise Rejection(401, "timestamp in the future (check the server clock)")
    return app, sent_at


def parse_report(fields: Mapping[str, str], app: CallbackApp, sent_at: datetime) -> DeliveryReport:
    """The verified callback as a value; Rejection(400) for a missing or malformed type/data."""
    kind = fields.get("type")
    if not kind:
        raise Rejection(400, "missing field: type")
    if not _TYPE.fullmatch(kind):
        raise Rejection(400, "malformed type")
    raw = fields.get("data")
    if raw is None or raw == "":
        raise Rejection(400, "missing field: data")
    try:
        data = json.loads(raw)
    except ValueError:
        raise Rejection(400, "data is not JSON") from None
    if not isinstance(data, dict):
        raise Rejection(400, "data is not a JSON object")
    base = DeliveryReport(
        scope=app.scope,
        nonce=fields["nonce"],
        signature=fields["signature"],
        sent_at=sent_at,
        type=kind,
    )
    if kind != SMS_REPORT:
        # SMS_REPLY carries a user's message: it is deliberately not read, let alone kept.
        return base
    status = data.get("status")
    msg_id = data.get("msgId")
    if isinstance(status, str) and status.isdigit() and len(status) <= 6:
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 0 <= status <= 999_999:
        raise Rejection(400, "data.status missing or not a status code")
    if isinstance(msg_id, int) and not isinstance(msg_id, bool):
        msg_id = str(msg_id)
    if not isinstance(msg_id, str) or not msg_id or len(msg_id) > MAX_MSG_ID:
        raise Rejection(400, "data.msgId missing or malformed")
    return DeliveryReport(
        scope=base.scope,
        nonce=base.nonce,
        signature=base.signature,
        sent_at=sent_at,
        type=kind,
        status=status,
        msg_id=msg_id,
        received_at=_receive_time(data.get("receiveTime")),
        phone_tail=phone_tail(data.get("phone")),
    )


def read_callback(body: bytes, signer: Signer, now: datetime) -> DeliveryReport:
    """The whole check of one POSTed callback: form, signature, window, then the report."""
    fields = read_form(body)
    app, sent_at = verify(fields, signer, now)
    return parse_report(fields, app, sent_at)


def phone_tail(phone: Any) -> str | None:
    """At most the last 4 digits of a phone number: enough to tell two handsets apart in a
    conversation with a user, never enough to identify one."""
    if isinstance(phone, int) and not isinstance(phone, bool):
        phone = str(phone)
    if not isinstance(phone, str):
        return None
    digits = [c for c in phone if c.isascii() and c.isdigit()]
    return "".join(digits[-4:]) or None


def _receive_time(value: Any) -> datetime | None:
    """JPush documents `receiveTime` as a timestamp without saying which; accept seconds or
    milliseconds since the epoch and `YYYY-MM-DD HH:MM:SS` (China time), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit() and len(value) <= 16:
        value = int(value)
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 10**11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_CHINA)
        return parsed.astimezone(UTC)
    return None
