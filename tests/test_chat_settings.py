"""Settings for the chat robots, the message language and the display time zone."""

from __future__ import annotations

import json
import os
from zoneinfo import ZoneInfo

import pytest

from bot.errors import ConfigError
from bot.settings import Settings, load_settings

SECRET = "SECdo-not-print-0123456789"
URL = "https://oapi.dingtalk.com/robot/send?access_token=tok-do-not-print-0123456789"
APP = {"name": "shop", "app_key": "k1", "master_secret": "m1"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("DINGTALK_", "FEISHU_", "WECOM_", "JPUSH_", "SLACK_", "STATE_")):
            monkeypatch.delenv(name)
    for name in ("MESSAGE_LANGUAGE", "TZ", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def load(**env: str) -> Settings:
    base = {"JPUSH_APPS": json.dumps([APP])}
    base.update(env)
    return load_settings(None, **{k.lower(): v for k, v in base.items()})


def test_defaults() -> None:
    settings = load()
    assert settings.message_language == "en"
    assert settings.timezone is None
    assert settings.dingtalk_webhook_url is None
    assert settings.feishu_webhook_url is None
    assert settings.wecom_webhook_url is None


def test_chat_settings_are_secret() -> None:
    settings = load(DINGTALK_WEBHOOK_URL=URL, DINGTALK_SECRET=SECRET)
    assert settings.dingtalk_webhook_url is not None
    assert settings.dingtalk_webhook_url.get_secret_value() == URL
    shown = repr(settings) + str(settings.model_dump())
    assert SECRET not in shown and "tok-do-not-print" not in shown


@pytest.mark.parametrize(
    ("value", "language"),
    [("en", "en"), ("EN", "en"), ("zh-CN", "zh-CN"), ("zh_cn", "zh-CN"), ("zh", "zh-CN")],
)
def test_message_language(value: str, language: str) -> None:
    assert load(MESSAGE_LANGUAGE=value).message_language == language


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MESSAGE_LANGUAGE": "fr"}, "MESSAGE_LANGUAGE"),
        ({"TZ": "Mars/Olympus"}, "TZ"),
        ({"DINGTALK_WEBHOOK_URL": "oapi.dingtalk.com/" + SECRET}, "DINGTALK_WEBHOOK_URL"),
        ({"FEISHU_WEBHOOK_URL": "ftp://x/" + SECRET}, "FEISHU_WEBHOOK_URL"),
        ({"WECOM_WEBHOOK_URL": SECRET}, "WECOM_WEBHOOK_URL"),
        ({"DINGTALK_SECRET": SECRET}, "DINGTALK_WEBHOOK_URL"),
        ({"FEISHU_SECRET": SECRET}, "FEISHU_WEBHOOK_URL"),
    ],
)
def test_bad_values_name_the_variable_and_not_the_value(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**env)
    message = str(caught.value)
    assert message.startswith(variable), message
    assert SECRET not in message


@pytest.mark.parametrize("value", ["Asia/Shanghai", ":Asia/Shanghai", "UTC"])
def test_time_zone(value: str) -> None:
    assert load(TZ=value).timezone == ZoneInfo(value.lstrip(":"))


def test_variables_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPUSH_APPS", json.dumps([APP]))
    monkeypatch.setenv(
        "WECOM_WEBHOOK_URL", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"
    )
    monkeypatch.setenv("MESSAGE_LANGUAGE", "zh-CN")
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    settings = load_settings(None)
    assert settings.wecom_webhook_url is not None
    assert settings.message_language == "zh-CN"
    assert settings.tz == "Asia/Shanghai"
