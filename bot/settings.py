"""Configuration, read once at the edge (the CLI) and passed in as a value.

Every secret is a SecretStr; no error message built here ever includes an input value.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from datetime import UTC, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis.asyncio as aioredis
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.alerts import Policy
from bot.errors import ConfigError
from bot.quota import QUOTA_TYPES, QuotaType, Scope, ScopeKind, Threshold
from bot.render.format import Locale

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_APP_NAME = re.compile(r"^[a-z0-9_-]+$")
# Nothing the bot waits for or looks back over is longer than this; it also keeps every
# date computed from a duration far inside datetime's range.
MAX_DURATION = timedelta(days=400)
MAX_POLL_INTERVAL = timedelta(days=1)
MAX_JPUSH_TIMEOUT = 300.0
# Thresholds are compared with balances, which JPush reports as 64-bit integers.
MAX_THRESHOLD = 2**63 - 1
_HOSTNAME = re.compile(r"^(?=.{1,253}\.?$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")
_CHANNEL_NAME = re.compile(r"^[^\s\x00-\x1f\x7f]{1,80}$")


def parse_duration(value: object, limit: timedelta = MAX_DURATION) -> timedelta:
    """`90`, `30s`, `5m`, `6h`, `1d` (or a timedelta / number of seconds) -> timedelta.

    Raises ValueError for anything else, and for more than `limit`.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90, 30s, 5m, 6h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).lower())
        if not match:
            raise ValueError("expected a duration such as 90, 30s, 5m, 6h or 1d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > limit.total_seconds():
        raise ValueError(f"must be at most {_describe_duration(limit)}")
    return timedelta(seconds=seconds)


def _describe_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PollDuration = Annotated[
    timedelta, BeforeValidator(lambda value: parse_duration(value, MAX_POLL_INTERVAL))
]


_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_MENTION = re.compile(r"^(<!here>|<!channel>|<!subteam\^[A-Z0-9]+>|<@[UW][A-Z0-9]+>)$")
_HH_MM = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


class ThresholdOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    warning: int | None = Field(default=None, ge=0, le=MAX_THRESHOLD)
    critical: int | None = Field(default=None, ge=0, le=MAX_THRESHOLD)


class AppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    app_key: str = Field(min_length=1)
    master_secret: SecretStr
    thresholds: dict[QuotaType, ThresholdOverride] = Field(default_factory=dict)
    # A Slack channel id (C…/G…) for this app's incidents instead of SLACK_CHANNEL.
    channel: str | None = None

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not _CHANNEL.match(value):
            raise ValueError("channel must be a Slack channel id such as C0123456789")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _APP_NAME.match(value):
            raise ValueError("app names may only use a-z, 0-9, _ and -")
        if value == "account":
            raise ValueError("'account' is reserved for the account scope")
        return value

    @field_validator("master_secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("master_secret is empty")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=None,
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
    )

    jpush_dev_key: str | None = None
    jpush_dev_secret: SecretStr | None = None
    # Kept raw and parsed by hand so a broken value gives a message that names JPUSH_APPS
    # and never echoes the (secret-bearing) JSON back.
    jpush_apps: SecretStr | None = None
    jpush_base_url: str = "https://api.sms.jpush.cn"
    jpush_timeout: float = Field(default=10.0, gt=0, le=MAX_JPUSH_TIMEOUT, allow_inf_nan=False)
    jpush_concurrency: int = Field(default=4, ge=1, le=1000)

    alert_warning_balance: int = Field(default=1000, ge=0, le=MAX_THRESHOLD)
    alert_warning_voice: int = Field(default=1000, ge=0, le=MAX_THRESHOLD)
    alert_warning_industry: int = Field(default=1000, ge=0, le=MAX_THRESHOLD)
    alert_warning_market: int = Field(default=1000, ge=0, le=MAX_THRESHOLD)
    alert_critical_balance: int = Field(default=100, ge=0, le=MAX_THRESHOLD)
    alert_critical_voice: int = Field(default=100, ge=0, le=MAX_THRESHOLD)
    alert_critical_industry: int = Field(default=100, ge=0, le=MAX_THRESHOLD)
    alert_critical_market: int = Field(default=100, ge=0, le=MAX_THRESHOLD)
    alert_repeat_interval: Duration = timedelta(hours=24)
    alert_resolve_margin: float = Field(default=10.0, ge=0, le=1000, allow_inf_nan=False)
    alert_failures_before_alert: int = Field(default=3, ge=1, le=1000)
    alert_forecast_horizon: Duration = timedelta(days=3)
    alert_drop_percent: float = Field(default=30.0, ge=0, le=100)
    alert_burn_factor: float = Field(default=5.0, ge=0, le=1000)
    history_retention: Duration = timedelta(days=14)

    poll_interval: PollDuration = timedelta(minutes=5)

    slack_bot_token: SecretStr | None = None
    slack_channel: str | None = None
    slack_webhook_url: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_signing_secret: SecretStr | None = None
    # App-level token (xapp-...): slash commands and interactivity over Socket Mode.
    slack_app_token: SecretStr | None = None
    # Put in front of messages that tell the channel about a critical level.
    slack_mention_critical: str | None = None
    # HH:MM in TZ: the daily summary. Unset: no summary.
    digest_at: str | None = None

    # Chat robots beside Slack; each URL carries its credential, so all of these are secret.
    dingtalk_webhook_url: SecretStr | None = None
    dingtalk_secret: SecretStr | None = None
    feishu_webhook_url: SecretStr | None = None
    feishu_secret: SecretStr | None = None
    wecom_webhook_url: SecretStr | None = None
    message_language: Literal["en", "zh-CN"] = "en"
    # Displayed times; an IANA zone name such as Asia/Shanghai. Unset: UTC.
    tz: str | None = None

    state_url: str | None = None
    redis_url: SecretStr | None = None
    redis_tls_verify: bool = True

    # When set, GET /metrics answers only `Authorization: Bearer <token>`.
    metrics_token: SecretStr | None = None

    port: int = Field(default=8080, ge=0, le=65535)
    host: str = "0.0.0.0"
    log_level: str = "INFO"
    log_format: str = "text"

    # Parsed from JPUSH_APPS by the validators below; private, so no variable can set it.
    _apps: list[AppConfig] = PrivateAttr(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        # A value that is not valid UTF-8 (the OS hands those over as lone surrogates) would
        # only fail when first sent somewhere: refuse it now, naming the variable.
        if isinstance(data, dict):
            for name, value in data.items():
                raw = value.get_secret_value() if isinstance(value, SecretStr) else value
                if isinstance(raw, str) and not _encodable(raw):
                    raise _named(str(name).upper(), "is not valid UTF-8 text")
        return data

    @field_validator("poll_interval")
    @classmethod
    def _positive_interval(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("alert_burn_factor")
    @classmethod
    def _burn_factor(cls, value: float) -> float:
        # It resolves under half the factor: below 2 that is under the usual burn itself.
        if 0 < value < 2:
            raise ValueError("must be 0 (off) or at least 2")
        return value

    @field_validator("history_retention")
    @classmethod
    def _retention(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=1):
            raise ValueError("must be at least 1h")
        return value

    @field_validator("jpush_base_url", "slack_api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        _check_http_url(value)
        return value

    @field_validator("slack_webhook_url")
    @classmethod
    def _webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_http_url(value.get_secret_value(), credentials_allowed=False)
        return value

    @field_validator("slack_bot_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        # It travels in an HTTP header: anything but visible ASCII would fail on every send.
        if value is not None and not _TOKEN.match(value.get_secret_value()):
            raise ValueError("must be a token (visible ASCII characters, no spaces)")
        return value

    @field_validator("slack_channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not _CHANNEL_NAME.match(value):
            raise ValueError("must be a channel ID or name (at most 80 characters, no spaces)")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        _check_host(value)
        return value

    @field_validator("dingtalk_webhook_url", "feishu_webhook_url", "wecom_webhook_url")
    @classmethod
    def _secret_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_http_url(value.get_secret_value())
        return value

    @field_validator("message_language", mode="before")
    @classmethod
    def _language(cls, value: object) -> object:
        if isinstance(value, str):
            normal = value.strip().replace("_", "-").lower()
            if normal in ("en", "en-us", "en-gb"):
                return "en"
            if normal in ("zh-cn", "zh", "zh-hans", "zh-hans-cn"):
                return "zh-CN"
        raise ValueError("must be 'en' or 'zh-CN'")

    @field_validator("tz")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # POSIX allows a leading ':' ("TZ=:Asia/Shanghai").
        name = value.strip().removeprefix(":")
        if not name:
            return None
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone name such as Asia/Shanghai") from None
        return name

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError(
                "must be an app-level token (xapp-...), from Basic Information > App-Level Tokens"
            )
        return value

    @field_validator("slack_mention_critical")
    @classmethod
    def _mention(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not _MENTION.match(value):
            raise ValueError("must be one of <!here>, <!channel>, <!subteam^ID> or <@USERID>")
        return value

    @field_validator("digest_at")
    @classmethod
    def _digest_at(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        match = _HH_MM.match(value.strip())
        if not match:
            raise ValueError("must be a time of day as HH:MM (24-hour clock), e.g. 09:00")
        return f"{int(match[1]):02d}:{match[2]}"

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        value = value.lower()
        if value not in {"text", "json"}:
            raise ValueError("must be 'text' or 'json'")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        if bool(self.jpush_dev_key) != bool(self.jpush_dev_secret):
            missing = "JPUSH_DEV_SECRET" if self.jpush_dev_key else "JPUSH_DEV_KEY"
            raise _named(missing, "is required when the other account credential is set")
        for quota_type in QUOTA_TYPES:
            warning = getattr(self, f"alert_warning_{quota_type.value}")
            critical = getattr(self, f"alert_critical_{quota_type.value}")
            if warning and critical > warning:
                raise _named(
                    f"ALERT_CRITICAL_{quota_type.value.upper()}",
                    f"({critical}) must not exceed ALERT_WARNING_{quota_type.value.upper()}"
                    f" ({warning})",
                )
        raw_apps = self.jpush_apps.get_secret_value() if self.jpush_apps is not None else None
        self._apps = _parse_apps(raw_apps, self.global_thresholds())
        if self.slack_bot_token and not self.slack_channel:
            raise _named("SLACK_CHANNEL", "is required when SLACK_BOT_TOKEN is set")
        for secret, url in (
            ("DINGTALK_SECRET", "DINGTALK_WEBHOOK_URL"),
            ("FEISHU_SECRET", "FEISHU_WEBHOOK_URL"),
        ):
            if getattr(self, secret.lower()) is not None and getattr(self, url.lower()) is None:
                raise _named(url, f"is required when {secret} is set")
        variable = "STATE_URL" if self.state_url else "REDIS_URL"
        _check_state_url(variable, self.effective_state_url)
        return self

    @property
    def apps(self) -> list[AppConfig]:
        return self._apps

    def secret_values(self) -> list[str]:
        """Every secret value configured, for the log filter to mask wherever it appears."""
        found: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                found.append(value.get_secret_value())
        found += [app.master_secret.get_secret_value() for app in self._apps]
        for url in (self.state_url, self.effective_state_url):
            password = _url_password(url) if url else None
            if password:
                found.append(password)
        return [value for value in found if value]

    def global_thresholds(self) -> dict[QuotaType, Threshold]:
        result = {}
        for t in QUOTA_TYPES:
            warning = getattr(self, f"alert_warning_{t.value}")
            critical = getattr(self, f"alert_critical_{t.value}")
            # ALERT_WARNING_X=0 switches the type off entirely.
            result[t] = Threshold(warning, critical) if warning else Threshold(0, 0)
        return result

    @property
    def timezone(self) -> ZoneInfo | None:
        return ZoneInfo(self.tz) if self.tz else None

    def locale(self) -> Locale:
        """The words and clock face every human-facing text is rendered with."""
        return Locale.of(self.message_language, self.timezone or UTC)

    @property
    def effective_state_url(self) -> str:
        if self.state_url:
            return self.state_url
        if self.redis_url:
            return self.redis_url.get_secret_value()
        return "sqlite:///sms-balance-bot.db"

    def scopes(self) -> list[Scope]:
        result: list[Scope] = []
        if self.jpush_dev_key and self.jpush_dev_secret:
            result.append(
                Scope(
                    name="account",
                    kind=ScopeKind.ACCOUNT,
                    key=self.jpush_dev_key,
                    secret=self.jpush_dev_secret,
                    thresholds=self.global_thresholds(),
                )
            )
        glob = self.global_thresholds()
        for app in self.apps:
            result.append(
                Scope(
                    name=app.name,
                    kind=ScopeKind.APP,
                    key=app.app_key,
                    secret=app.master_secret,
                    thresholds=_merge_thresholds(glob, app.thresholds),
                )
            )
        return result

    def require_scopes(self) -> list[Scope]:
        scopes = self.scopes()
        if not scopes:
            raise ConfigError(
                "JPUSH_DEV_KEY/JPUSH_DEV_SECRET or JPUSH_APPS: no scope configured;"
                " set account credentials, at least one app, or both"
            )
        return scopes

    def policy(self) -> Policy:
        repeat = self.alert_repeat_interval
        horizon = self.alert_forecast_horizon
        return Policy(
            repeat_interval=repeat if repeat.total_seconds() > 0 else None,
            resolve_margin_pct=self.alert_resolve_margin,
            failures_before_alert=self.alert_failures_before_alert,
            forecast_horizon=horizon if horizon.total_seconds() > 0 else None,
            drop_percent=self.alert_drop_percent,
            burn_factor=self.alert_burn_factor,
        )


def _merge_thresholds(
    glob: dict[QuotaType, Threshold], overrides: dict[QuotaType, ThresholdOverride]
) -> dict[QuotaType, Threshold]:
    merged = dict(glob)
    for quota_type, override in overrides.items():
        base = glob[quota_type]
        warning = override.warning if override.warning is not None else base.warning
        critical = override.critical if override.critical is not None else base.critical
        merged[quota_type] = Threshold(warning, critical) if warning else Threshold(0, 0)
    return merged


def _parse_apps(raw: str | None, glob: dict[QuotaType, Threshold]) -> list[AppConfig]:
    if raw is None or not raw.strip():
        return []
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _named(
            "JPUSH_APPS", f"is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, list):
        raise _named("JPUSH_APPS", "must be a JSON array of app objects")
    apps: list[AppConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise _named("JPUSH_APPS", f"item {index} must be an object")
        try:
            app = AppConfig.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            label = item.get("name") if isinstance(item.get("name"), str) else None
            who = f"app {label!r}" if label and _APP_NAME.match(label) else f"item {index}"
            raise _named("JPUSH_APPS", f"{who}: {where}: {_clean(first['msg'])}") from None
        if app.name in seen:
            raise _named("JPUSH_APPS", f"app name {app.name!r} is used twice")
        seen.add(app.name)
        for quota_type, threshold in _merge_thresholds(glob, app.thresholds).items():
            if threshold.warning and threshold.critical > threshold.warning:
                raise _named(
                    "JPUSH_APPS",
                    f"app {app.name!r}: {quota_type.value} critical ({threshold.critical})"
                    f" must not exceed warning ({threshold.warning})",
                )
        apps.append(app)
    return apps


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _check_http_url(value: str, *, credentials_allowed: bool = False) -> None:
    """Raise ValueError unless `value` is a whole http(s) URL the HTTP client will accept.

    The reasons never quote the value: a webhook URL's path is its secret.
    """
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("must be an http:// or https:// URL (no spaces or control characters)")
    try:
        parts = urlsplit(value)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise ValueError("must be an http:// or https:// URL (it does not parse)") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ValueError("must be an http:// or https:// URL")
    if port == 0:
        raise ValueError("must be an http:// or https:// URL (port 0 is not a port)")
    if not credentials_allowed and (parts.username is not None or parts.password is not None):
        raise ValueError("must not carry credentials (user:password@)")
    try:
        _check_host(host)
    except ValueError:
        raise ValueError("must be an http:// or https:// URL (the host is not valid)") from None


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _check_host(value: str) -> None:
    try:
        ipaddress.ip_address(value.strip("[]") if value.startswith("[") else value)
        return
    except ValueError:
        pass
    # Dotted numbers that are not an IPv4 address (256.1.1.1) are a typo, not a name.
    if re.fullmatch(r"[0-9.]+", value) or not _HOSTNAME.match(value):
        raise ValueError("must be an IP address or a host name")


def _check_state_url(variable: str, url: str) -> None:
    """Parse the store URL completely now, so that nothing fails on it once the bot runs."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "memory":
        return
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise _named(variable, "expected sqlite:///PATH (sqlite:////PATH if absolute)")
        return
    if scheme not in ("redis", "rediss"):
        raise _named(variable, "must start with sqlite:///, redis:// or rediss://")
    try:
        # The same parser, and the same connection class, the Redis store uses: an unknown
        # query option or a bad port fails here, not at the first connect.
        aioredis.ConnectionPool.from_url(url).make_connection()  # type: ignore[no-untyped-call]
    except Exception:
        raise _named(variable, f"is not a valid {scheme}:// URL") from None


class _NamedError(ValueError):
    """A validation failure that already knows which variable it is about."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


def _named(variable: str, reason: str) -> _NamedError:
    return _NamedError(variable, reason)


def _clean(message: str) -> str:
    # pydantic prefixes custom messages with "Value error, "; operators don't need that.
    return message.removeprefix("Value error, ")


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from the environment (and env file) or raise ConfigError with one line.

    The line names the variable and says why; it never contains the offending value, which
    may be a secret.
    """
    if env_file is not None and not Path(env_file).is_file():
        raise ConfigError(f"--env-file: {env_file} does not exist or is not a file")
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except _NamedError as exc:
        raise ConfigError(f"{exc.variable}: {exc.reason}") from None
    except Exception as exc:
        # pydantic-settings raises SettingsError for undecodable values; keep it to one line,
        # name the variable when it says which, and leave out the value itself.
        found = re.search(r'field "([a-z0-9_]+)"', str(exc))
        where = found.group(1).upper() if found else "configuration"
        raise ConfigError(f"{where}: could not be read ({type(exc).__name__})") from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    ctx = first.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, _NamedError):
        return f"{inner.variable}: {inner.reason}"
    loc = [str(p) for p in first["loc"]]
    variable = loc[0].upper() if loc else "configuration"
    return f"{variable}: {_clean(first['msg'])}"
