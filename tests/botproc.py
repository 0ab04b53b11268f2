"""Run the bot as a user would: the console script in a child process, on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

CONSOLE_SCRIPT = str(Path(sys.executable).parent / "sms-balance-bot")

# Variables a developer's shell might carry that would change what the bot does.
_SCRUB = (
    "JPUSH_",
    "ALERT_",
    "SLACK_",
    "STATE_URL",
    "REDIS_URL",
    "POLL_",
    "PORT",
    "HOST",
    "LOG_",
    "METRICS_",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env.update(extra)
    return env


async def wait_until(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class BotProcess:
    """`sms-balance-bot <args>` with its output in files (so pipes never fill)."""

    def __init__(self, args: list[str], env: Mapping[str, str], workdir: Path, name: str = "bot"):
        self.args = args
        self.env = clean_env(env)
        self.workdir = workdir
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self.port = int(env.get("PORT", "0") or 0)
        self._runs = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stdout_path(self) -> Path:
        return self.workdir / f"{self.name}.{self._runs}.out"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"{self.name}.{self._runs}.err"

    async def start(self) -> None:
        self._runs += 1
        out = self.stdout_path.open("wb")
        err = self.stderr_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            CONSOLE_SCRIPT, *self.args, env=self.env, cwd=self.workdir, stdout=out, stderr=err
        )
        out.close()
        err.close()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 10.0) -> None:
        async def up() -> bool:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"bot exited early:\n{self.stderr()}")
            try:
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(f"{self.base_url}/healthz", timeout=aiohttp.ClientTimeout(total=1)),
                ):
                    return True
            except (aiohttp.ClientError, TimeoutError):
                return False

        await wait_until(up, timeout=timeout, what="the bot to bind its port")

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, timeout: float = 25.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout=timeout)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout=timeout)

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.get(self.base_url + path) as r:
            return r.status, await r.json(content_type=None)

    async def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def run_cli(
    args: list[str], env: Mapping[str, str], workdir: Path, timeout: float = 30.0
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CONSOLE_SCRIPT,
        *args,
        env=clean_env(env),
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def slack_headers(body: bytes, secret: str, timestamp: str | None = None) -> dict[str, str]:
    """The headers Slack signs a request with (v0 HMAC over `v0:{timestamp}:{body}`)."""
    timestamp = timestamp or str(int(time.time()))
    base = b"v0:" + timestamp.encode() + b":" + body
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest(),
        "Content-Type": "application/x-www-form-urlencoded",
    }


async def post_slash(
    base_url: str, secret: str, text: str = "", user_id: str | None = None
) -> tuple[int, dict[str, Any]]:
    """A correctly signed /sms-balance request, as Slack sends it; (status, JSON reply)."""
    fields = {"command": "/sms-balance", "text": text}
    if user_id is not None:
        fields["user_id"] = user_id
    body = urlencode(fields).encode()
    async with (
        aiohttp.ClientSession() as s,
        s.post(base_url + "/slack/commands", data=body, headers=slack_headers(body, secret)) as r,
    ):
        return r.status, await r.json(content_type=None)


async def post_interaction(base_url: str, secret: str, payload: dict[str, Any]) -> tuple[int, str]:
    """A correctly signed interactivity request (a button press); (status, body)."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            base_url + "/slack/interactions", data=body, headers=slack_headers(body, secret)
        ) as r,
    ):
        return r.status, await r.text()


def button_press(
    scope: str, action_id: str, user: str = "U0ONCALL", option: str | None = None
) -> dict[str, Any]:
    """The block_actions payload Slack sends when a root's button or menu is used."""
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": f"incident:{scope}",
        "type": "static_select" if option else "button",
    }
    if option is not None:
        action["selected_option"] = {"value": option}
    else:
        action["value"] = scope
    return {
        "type": "block_actions",
        "user": {"id": user},
        "actions": [action],
        "response_url": "https://hooks.slack.com/actions/T/1/x",
    }
