"""The language tables by code: adding a language is adding its table here."""

from __future__ import annotations

from bot.render.text import Lang
from bot.render.text_en import EN
from bot.render.text_zh import ZH_CN

DEFAULT_LANGUAGE = "en"

LANGUAGES: dict[str, Lang] = {EN.code: EN, ZH_CN.code: ZH_CN}


def lang_for(code: str) -> Lang:
    try:
        return LANGUAGES[code]
    except KeyError:
        known = ", ".join(sorted(LANGUAGES))
        raise ValueError(f"unknown message language {code!r} (known: {known})") from None
