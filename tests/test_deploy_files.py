"""The Heroku deploy files agree with the settings and with pyproject.toml.

Heroku's Python buildpack installs `requirements.txt` (the runtime lock) and the Heroku Button
reads `app.json`; both are written by hand or by a tool from other files, so drift is caught here.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
# Variables the platform sets itself; app.json must not ask for them.
PROVIDED_BY_HEROKU = {
    "PORT": "the router assigns $PORT to every web dyno",
    "REDIS_URL": "the heroku-redis add-on sets it",
}
_ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)(?:\s*;\s*(.+))?$")


def example_variables() -> set[str]:
    """Every variable settings.example.env sets or shows (commented-out examples included)."""
    return set(_ASSIGNMENT.findall((ROOT / "settings.example.env").read_text()))


def app_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "app.json").read_text())
    return data


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock_lines() -> list[str]:
    """The requirement lines of requirements.txt, without comments and annotations."""
    lines = []
    for raw in (ROOT / "requirements.txt").read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def lock_pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in lock_lines():
        if line == ".":
            continue
        match = _PIN.match(line)
        assert match, f"requirements.txt: {line!r} is not an exact pin (name==version)"
        pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


def test_app_json_names_every_setting_and_nothing_else() -> None:
    env = set(app_json()["env"])
    expected = example_variables() - set(PROVIDED_BY_HEROKU)
    assert env - expected == set(), "app.json sets variables settings.example.env does not know"
    assert expected - env == set(), "settings.example.env variables missing from app.json"
    assert not env & set(PROVIDED_BY_HEROKU)


def test_app_json_describes_every_setting() -> None:
    for name, spec in app_json()["env"].items():
        assert isinstance(spec, dict), name
        assert len(spec.get("description", "")) >= 10, f"{name} has no description"
        assert isinstance(spec.get("required"), bool), f"{name}: say whether it is required"
        if "value" in spec:
            assert isinstance(spec["value"], str), f"{name}: app.json values are strings"


def test_app_json_provisions_redis_and_a_web_dyno() -> None:
    data = app_json()
    plans = [a if isinstance(a, str) else a["plan"] for a in data["addons"]]
    assert any(p.split(":")[0] == "heroku-redis" for p in plans)
    assert data["formation"]["web"]["quantity"] >= 1
    procfile = (ROOT / "Procfile").read_text()
    assert re.search(r"^web:\s*sms-balance-bot serve\s*$", procfile, re.MULTILINE)


def test_app_json_defaults_are_valid_settings() -> None:
    """The Button's pre-filled values must start a bot (with one scope added)."""
    from bot.settings import load_settings

    values = {
        name.lower(): spec["value"]
        for name, spec in app_json()["env"].items()
        if spec.get("value") and not spec.get("generator")
    }
    settings = load_settings(None, jpush_dev_key="k", jpush_dev_secret="s", **values)
    assert settings.require_scopes()


def test_lock_installs_the_bot_itself() -> None:
    # The "." line installs this project, and with it the `sms-balance-bot` console script
    # that the Procfile runs.
    assert "." in lock_lines()


def test_lock_pins_exactly_the_declared_runtime_dependencies_within_their_ranges() -> None:
    declared = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    pins = lock_pins()
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is declared in pyproject.toml but not locked"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside pyproject.toml's range {requirement.specifier}"
        )
    # Every other pin is there because a declared dependency needs it (uv's annotations say
    # which); a package only the lock knows about means the lock is stale.
    direct = {canonicalize_name(r.name) for r in declared}
    text = (ROOT / "requirements.txt").read_text()
    via_bot = {
        canonicalize_name(name)
        for name, annotation in re.findall(
            r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+[^\n]*\n((?:\s+#.*\n?)+)", text, re.MULTILINE
        )
        if re.search(r"#\s+sms-balance-bot\b|# via sms-balance-bot\b", annotation)
    }
    assert via_bot == direct, "requirements.txt is stale: regenerate it (see the README)"


def test_lock_holds_no_dev_tool() -> None:
    dev = {
        canonicalize_name(Requirement(r).name)
        for r in pyproject()["project"]["optional-dependencies"]["dev"]
    }
    runtime = {
        canonicalize_name(Requirement(r).name) for r in pyproject()["project"]["dependencies"]
    }
    assert not (set(lock_pins()) & (dev - runtime))


def test_python_version_satisfies_requires_python() -> None:
    pinned = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", pinned), "Heroku reads a major version such as 3.11"
    requires = Requirement(f"x{pyproject()['project']['requires-python']}").specifier
    assert requires.contains(Version(pinned))
