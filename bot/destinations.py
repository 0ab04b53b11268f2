"""The chat robots alerts can go to beside Slack, by the name their outbox queue uses."""

from __future__ import annotations

from enum import StrEnum


class ChatKind(StrEnum):
    DINGTALK = "dingtalk"
    FEISHU = "feishu"
    WECOM = "wecom"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {ChatKind.DINGTALK: "DingTalk", ChatKind.FEISHU: "Feishu", ChatKind.WECOM: "WeCom"}
