"""Does scraping /metrics slow polling? A 200-app bot at POLL_INTERVAL=1s beside 10 scrapers.

    .venv/bin/python bench/metrics_scrape.py [--quick] [--apps 200] [--clients 10] [--seconds 30]

`sms-balance-bot serve` (sqlite in a temp dir) polls the JPush simulator (in this process)
every second. Two phases of the same length, in the same run: a baseline with nobody
scraping, then 10 clients (in a separate process, so they never share an event loop with
the simulator) GET /metrics back to back as fast as they can. In both, /healthz is asked
every half second, and the time between two reads of the account scope is the cycle
interval. Goals: the loaded median interval within 20 % (+50 ms) of the baseline, no interval
over 3 poll intervals (what /healthz calls stale), every /healthz 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BOT, DEV_KEY, bench_simulator, bot_env, free_port

INTERVAL = 1.0


@dataclass
class Phase:
    name: str
    intervals: list[float] = field(default_factory=list)
    health: Counter[int] = field(default_factory=Counter)
    scrapes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def row(self) -> str:
        iv = sorted(self.intervals)
        rate = sum(self.scrapes.values()) / self.seconds if self.seconds else 0.0
        if len(iv) < 1:
            return (
                f"{self.name:<10} NO CYCLE COMPLETED in {self.seconds:g} s  /healthz"
                f" {dict(self.health)}  scrapes/s {rate:.0f}"
            )
        p95 = iv[int(0.95 * (len(iv) - 1))]
        return (
            f"{self.name:<10} cycles {len(iv):>3}  interval median {statistics.median(iv):.3f} s"
            f"  p95 {p95:.3f} s  max {max(iv):.3f} s  /healthz {dict(self.health)}"
            f"  scrapes/s {rate:.0f} {dict(self.scrapes) if self.scrapes else ''}"
        )


async def scrape(url: str, clients: int, seconds: float) -> Counter[str]:
    """Scraper mode (run in its own process)."""
    found: Counter[str] = Counter()
    end = time.monotonic() + seconds

    async def one(http: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            try:
                async with http.get(url) as response:
                    await response.read()
                    found[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError):
                found["error"] += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(one(http) for _ in range(clients)))
    return found


async def watch(sim_count: object, base_url: str, phase: Phase, seconds: float) -> None:
    """Record the time between account reads, and /healthz every half second."""
    counts = sim_count  # a callable returning the account's request count
    assert callable(counts)
    end = time.monotonic() + seconds
    last_count, last_at = counts(), None
    next_health = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < end:
            now = time.monotonic()
            count = counts()
            if count != last_count:
                if last_at is not None:
                    phase.intervals.append(now - last_at)
                last_count, last_at = count, now
            if now >= next_health:
                next_health = now + 0.5
                try:
                    async with http.get(
                        base_url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)
                    ) as r:
                        phase.health[r.status] += 1
                except (aiohttp.ClientError, TimeoutError):
                    phase.health[0] += 1
            await asyncio.sleep(0.01)
    phase.seconds = seconds


async def run(args: argparse.Namespace) -> int:
    sim = bench_simulator(args.apps)
    base = await sim.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = bot_env(base, args.apps, Path(tmp), port, str(INTERVAL))
        err = _log_file(Path(tmp))
        proc = await asyncio.create_subprocess_exec(
            str(BOT), "serve", env=env, stderr=err, stdout=err
        )
        try:
            account = lambda: sim.stats.requests_by_key.get(DEV_KEY, 0)  # noqa: E731
            deadline = time.monotonic() + 60
            while account() < 3:
                if time.monotonic() > deadline or proc.returncode is not None:
                    raise SystemExit("FAILED: the bot did not complete three cycles in 60 s")
                await asyncio.sleep(0.1)
            baseline = Phase("baseline")
            await watch(account, url, baseline, args.seconds)
            loaded = Phase(f"{args.clients} scrapers")
            scraper = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--scrape",
                url + "/metrics",
                str(args.clients),
                str(args.seconds + 1),
                stdout=asyncio.subprocess.PIPE,
            )
            await asyncio.sleep(0.5)
            await watch(account, url, loaded, args.seconds)
            out, _ = await scraper.communicate()
            loaded.scrapes.update(json.loads(out))
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), timeout=30)
            err.close()
            await sim.stop()
    print(
        f"metrics_scrape: {args.apps} apps + account, POLL_INTERVAL={INTERVAL:g}s, sqlite,"
        f" {args.seconds:g} s per phase, machine load {os.getloadavg()[0]:.1f}"
    )
    print(baseline.row())
    print(loaded.row())
    never = [float("inf")]
    base_median = statistics.median(baseline.intervals or never)
    loaded_median = statistics.median(loaded.intervals or never)
    goals = [
        (
            f"loaded median interval {loaded_median:.3f} s <= 1.2 x baseline {base_median:.3f}"
            " s + 0.05 s",
            loaded_median <= 1.2 * base_median + 0.05,
        ),
        (
            f"no interval over {3 * INTERVAL:g} s (max {max(loaded.intervals or never):.3f} s)",
            max(loaded.intervals or never) <= 3 * INTERVAL,
        ),
        (
            "every /healthz 200",
            set(baseline.health) == {200} and set(loaded.health) == {200},
        ),
        (
            "every scrape 200",
            set(loaded.scrapes) == {"200"} and loaded.scrapes["200"] > 0,
        ),
    ]
    ok = True
    for what, passed in goals:
        print(("PASS " if passed else "FAIL ") + what)
        ok = ok and passed
    return 0 if ok else 1


def _log_file(directory: Path) -> BinaryIO:
    return (directory / "bot.err").open("wb")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--scrape":
        found = asyncio.run(scrape(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
        print(json.dumps(found))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="10 s phases")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 10.0
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
