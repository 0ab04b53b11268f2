"""`sms-balance-bot demo` as a newcomer runs it: the printed curl line works, alerts appear."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from botproc import BotProcess, free_port, wait_until


async def test_demo_answers_the_printed_curl_line_and_alerts(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    demo = BotProcess(["demo"], {"PORT": str(free_port()), "TMPDIR": str(scratch)}, tmp_path)
    await demo.start()
    try:
        await wait_until(lambda: "curl -s -X POST" in demo.stdout(), what="the curl line")
        line = next(x.strip() for x in demo.stdout().splitlines() if x.strip().startswith("curl "))
        proc = await asyncio.create_subprocess_shell(
            line, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=10)
        assert proc.returncode == 0, err
        reply = json.loads(out)
        assert reply["response_type"] == "ephemeral"
        assert "shop" in json.dumps(reply)

        await wait_until(
            lambda: "[WARNING]" in demo.stdout() or "[CRITICAL]" in demo.stdout(),
            timeout=30,
            what="an alert on the terminal",
        )
        # The shop runs dry; the simulator's delivery reports raise the sends-failing alert.
        await wait_until(
            lambda: "ran dry" in demo.stdout(), timeout=90, what="the shop running dry"
        )
        await wait_until(
            lambda: "sends failing: quota exhausted" in demo.stdout(),
            timeout=10,
            what="the delivery-report alert",
        )
        assert "13800138000" not in demo.stdout() + demo.stderr()
        assert any(scratch.iterdir())  # the throwaway state lives there while it runs
        assert await demo.terminate() == 0
        assert list(scratch.iterdir()) == []  # ... and is gone afterwards
    finally:
        await demo.stop_quietly()
