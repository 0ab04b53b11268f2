"""The error tree. Retry decisions are made by branch, never by string matching.

BotError
├── ConfigError                  bad settings: one line naming the variable, exit 3 for `check`
├── JPushError                   a scope could not be read (never read as a zero balance)
│   ├── JPushConfigError         50001 missing auth, 50002 auth failed, 50008 SMS not enabled
│   │                            -> no retry, alert at once
│   ├── JPushRequestError        50016, 50017, 50018, any other 4xx -> no retry, report
│   ├── JPushMalformedResponse   2xx whose body is not the documented shape -> no retry, report
│   └── JPushTransientError      -> retried with jittered backoff inside a time budget
│       ├── JPushRateLimited     50009 out of frequency
│       ├── JPushServerError     50019 and any other 5xx (also an HTML 502 page)
│       └── JPushNetworkError    timeouts, refused or reset connections
├── StoreError                   the state store is unreachable or refused a write
└── DeliveryError                Slack did not take a message; it stays queued
    ├── DeliveryRetryable        429 (with retry_after), 5xx, network
    │   └── DeliveryPaced        our own pacing says "not yet": no attempt was made
    └── DeliveryRefused          invalid_auth, channel_not_found, ...: a configuration error

(JPush's 50033 "app quota not assigned" is not an error: that scope reads as unassigned.)
"""

from __future__ import annotations


class BotError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(BotError):
    """The configuration is unusable; the message is one line and never holds a secret."""


class JPushError(BotError):
    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class JPushConfigError(JPushError):
    """Credentials or account set-up are wrong; retrying cannot help."""


class JPushRequestError(JPushError):
    """JPush rejected the request itself (a bug on our side or an API change)."""


class JPushMalformedResponse(JPushError):
    """A success status with a body that is not the documented shape."""


class JPushTransientError(JPushError):
    """Worth retrying: the same request may succeed in a moment."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after


class JPushRateLimited(JPushTransientError):
    pass


class JPushServerError(JPushTransientError):
    pass


class JPushNetworkError(JPushTransientError):
    pass


class StoreError(BotError):
    """The state store could not be reached or refused the operation."""


class DeliveryError(BotError):
    pass


class DeliveryRetryable(DeliveryError):
    """Try again later. `maybe_sent`: no answer came back, so the message may have arrived."""

    def __init__(self, message: str, *, retry_after: float | None = None, maybe_sent: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.maybe_sent = maybe_sent


class DeliveryPaced(DeliveryRetryable):
    """Nothing was sent: the destination's rate limit leaves no slot for `retry_after` s."""


class DeliveryRefused(DeliveryError):
    """Slack refused for a reason retrying will not fix (token, channel, webhook revoked)."""

    def __init__(self, message: str, *, reason: str):
        super().__init__(message)
        self.reason = reason
