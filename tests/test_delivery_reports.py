"""bot.delivery_reports: JPush callback signature, window, parsing and privacy (pure).

JPush's callback documentation gives the signing rule but no worked example (no sample key,
secret, nonce and signature), so the reference signatures below were computed independently
with coreutils: `printf 'appKey=%s&appMasterSecret=%s&nonce=%s&timestamp=%s' K S N T | sha1sum`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.delivery_reports import (
    MAX_BODY,
    STATUS_LABELS,
    STATUS_NAMES,
    CallbackApp,
    DeliveryReport,
    Rejection,
    Signer,
    echo,
    phone_tail,
    read_callback,
    read_form,
    signature_for,
)

NOW = datetime(2025, 11, 24, 16, 0, tzinfo=UTC)
TS = str(int(NOW.timestamp() * 1000))  # 1764000000000
SHOP = CallbackApp("shop", "shop-key", "shop-secret")
CRM = CallbackApp("crm", "crm-key", "crm-secret")
SIGNER = Signer([CRM, SHOP])


def form(
    app: CallbackApp = SHOP,
    *,
    nonce: str = "1",
    timestamp: str = TS,
    type_: str | None = "SMS_REPORT",
    data: object = None,
    signature: str | None = None,
    drop: tuple[str, ...] = (),
) -> bytes:
    if data is None:
        data = {
            "msgId": "1234567",
            "status": 4005,
            "receiveTime": 1764000000,
            "phone": "13800138000",
        }
    fields = {
        "nonce": nonce,
        "timestamp": timestamp,
        "signature": signature or signature_for(app.app_key, app.master_secret, nonce, timestamp),
        "type": type_,
        "data": data if isinstance(data, str) else json.dumps(data),
    }
    return urlencode({k: v for k, v in fields.items() if v is not None and k not in drop}).encode()


# --- signature ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "secret", "nonce", "timestamp", "expected"),
    [
        (
            "4c6f6a8b7e2a0d1f3b5c7e9a",
            "demo-master-secret",
            "8976543210123456789",
            "1764000000000",
            "7c7f71785390e5dc6456447ee78018002b6a0f7c",
        ),
        (
            "shop-key",
            "shop-secret",
            "1",
            "1764000000000",
            "be50050bc14407490573761a07cd5ccaffa882de",
        ),
    ],
)
def test_signature_matches_reference_values(
    key: str, secret: str, nonce: str, timestamp: str, expected: str
) -> None:
    assert signature_for(key, secret, nonce, timestamp) == expected
    app = CallbackApp("x", key, secret)
    assert Signer([CRM, app]).match(nonce, timestamp, expected) is app


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (form(signature="0" * 40), 401, "matches no configured app"),
        (form(CallbackApp("shop", "shop-key", "wrong-secret")), 401, "matches no configured app"),
        (form(CallbackApp("shop", "other-key", "shop-secret")), 401, "matches no configured app"),
        (form(signature="BE50050BC14407490573761A07CD5CCAFFA882DE"), 401, "malformed signature"),
        (form(signature="be50050b"), 401, "malformed signature"),
        (form(drop=("signature",)), 400, "missing field(s): signature"),
        (form(drop=("nonce", "timestamp")), 400, "missing field(s): nonce, timestamp"),
        (form(timestamp="17640000000o0"), 400, "not a number"),
        (form(timestamp="-1"), 400, "not a number"),
        (form(timestamp="1.764e12"), 400, "not a number"),
        (form(nonce="a b"), 400, "malformed nonce"),
        (form(timestamp=str(int((NOW - timedelta(hours=25)).timestamp() * 1000))), 401, "older"),
        (form(timestamp=str(int((NOW + timedelta(hours=1)).timestamp() * 1000))), 401, "future"),
    ],
)
def test_refusals_before_parsing(body: bytes, status: int, reason: str) -> None:
    with pytest.raises(Rejection) as caught:
        read_callback(body, SIGNER, NOW)
    assert caught.value.status == status
    assert reason in caught.value.reason
    assert "secret" not in caught.value.reason.replace("master secret", "")


def test_signed_by_another_apps_credentials_names_that_app() -> None:
    report = read_callback(form(CRM), SIGNER, NOW)
    assert report.scope == "crm"


def test_window_edges() -> None:
    just_inside = str(int((NOW - timedelta(hours=23, minutes=59)).timestamp() * 1000))
    assert read_callback(form(timestamp=just_inside), SIGNER, NOW).scope == "shop"
    ahead = str(int((NOW + timedelta(minutes=4)).timestamp() * 1000))
    assert read_callback(form(timestamp=ahead), SIGNER, NOW).scope == "shop"


def test_no_apps_configured_refuses_everything() -> None:
    with pytest.raises(Rejection) as caught:
        read_callback(form(), Signer([]), NOW)
    assert caught.value.status == 401


# --- parsing --------------------------------------------------------------------------------


def test_full_report_parsed() -> None:
    report = read_callback(form(), SIGNER, NOW)
    assert report == DeliveryReport(
        scope="shop",
        nonce="1",
        signature="be50050bc14407490573761a07cd5ccaffa882de",
        sent_at=NOW,
        type="SMS_REPORT",
        status=4005,
        msg_id="1234567",
        received_at=datetime.fromtimestamp(1764000000, UTC),
        phone_tail="8000",
    )
    assert report.replay_key == "1:be50050bc14407490573761a07cd5ccaffa882de"
    assert report.forget_after == NOW + timedelta(hours=24)
    assert "13800138000" not in repr(report)


@pytest.mark.parametrize("status", sorted(STATUS_NAMES))
def test_every_documented_status(status: int) -> None:
    data = {"msgId": "m", "status": status, "receiveTime": 1, "phone": "1"}
    report = read_callback(form(data=data), SIGNER, NOW)
    assert report.status == status
    assert report.status_label == str(status)


@pytest.mark.parametrize(
    ("status", "label"), [(4000, "other"), (4011, "other"), (200, "other"), ("4006", "4006")]
)
def test_status_labels_are_bounded(status: object, label: str) -> None:
    data = {"msgId": "m", "status": status, "receiveTime": 1, "phone": "1"}
    assert read_callback(form(data=data), SIGNER, NOW).status_label == label
    assert label in STATUS_LABELS


@pytest.mark.parametrize(
    ("receive_time", "expected"),
    [
        (1764000000, datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
        (1764000000123, datetime(2025, 11, 24, 16, 0, 0, 123000, tzinfo=UTC)),
        ("1764000000", datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
        ("2025-11-25 00:00:00", datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
        ("2025-11-24T16:00:00+00:00", datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
        ("yesterday", None),
        (None, None),
        (True, None),
        (10**30, None),
    ],
)
def test_receive_time(receive_time: object, expected: datetime | None) -> None:
    data = {"msgId": "m", "status": 4001, "receiveTime": receive_time, "phone": "1"}
    assert read_callback(form(data=data), SIGNER, NOW).received_at == expected


@pytest.mark.parametrize(
    ("phone", "tail"),
    [
        ("13800138000", "8000"),
        ("+86 138-0013-8123", "8123"),
        (13800138000, "8000"),
        ("12", "12"),
        ("", None),
        ("abc", None),
        (None, None),
        (["13800138000"], None),
        ("١٢٣٤٥٦", None),  # non-ASCII digits are not phone digits
    ],
)
def test_phone_tail(phone: object, tail: str | None) -> None:
    assert phone_tail(phone) == tail


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (form(data="not json"), "data is not JSON"),
        (form(data="[1, 2]"), "not a JSON object"),
        (form(data=""), "missing field: data"),
        (form(drop=("data",)), "missing field: data"),
        (form(drop=("type",)), "missing field: type"),
        (form(type_="sms report"), "malformed type"),
        (form(data={"msgId": "m", "phone": "1"}), "data.status"),
        (form(data={"msgId": "m", "status": "x"}), "data.status"),
        (form(data={"msgId": "m", "status": True}), "data.status"),
        (form(data={"msgId": "m", "status": -4005}), "data.status"),
        (form(data={"status": 4005}), "data.msgId"),
        (form(data={"msgId": "", "status": 4005}), "data.msgId"),
        (form(data={"msgId": "x" * 65, "status": 4005}), "data.msgId"),
        (form(data={"msgId": None, "status": 4005}), "data.msgId"),
    ],
)
def test_bad_data_is_400_after_the_signature(body: bytes, reason: str) -> None:
    with pytest.raises(Rejection) as caught:
        read_callback(body, SIGNER, NOW)
    assert caught.value.status == 400
    assert reason in caught.value.reason


def test_bad_data_with_a_bad_signature_is_401() -> None:
    # Nothing of an unsigned body is parsed: the signature is refused first.
    with pytest.raises(Rejection) as caught:
        read_callback(form(data="not json", signature="1" * 40), SIGNER, NOW)
    assert caught.value.status == 401


def test_numeric_msg_id_accepted() -> None:
    data = {"msgId": 987654321, "status": 4001, "receiveTime": 1, "phone": "1"}
    assert read_callback(form(data=data), SIGNER, NOW).msg_id == "987654321"


def test_missing_phone_and_receive_time_are_tolerated() -> None:
    report = read_callback(form(data={"msgId": "m", "status": 4001}), SIGNER, NOW)
    assert (report.phone_tail, report.received_at) == (None, None)


@pytest.mark.parametrize("kind", ["SMS_REPLY", "SMS_SOMETHING_NEW"])
def test_replies_and_unknown_types_are_not_read(kind: str) -> None:
    data = {"phone": "13800138000", "replyTime": "x", "content": "secret words"}
    report = read_callback(form(type_=kind, data=data), SIGNER, NOW)
    assert (report.type, report.status, report.msg_id, report.phone_tail) == (
        kind,
        None,
        None,
        None,
    )
    assert "secret words" not in repr(report)
    assert report.status_label == ("reply" if kind == "SMS_REPLY" else "unknown_type")


# --- the form itself ------------------------------------------------------------------------


def test_invalid_utf8_is_400() -> None:
    with pytest.raises(Rejection) as caught:
        read_form(b"nonce=1&type=\xff\xfe")
    assert caught.value.status == 400
    with pytest.raises(Rejection) as caught:
        read_form(b"nonce=%ff%fe")
    assert caught.value.status == 400
    with pytest.raises(Rejection) as caught:
        read_form(b"nonce=1&junk=\xff")  # even in a field that is not used
    assert caught.value.status == 400


def test_form_first_value_wins_and_unknown_fields_skipped() -> None:
    fields = read_form(b"nonce=1&nonce=2&junk=x&type=A+B&&data=%7B%7D")
    assert fields == {"nonce": "1", "type": "A B", "data": "{}"}


def test_oversized_body_is_413() -> None:
    with pytest.raises(Rejection) as caught:
        read_form(b"a" * (MAX_BODY + 1))
    assert caught.value.status == 413


# --- address check --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("echostr", "body"),
    [
        ("a1B2c3D4", "a1B2c3D4"),
        ("x", "x"),
        ("9" * 64, "9" * 64),
        ("9" * 65, None),
        ("", None),
        (None, None),
        ("abc def", None),
        ("<script>", None),
        ("abc\n", None),
        ("ｘ", None),  # full-width letter: not ASCII
        ("é", None),
    ],
)
def test_echo(echostr: str | None, body: str | None) -> None:
    assert echo(echostr) == body


# --- properties -----------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    key=st.text(min_size=1, max_size=30),
    secret=st.text(min_size=1, max_size=30),
    nonce=st.from_regex(r"-?[0-9A-Za-z_]{1,64}", fullmatch=True),
    offset_s=st.integers(min_value=-86_000, max_value=290),
    status=st.integers(min_value=0, max_value=999_999),
    phone=_TEXT,
)
def test_any_signed_report_in_window_is_attributed_to_its_signer(
    key: str, secret: str, nonce: str, offset_s: int, status: int, phone: str
) -> None:
    app = CallbackApp("target", key, secret)
    signer = Signer([SHOP, app, CRM])
    timestamp = str(int(NOW.timestamp() * 1000) + offset_s * 1000)
    data = {"msgId": "m", "status": status, "phone": phone}
    body = form(app, nonce=nonce, timestamp=timestamp, data=data)
    report = read_callback(body, signer, NOW)
    if (key, secret) not in {(SHOP.app_key, SHOP.master_secret), (CRM.app_key, CRM.master_secret)}:
        assert report.scope == "target"
    assert report.status == status
    tail = report.phone_tail or ""
    assert tail == "" or (len(tail) <= 4 and tail.isdigit())


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_anything_but_a_rejection(body: bytes) -> None:
    with pytest.raises(Rejection) as caught:
        read_callback(body, SIGNER, NOW)
    assert caught.value.status in (400, 401, 413)


@settings(max_examples=200, deadline=None)
@given(flip=st.integers(min_value=0, max_value=39), other=st.sampled_from("0123456789abcdef"))
def test_any_changed_signature_digit_is_refused(flip: int, other: str) -> None:
    good = signature_for(SHOP.app_key, SHOP.master_secret, "1", TS)
    forged = good[:flip] + other + good[flip + 1 :]
    if forged == good:
        return
    with pytest.raises(Rejection) as caught:
        read_callback(form(signature=forged), SIGNER, NOW)
    assert caught.value.status == 401
