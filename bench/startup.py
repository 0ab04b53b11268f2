"""How fast `sms-balance-bot serve` comes up, and how much memory it holds once idle.

    /work/venv/bin/python bench/startup.py [--quick]

1. Five times (three with --quick): launch the console script with a fresh sqlite STATE_URL in a
   temporary directory and time, from the launch, (a) the port accepting TCP connections
   (goal < 1.5 s) and (b) /healthz reporting a completed poll cycle (`last_cycle_at` set).
   It is then stopped with SIGTERM, which must exit 0.
2. Once with 200 apps configured: the idle server's resident memory (VmRSS from
   /proc/PID/status) after its first cycle (goal < 80 MB).

The JPush simulator runs inside this process, on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from _common import (
    BOT,
    bench_simulator,
    bot_env,
    free_port,
)

from bot.simulator import JPushSimulator

GOAL_BIND_S = 1.5
GOAL_RSS_MB = 80.0
GOAL_STOP_S = 20.0  # well inside the platform's 30 s between SIGTERM and SIGKILL
SMALL_APPS = 2
LARGE_APPS = 200
PROBE_EVERY = 0.002
HEALTH_EVERY = 0.005


@dataclass
class Start:
    bind_s: float
    cycle_s: float
    stop_s: float
    exit_code: int
    rss_mb: float
    hwm_mb: float


async def _accepting(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _cycle_done(http: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, ValueError):
        return False
    return isinstance(body, dict) and body.get("last_cycle_at") is not None


async def _until(
    check: Callable[[], Awaitable[bool]],
    process: asyncio.subprocess.Process,
    what: str,
    step: float,
) -> None:
    deadline = time.monotonic() + 30
    while not await check():
        if process.returncode is not None:
            raise SystemExit(f"FAILED: the bot exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"FAILED: no {what} within 30 s")
        await asyncio.sleep(step)


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


async def start_once(sim: JPushSimulator, apps: int, idle_before_rss: float) -> Start:
    assert sim.base_url is not None
    before = sim.stats.requests
    result = await _start_once(sim.base_url, apps, idle_before_rss)
    # A cycle that completed without reading JPush would make the timing meaningless.
    if sim.stats.requests - before < apps + 1:
        raise SystemExit(f"FAILED: the first cycle read {sim.stats.requests - before} scopes")
    return result


async def _start_once(base_url: str, apps: int, idle_before_rss: float) -> Start:
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        # Opened before the clock starts; closed in the finally below.
        log = open(workdir / "bot.log", "wb")  # noqa: ASYNC230, SIM115
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            str(BOT),
            "serve",
            cwd=workdir,  # no stray .env gets read
            env=bot_env(base_url, apps, workdir, port),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await _until(lambda: _accepting(port), process, "open port", PROBE_EVERY)
            bind_s = time.perf_counter() - started
            async with aiohttp.ClientSession() as http:
                await _until(
                    lambda: _cycle_done(http, port), process, "completed cycle", HEALTH_EVERY
                )
            cycle_s = time.perf_counter() - started
            await asyncio.sleep(idle_before_rss)
            rss, hwm = memory_mb(process.pid)
            stopping = time.perf_counter()
            process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.wait_for(process.wait(), timeout=25)
            stop_s = time.perf_counter() - stopping
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            log.close()
        if exit_code != 0:
            tail = (workdir / "bot.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"FAILED: SIGTERM exit status {exit_code}\n{tail}")
        return Start(bind_s, cycle_s, stop_s, exit_code, rss, hwm)


def _row(label: str, values: list[float], unit: str = "s") -> str:
    return (
        f"{label:<34} min {min(values):6.3f} {unit}  median {statistics.median(values):6.3f}"
        f" {unit}  max {max(values):6.3f} {unit}"
    )


async def run(repeats: int) -> int:
    small = bench_simulator(SMALL_APPS)
    await small.start()
    large = bench_simulator(LARGE_APPS)
    await large.start()
    try:
        print(f"`{BOT.name} serve`, {SMALL_APPS + 1} scopes, sqlite STATE_URL, {repeats} runs")
        runs = []
        for i in range(repeats):
            result = await start_once(small, SMALL_APPS, idle_before_rss=0.0)
            runs.append(result)
            print(
                f"  run {i + 1}: port open {result.bind_s:.3f} s, first cycle"
                f" {result.cycle_s:.3f} s, SIGTERM -> exit {result.exit_code} in"
                f" {result.stop_s:.3f} s (VmRSS {result.rss_mb:.1f} MB)",
                flush=True,
            )
        print(_row("launch -> port accepting", [r.bind_s for r in runs]))
        print(_row("launch -> first cycle complete", [r.cycle_s for r in runs]))
        print(_row("SIGTERM -> exit 0", [r.stop_s for r in runs]))
        print()
        big = await start_once(large, LARGE_APPS, idle_before_rss=2.0)
        print(
            f"{LARGE_APPS} apps + account: port open {big.bind_s:.3f} s, first cycle"
            f" {big.cycle_s:.3f} s; idle after the first cycle: VmRSS {big.rss_mb:.1f} MB"
            f" (peak VmHWM {big.hwm_mb:.1f} MB)"
        )
        slowest = max(r.bind_s for r in runs)
        slowest_stop = max(r.stop_s for r in runs)
        goals = [
            (
                f"SIGTERM -> exit 0 within {GOAL_STOP_S:.0f} s (slowest {slowest_stop:.3f} s)",
                slowest_stop < GOAL_STOP_S,
            ),
            (
                f"port accepting < {GOAL_BIND_S} s in every run (slowest {slowest:.3f} s)",
                slowest < GOAL_BIND_S,
            ),
            (
                f"idle RSS with {LARGE_APPS} apps < {GOAL_RSS_MB:.0f} MB ({big.rss_mb:.1f} MB)",
                big.rss_mb < GOAL_RSS_MB,
            ),
        ]
        print()
        for text, passed in goals:
            print(f"  {'PASS' if passed else 'FAIL'}  {text}")
        return 0 if all(passed for _, passed in goals) else 1
    finally:
        await small.stop()
        await large.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="three runs instead of five")
    args = parser.parse_args()
    return asyncio.run(run(3 if args.quick else 5))


if __name__ == "__main__":
    sys.exit(main())
