"""How a poll cycle (JPushClient.fetch_all) scales with the number of apps.

    /work/venv/bin/python bench/poll_scaling.py [--quick]

1. N apps behind the simulator with 100 ms latency, client concurrency C: the cycle time against
   the ideal ceil(N / C) x 100 ms (goal: ratio <= 1.2).
2. The simulator rate-limited to R requests per second (403/50009 beyond that): every scope must
   still be read, and the cycle should take no more than 1.5 x N / R.

The simulator runs in its own process, as JPush would, so its CPU time does not slow the client.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import dataclass

import aiohttp
from pydantic import SecretStr

from bot.jpush import JPushClient
from bot.quota import Scope, ScopeKind

LATENCY = 0.1
GOAL_RATIO = 1.2
RATE_SLACK = 1.5


@dataclass
class Run:
    n: int
    concurrency: int
    seconds: float
    ok: int
    requests: int
    max_in_flight: int


class SimulatorProcess:
    """`run_simulator` in a child process, driven through its /_sim/ control API."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SimulatorProcess:
        code = (
            "import asyncio; from bot.simulator import JPushSimulator, run_simulator; "
            "asyncio.run(run_simulator('127.0.0.1', 0, JPushSimulator()))"
        )
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=15)
        self.url = line.decode().split("listening on ")[1].split()[0]
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.close()
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()

    async def control(self, path: str, payload: object = None) -> dict[str, object]:
        assert self.http is not None
        url = f"{self.url}/_sim/{path}"
        if payload is None:
            async with self.http.get(url) as response:
                response.raise_for_status()
                result: dict[str, object] = await response.json()
                return result
        async with self.http.post(url, json=payload) as response:
            response.raise_for_status()
            result = await response.json()
            return result


def app_scopes(n: int) -> list[Scope]:
    return [
        Scope(name=f"app{i}", kind=ScopeKind.APP, key=f"key{i}", secret=SecretStr(f"secret{i}"))
        for i in range(n)
    ]


async def add_apps(sim: SimulatorProcess, n: int) -> None:
    await sim.control(
        "scopes",
        [
            {
                "key": f"key{i}",
                "secret": f"secret{i}",
                "kind": "app",
                "balances": {"balance": 1000 + i, "voice": 20, "industry": 5000, "market": None},
            }
            for i in range(n)
        ],
    )


async def one_cycle(sim: SimulatorProcess, client: JPushClient, scopes: list[Scope]) -> Run:
    await sim.control("reset_stats", {})
    started = time.perf_counter()
    readings = await client.fetch_all(scopes)
    seconds = time.perf_counter() - started
    stats = await sim.control("stats")
    ok = sum(1 for r in readings if r.error is None and r.balances is not None)
    requests = stats["requests"]
    max_in_flight = stats["max_in_flight"]
    assert isinstance(requests, int)
    assert isinstance(max_in_flight, int)
    return Run(len(scopes), -1, seconds, ok, requests, max_in_flight)


async def scaling(sim: SimulatorProcess, sizes: list[int], concurrencies: list[int]) -> bool:
    await sim.control("latency", {"seconds": LATENCY})
    print(f"\n1. Scaling: simulator latency {LATENCY * 1000:.0f} ms, no rate limit")
    print(
        f"{'N':>6} {'C':>4} {'cold s':>8} {'warm s':>8} {'ideal s':>8} "
        f"{'cold ratio':>10} {'warm ratio':>10} {'in flight':>9} {'requests':>8} {'read':>6}"
    )
    good = True
    for n in sizes:
        scopes = app_scopes(n)
        for concurrency in concurrencies:
            ideal = math.ceil(n / concurrency) * LATENCY
            # A fresh client per row: the cold cycle opens its connections, as a poll after a
            # 5-minute pause does (idle keep-alive connections are long gone by then).
            async with JPushClient(sim.url, concurrency=concurrency, timeout=10) as client:
                cold = await one_cycle(sim, client, scopes)
                warm = await one_cycle(sim, client, scopes)
            cold_ratio, warm_ratio = cold.seconds / ideal, warm.seconds / ideal
            passed = cold_ratio <= GOAL_RATIO and cold.ok == n and cold.max_in_flight <= concurrency
            good &= passed
            print(
                f"{n:>6} {concurrency:>4} {cold.seconds:>8.2f} {warm.seconds:>8.2f} {ideal:>8.2f} "
                f"{cold_ratio:>10.2f} {warm_ratio:>10.2f} {cold.max_in_flight:>9} "
                f"{cold.requests:>8} {cold.ok:>6}  {'ok' if passed else 'SLOW'}"
            )
    return good


async def rate_limited(sim: SimulatorProcess, n: int, concurrency: int, rate: float) -> bool:
    await sim.control("latency", {"seconds": LATENCY})
    await sim.control("rate_limit", {"rate": rate})
    target = RATE_SLACK * n / rate
    print(
        f"\n2. Rate limit: simulator answers 403/50009 above {rate:g} req/s "
        f"(latency {LATENCY * 1000:.0f} ms), real sleeps"
    )
    print(
        f"{'N':>6} {'C':>4} {'R':>4} {'cycle s':>8} {'N/R s':>8} {'target s':>9} "
        f"{'requests':>8} {'50009s':>7} {'read':>6}"
    )
    scopes = app_scopes(n)
    async with JPushClient(
        sim.url, concurrency=concurrency, timeout=10, retry_budget=10 * target, max_attempts=100
    ) as client:
        run = await one_cycle(sim, client, scopes)
    await sim.control("rate_limit", {"rate": None})
    passed = run.ok == n and run.seconds <= target
    print(
        f"{n:>6} {concurrency:>4} {rate:>4g} {run.seconds:>8.2f} {n / rate:>8.2f} {target:>9.2f} "
        f"{run.requests:>8} {run.requests - n:>7} {run.ok:>6}  {'ok' if passed else 'SLOW'}"
    )
    return passed


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer points (about 20 s)")
    args = parser.parse_args()
    sizes = [100, 500] if args.quick else [100, 500, 1000]
    concurrencies = [8, 32]
    async with SimulatorProcess() as sim:
        await add_apps(sim, max(sizes))
        scaled = await scaling(sim, sizes, concurrencies)
        limited = await rate_limited(sim, n=60 if args.quick else 100, concurrency=8, rate=20)
    print(
        f"\nscaling goal (cold ratio <= {GOAL_RATIO}): {'met' if scaled else 'MISSED'}; "
        f"rate-limit goal (all read, <= {RATE_SLACK} x N/R): {'met' if limited else 'MISSED'}"
    )
    return 0 if scaled and limited else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
