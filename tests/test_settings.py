"""Settings: every bad value gives one line naming the variable, and never the value."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.quota import QuotaType, ScopeKind, Threshold
from bot.settings import Settings, load_settings, parse_duration
from bot.store.factory import store_from_settings

SECRET = "s3cr3t-do-not-print"
APP = {"name": "shop", "app_key": "k1", "master_secret": SECRET}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("JPUSH_", "ALERT_", "SLACK_", "POLL_", "STATE_", "LOG_", "HISTORY_")):
            monkeypatch.delenv(name)
    for name in ("REDIS_URL", "PORT", "HOST", "REDIS_TLS_VERIFY"):
        monkeypatch.delenv(name, raising=False)


def load(**env: str) -> Settings:
    base = {"JPUSH_APPS": json.dumps([APP])}
    base.update(env)
    return load_settings(None, **{k.lower(): v for k, v in base.items()})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("30s", 30),
        ("5m", 300),
        ("6h", 21600),
        ("1d", 86400),
        ("0", 0),
        (" 2M ", 120),
        ("0.5", 0.5),
        ("1.5h", 5400),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5x", "m5", "-5m", "five", "1h30m", "1e3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


BAD = [
    ({"POLL_INTERVAL": "soon"}, "POLL_INTERVAL", "duration"),
    ({"POLL_INTERVAL": "0"}, "POLL_INTERVAL", "greater than 0"),
    ({"ALERT_REPEAT_INTERVAL": "daily"}, "ALERT_REPEAT_INTERVAL", "duration"),
    ({"ALERT_FORECAST_HORIZON": "-1d"}, "ALERT_FORECAST_HORIZON", "duration"),
    ({"HISTORY_RETENTION": "5m"}, "HISTORY_RETENTION", "at least 1h"),
    ({"JPUSH_TIMEOUT": "abc"}, "JPUSH_TIMEOUT", "number"),
    ({"JPUSH_TIMEOUT": "0"}, "JPUSH_TIMEOUT", "greater than 0"),
    ({"JPUSH_CONCURRENCY": "0"}, "JPUSH_CONCURRENCY", "greater than or equal to 1"),
    ({"JPUSH_BASE_URL": "ftp://x"}, "JPUSH_BASE_URL", "http"),
    ({"SLACK_API_URL": "slack.com/api"}, "SLACK_API_URL", "http"),
    ({"ALERT_WARNING_VOICE": "-1"}, "ALERT_WARNING_VOICE", "greater than or equal to 0"),
    ({"ALERT_CRITICAL_MARKET": "5000"}, "ALERT_CRITICAL_MARKET", "must not exceed"),
    ({"ALERT_RESOLVE_MARGIN": "-3"}, "ALERT_RESOLVE_MARGIN", "greater than or equal to 0"),
    ({"ALERT_FAILURES_BEFORE_ALERT": "0"}, "ALERT_FAILURES_BEFORE_ALERT", "greater than"),
    ({"ALERT_DROP_PERCENT": "101"}, "ALERT_DROP_PERCENT", "less than or equal to 100"),
    ({"ALERT_DROP_PERCENT": "-1"}, "ALERT_DROP_PERCENT", "greater than or equal to 0"),
    ({"ALERT_BURN_FACTOR": "1.5"}, "ALERT_BURN_FACTOR", "at least 2"),
    ({"ALERT_BURN_FACTOR": "nan"}, "ALERT_BURN_FACTOR", "less than or equal to 1000"),
    ({"JPUSH_DEV_KEY": "dev"}, "JPUSH_DEV_SECRET", "required"),
    ({"JPUSH_DEV_SECRET": SECRET}, "JPUSH_DEV_KEY", "required"),
    ({"SLACK_BOT_TOKEN": "xoxb-" + SECRET}, "SLACK_CHANNEL", "required"),
    ({"STATE_URL": "postgres://u:" + SECRET + "@db/x"}, "STATE_URL", "sqlite"),
    ({"PORT": "70000"}, "PORT", "less than or equal"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", "one of"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", "text"),
    ({"JPUSH_APPS": "[{"}, "JPUSH_APPS", "not valid JSON"),
    ({"JPUSH_APPS": '{"name": "x"}'}, "JPUSH_APPS", "array"),
    ({"JPUSH_APPS": "[1]"}, "JPUSH_APPS", "item 0 must be an object"),
    ({"JPUSH_APPS": json.dumps([{**APP, "name": "Shop"}])}, "JPUSH_APPS", "a-z"),
    ({"JPUSH_APPS": json.dumps([{**APP, "name": "account"}])}, "JPUSH_APPS", "reserved"),
    ({"JPUSH_APPS": json.dumps([APP, APP])}, "JPUSH_APPS", "used twice"),
    ({"JPUSH_APPS": json.dumps([{"name": "x", "app_key": "k"}])}, "JPUSH_APPS", "master_secret"),
    ({"JPUSH_APPS": json.dumps([{**APP, "master_secret": ""}])}, "JPUSH_APPS", "empty"),
    ({"JPUSH_APPS": json.dumps([{**APP, "extra": 1}])}, "JPUSH_APPS", "extra"),
    (
        {"JPUSH_APPS": json.dumps([{**APP, "thresholds": {"sms": {"warning": 5}}}])},
        "JPUSH_APPS",
        "industry",
    ),
    (
        {"JPUSH_APPS": json.dumps([{**APP, "thresholds": {"voice": {"warning": -1}}}])},
        "JPUSH_APPS",
        "greater than or equal to 0",
    ),
    (
        {
            "JPUSH_APPS": json.dumps(
                [{**APP, "thresholds": {"industry": {"warning": 50, "critical": 500}}}]
            )
        },
        "JPUSH_APPS",
        "must not exceed",
    ),
]


@pytest.mark.parametrize(("env", "variable", "reason"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_values_give_one_line_naming_the_variable(
    env: dict[str, str], variable: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**env)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(variable), message
    assert reason in message, message
    assert SECRET not in message


def test_defaults() -> None:
    settings = load()
    assert settings.jpush_base_url == "https://api.sms.jpush.cn"
    assert settings.jpush_timeout == 10
    assert settings.jpush_concurrency == 4
    assert settings.poll_interval == timedelta(minutes=5)
    assert settings.effective_state_url == "sqlite:///sms-balance-bot.db"
    assert (settings.port, settings.host) == (8080, "0.0.0.0")
    assert settings.slack_api_url == "https://slack.com/api/"
    policy = settings.policy()
    assert policy.repeat_interval == timedelta(hours=24)
    assert policy.forecast_horizon == timedelta(days=3)
    assert policy.resolve_margin_pct == 10
    assert policy.failures_before_alert == 3
    assert (policy.drop_percent, policy.burn_factor) == (30, 5)
    assert settings.global_thresholds()[QuotaType.MARKET] == Threshold(1000, 100)


def test_zero_disables_repeat_and_forecast() -> None:
    policy = load(ALERT_REPEAT_INTERVAL="0", ALERT_FORECAST_HORIZON="0").policy()
    assert policy.repeat_interval is None
    assert policy.forecast_horizon is None


def test_zero_disables_sudden_drops_and_burn_alerts() -> None:
    policy = load(ALERT_DROP_PERCENT="0", ALERT_BURN_FACTOR="0").policy()
    assert (policy.drop_percent, policy.burn_factor) == (0, 0)


def test_scopes_and_per_app_overrides() -> None:
    apps = [{**APP, "thresholds": {"industry": {"warning": 500, "critical": 50}, "voice": {}}}]
    settings = load(
        JPUSH_DEV_KEY="dev",
        JPUSH_DEV_SECRET=SECRET,
        JPUSH_APPS=json.dumps(apps),
        ALERT_WARNING_MARKET="0",
    )
    account, shop = settings.require_scopes()
    assert (account.name, account.kind) == ("account", ScopeKind.ACCOUNT)
    assert (shop.name, shop.kind, shop.key) == ("shop", ScopeKind.APP, "k1")
    assert shop.thresholds[QuotaType.INDUSTRY] == Threshold(500, 50)
    assert shop.thresholds[QuotaType.VOICE] == Threshold(1000, 100)
    assert shop.thresholds[QuotaType.MARKET] == Threshold(0, 0)  # switched off globally
    assert SECRET not in repr(shop) and SECRET not in repr(settings)
    assert shop.secret.get_secret_value() == SECRET


def test_no_scope_is_an_error_naming_the_variables() -> None:
    with pytest.raises(ConfigError, match="JPUSH_DEV_KEY"):
        load(JPUSH_APPS="").require_scopes()


def test_redis_url_is_used_when_state_url_is_unset() -> None:
    assert load(REDIS_URL="redis://h:6379/0").effective_state_url == "redis://h:6379/0"
    both = load(REDIS_URL="redis://h:6379/0", STATE_URL="sqlite:///x.db")
    assert both.effective_state_url == "sqlite:///x.db"


def test_rediss_certificate_check_can_be_relaxed() -> None:
    store = store_from_settings(load(STATE_URL="rediss://:pw@h:6380/0", REDIS_TLS_VERIFY="false"))
    assert store.backend._tls_options == {"ssl_cert_reqs": "none"}  # type: ignore[attr-defined]
    strict = store_from_settings(load(STATE_URL="rediss://:pw@h:6380/0"))
    assert strict.backend._tls_options == {}  # type: ignore[attr-defined]


def test_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "bot.env"
    env_file.write_text(f"JPUSH_DEV_KEY=dev\nJPUSH_DEV_SECRET={SECRET}\nPOLL_INTERVAL=2m\n")
    settings = load_settings(env_file)
    assert settings.poll_interval == timedelta(minutes=2)
    assert [s.name for s in settings.require_scopes()] == ["account"]
    with pytest.raises(ConfigError, match="--env-file"):
        load_settings(tmp_path / "missing.env")


def test_empty_values_count_as_unset(tmp_path: Path) -> None:
    env_file = tmp_path / "bot.env"
    env_file.write_text("JPUSH_DEV_KEY=dev\nJPUSH_DEV_SECRET=x\nSLACK_BOT_TOKEN=\nPOLL_INTERVAL=\n")
    settings = load_settings(env_file)
    assert settings.slack_bot_token is None
    assert settings.poll_interval == timedelta(minutes=5)
