"""The shape of one language's table: every word a human reads, as data.

A language is one `Lang` value (see text_en.py). Templates use `str.format` fields named in
the comment beside them. Alert strings hold no Slack markup or emoji: the renderers add those in
their last step, so a destination with another markup reuses every string unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bot.quota import QuotaType, ScopeKind, Status
from bot.render.tones import Tone

DELIVERY_WORDS_EN: Mapping[str, str] = MappingProxyType(
    {
        "4001": "delivered",
        "4005": "quota exhausted",
        "4006": "rate-limited",
        "4002": "blacklisted",
        "4003": "handset problem",
        "4004": "empty number",
        "other": "other",
    }
)


@dataclass(frozen=True, slots=True)
class Lang:
    code: str

    # --- numbers and quota vocabulary ---
    number: Callable[[int], str]  # 121981 -> "121,981"
    type_label: Mapping[QuotaType, str]  # long name, in sentences: "balance (all-purpose)"
    type_name: Mapping[QuotaType, str]  # short name, in lists and tables: "balance"
    status_word: Mapping[Status, str]  # also a level's word, through Level.status
    scope_kind: Mapping[ScopeKind, str]
    scope_title: str  # {scope} {kind}

    # --- durations and times ---
    less_than_a_minute: str
    minutes: tuple[str, str]  # {n}: singular, plural
    hours: tuple[str, str]
    days: tuple[str, str]
    about: str  # {duration}
    ago: str  # {duration}
    just_now: str
    weekdays: tuple[str, str, str, str, str, str, str]  # Monday first
    when_near: str  # {weekday} {time} {zone}: within a week of now
    when_far: str  # {date} {time} {zone}
    clock: str  # {time} {zone}
    rate: str  # {n} per day
    rate_under_one: str

    # --- thresholds, errors, forecasts ---
    threshold_off: str
    threshold_warning: str  # {n}
    threshold_critical: str  # {n}
    threshold_joiner: str
    unknown_error: str
    error_with_code: str  # {message} {code}
    hint_account_auth: str
    hint_app_auth: str  # {scope}
    hint_sms_disabled: str
    hint_config: str
    runs_out: str  # {duration} {when} {rate}: the one phrasing, in alerts and replies
    runs_out_cell: str  # {duration} {when}: under a "runs out" column heading
    not_assigned: str  # a scope whose quota is not assigned (JPush 50033)

    # --- alert messages ---
    labelled: str  # {label} {text}: a quota type and what is said about it
    tone_tag: Mapping[Tone, str]  # beside each event: "CRITICAL"
    tone_count: Mapping[Tone, str]  # in the summary: "2 critical"
    tone_header: Mapping[Tone, str]  # the message header when this tone is the worst
    count: str  # {n} {word}
    as_of: str  # {when}
    digest_title: str  # {day}: the daily summary's heading
    digest_incidents: str  # {lines}: the open incidents under the scopes
    digest_no_incidents: str
    and_more: str  # {n} {names}: scopes left out of a long message
    and_more_events: str  # {n}: events left out of a long fallback text
    new: str
    escalated: str  # {low} {high}
    reminder: str
    reminder_since: str  # {when}
    cannot_read_balance: str
    cannot_read_because: str  # {error}
    with_hint: str  # {text} {hint}
    failing_since: str  # {when}
    readable_again: str
    was_failing_since: str  # {text} {when}
    left: str  # {n}
    value_unknown: str
    no_longer_running_out: str  # {value}
    back_above: str  # {value} {bar} {was}
    bar_above: str  # {n}
    was_level: str  # {level}
    running_out_above: str  # {value} {level} {n}
    at_level: str  # {value} {level}
    below_level: str  # {value} {level} {n}
    per_hour: str  # {n}: a burn per hour
    dropped: str  # {amount} {percent} {period} {value}
    drop_hint_account: str
    drop_hint_app: str
    burning_fast: str  # {now} {factor} {usual}
    burn_hint: str
    burn_back: str  # {now} {usual}
    burn_notable: str  # {now} {factor} {usual}: in replies
    pool_advice: str  # {n} {type} {scope}

    # --- /sms-balance replies ---
    usage_title: str
    usage_lines: tuple[str, ...]
    help_command: str
    known_scopes: str  # {names}
    no_scopes_configured: str
    nothing_to_show: str
    refreshing: str
    refreshing_scope: str  # {scope}
    unknown_word: str  # {word}
    store_down: str  # {error}
    store_down_retrying: str  # {note}
    not_read: str
    not_read_yet: str
    not_read_yet_scope: str  # {scope}
    title_one: str  # {scope} {status}
    title_all: str  # {status}
    reply_footer: str  # {when} {help}
    read_at: str  # {when}
    tried_at: str  # {when}
    stale: str  # {when}
    ago_at: str  # {ago} {clock}
    cannot_read: str  # {error}
    last_known: str  # {items}
    type_value: str  # {type} {n}
    type_value_level: str  # {type} {n} {level}
    type_unassigned: str  # {type}
    scope_summary: str  # {scope} {status} {detail}
    not_assigned_short: str
    not_assigned_code: str

    # --- incidents (one live Slack message per scope) ---
    incident_title_low: str  # {scope}
    incident_title_critical: str  # {scope}
    incident_title_resolved: str  # {scope}
    incident_title_notice: str  # {scope} {what}: a root that only tells (a sudden drop)
    incidents_title_low: str  # {n}: a summary root for several new incidents
    incidents_title_critical: str  # {n}
    incidents_title_resolved: str  # {n}
    incident_opened: str  # {when}
    incident_resolved_at: str  # {when}
    incident_acked: str  # {user} {clock}
    incident_snoozed: str  # {user} {when}
    incident_all_clear: str
    button_ack: str
    button_unack: str
    button_snooze: str
    button_unsnooze: str
    snooze_choices: tuple[str, str, str]  # 1 h, 24 h, 7 d
    notice_ack: str  # {user}
    notice_unack: str  # {user}
    notice_snooze: str  # {user} {when}
    notice_unsnooze: str  # {user}
    notice_snooze_over: str  # {user}
    notice_resolved: str
    action_done: str  # {scope} {what}: a slash command's ack/snooze was recorded
    you: str  # who did it, in the answer to the one who did
    action_nothing_open: str  # {scope}

    # --- the `check` table ---
    table_header: tuple[str, str, str, str, str, str]
    table_footer: str  # {status} {code} {n} {scopes} {when}
    scope_one: str
    scope_many: str

    # Names for time zones by their IANA key where this language has a better one than the
    # zone's abbreviation ("CST" is also US Central): "Asia/Shanghai" -> "北京时间".
    zone_names: Mapping[str, str] = field(default_factory=dict)

    # --- delivery reports (JPush callbacks); a table without them reads English ---
    sends_failing: str = "sends failing: quota exhausted (JPush reports 4005)"
    sends_rate_limited: str = "sends rate-limited (JPush reports 4006)"
    sends_work_again: str = "sends delivered again"
    rate_limit_over: str = "no longer rate-limited (no 4006 for 15 minutes)"
    deliveries: str = "deliveries, last hour: {items}"  # {items}
    delivery_item: str = "{word} {n}"  # {word} {n}
    # JPush status code -> word; codes not named here are summed under "other".
    delivery_words: Mapping[str, str] = field(default_factory=lambda: DELIVERY_WORDS_EN)

    def plural(self, forms: tuple[str, str], n: int) -> str:
        return (forms[0] if n == 1 else forms[1]).format(n=n)
