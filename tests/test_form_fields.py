"""The slash handler's form reader gives exactly what parse_qs would, for the fields it uses."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.slash import form_fields

FIELDS = ("text", "ssl_check", "response_url", "user_id")


def reference(body: str) -> dict[str, str]:
    parsed = parse_qs(body, keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items() if k in FIELDS}


@pytest.mark.parametrize(
    "body",
    [
        "",
        "text=",
        "text",
        "text=a+b%20c",
        "text=%ZZ&ssl_check=1",
        "te%78t=escaped-name",
        "text=first&text=second",
        "command=%2Fsms-balance&text=refresh+shop&response_url=https%3A%2F%2Fhooks.slack.com%2Fx",
        "text=%3C%21channel%3E+%26+co",
        "a=1&&text=x&",
        "text=caf%C3%A9",
        "ssl_check=1&token=abc",
    ],
)
def test_examples(body: str) -> None:
    assert form_fields(body) == reference(body)


@given(st.dictionaries(st.sampled_from([*FIELDS, "command", "user_id", "t e"]), st.text()))
def test_encoded_forms(fields: dict[str, str]) -> None:
    body = urlencode(fields)
    assert form_fields(body) == reference(body)


@given(st.text(alphabet="tex=&%+_sl1ACZ2F ", max_size=40))
def test_arbitrary_strings(body: str) -> None:
    assert form_fields(body) == reference(body)
