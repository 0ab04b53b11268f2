"""Soak: `sms-balance-bot serve` polling 200 apps for thousands of cycles while slash commands
arrive alongside. Does anything grow that should not?

    /work/venv/bin/python bench/soak.py [--cycles 2000] [--apps 200] [--interval 0.05]
                                        [--rate 3] [--quotas null|values] [--max-seconds 600]

The bot runs as its own process (the console script, sqlite STATE_URL in a temporary
directory, alerts to its stdout); the JPush simulator (one account, `--apps` apps) and the load
generator (`--rate` signed `/sms-balance` requests per second, a mix of every scope, one scope,
help and `refresh <app>`) run in this process. Every two seconds it samples the bot's
/proc/PID: VmRSS, open fds, of which sockets, threads; and its `sms_polls_total`.

`--quotas null` (the default) has every app answer null quotas, so nothing but the account goes
to history; `--quotas values` has them answer steady numbers, so every series is forecast and
stored each cycle (the forecast is a running state, so the cycle's cost does not grow with the
history: bench/cycle_cost.py measures that).

Prints, and judges against the goals:
- VmRSS after the first cycle (goal < 80 MB with 200 apps) and at the end;
- growth per 1000 cycles: the least-squares slope of VmRSS against cycles after a warm-up
  (the first 10 % of the cycles, at least 100), goal < 2 MB;
- open fds and sockets after the first cycle and at the end (goal: flat, within 5);
- poll-cycle time (`duration_s` of every "poll cycle done" log line) p50/p95/max, overall and
  for the first and last tenth of the run, so a drift shows;
- slash-command answers by status and their latency p50/p99 (goal: every one 200).

It stops by itself after `--cycles` cycles (about 3.5 minutes by default), or after
`--max-seconds` (then it says so and judges what it has). Exits 1 if a goal failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from _common import (
    BOT,
    app_name,
    bench_simulator,
    bot_env,
    free_port,
    slack_headers,
    slash_body,
)

GOAL_RSS_MB = 80.0
GOAL_GROWTH_MB_PER_1000 = 2.0
GOAL_FD_DRIFT = 5
SAMPLE_EVERY = 2.0
_DURATION = re.compile(r"poll cycle done .*duration_s=([0-9.]+)")
_POLLS = re.compile(r"^sms_polls_total ([0-9.e+]+)$", re.MULTILINE)


@dataclass
class Sample:
    at: float
    cycles: int
    rss_mb: float
    fds: int
    sockets: int
    threads: int


@dataclass
class Load:
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


def proc_sample(pid: int, cycles: int) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    fd_dir = Path(f"/proc/{pid}/fd")
    fds = sockets = 0
    for fd in fd_dir.iterdir():
        fds += 1
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith("socket:"):
                sockets += 1
    return Sample(
        at=time.monotonic(),
        cycles=cycles,
        rss_mb=int(fields["VmRSS"].split()[0]) / 1024,
        fds=fds,
        sockets=sockets,
        threads=int(fields["Threads"]),
    )


async def polls(http: aiohttp.ClientSession, port: int) -> int | None:
    try:
        async with http.get(
            f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=5)
        ) as response:
            found = _POLLS.search(await response.text())
    except (aiohttp.ClientError, TimeoutError):
        return None
    return int(float(found.group(1))) if found else None


async def load_generator(
    http: aiohttp.ClientSession, port: int, rate: float, apps: int, stop: asyncio.Event, load: Load
) -> None:
    texts = [
        "",
        "account",
        "help",
        app_name(7 % max(apps, 1)),
        f"refresh {app_name(3 % max(apps, 1))}",
    ]
    url = f"http://127.0.0.1:{port}/slack/commands"
    n = 0
    while not stop.is_set():
        body = slash_body(texts[n % len(texts)])
        n += 1
        started = time.monotonic()
        try:
            async with http.post(
                url, data=body, headers=slack_headers(body), timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                await response.read()
                load.statuses[str(response.status)] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            load.statuses[type(exc).__name__] += 1
        load.latencies.append(time.monotonic() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1 / rate)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return 0.0 if sxx == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def cycle_row(label: str, durations: list[float]) -> str:
    if not durations:
        return f"  {label:<16} (none)"
    return (
        f"  {label:<16} n={len(durations):<6} p50 {percentile(durations, 50) * 1000:7.1f} ms"
        f"  p95 {percentile(durations, 95) * 1000:7.1f} ms  max {max(durations) * 1000:7.1f} ms"
    )


async def soak(args: argparse.Namespace) -> int:
    sim = bench_simulator(args.apps)
    if args.quotas == "null":
        # Every app answers with null quotas: nothing goes to history, so what grows with the
        # history window (forecast reads) is out of the picture and only the rest is soaked.
        for i in range(args.apps):
            for quota_type in ("balance", "voice", "industry", "market"):
                sim.set_balance(f"{app_name(i)}-key", quota_type, None)
    base_url = await sim.start()
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    port = free_port()
    log_path = workdir / "bot.log"
    out_path = workdir / "bot.out"
    with log_path.open("wb") as err, out_path.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(BOT),
            "serve",
            env=bot_env(base_url, args.apps, workdir, port, str(args.interval)),
            cwd=workdir,
            stdout=out,
            stderr=err,
        )
    samples: list[Sample] = []
    load = Load()
    stop = asyncio.Event()
    timed_out = False
    started = time.monotonic()
    http = aiohttp.ClientSession()
    try:
        while (first := await polls(http, port)) is None or first < 1:
            if process.returncode is not None:
                raise SystemExit(f"FAILED: the bot exited early; see {log_path}")
            if time.monotonic() - started > 60:
                raise SystemExit("FAILED: no completed cycle within 60 s")
            await asyncio.sleep(0.05)
        samples.append(proc_sample(process.pid, first))
        print(
            f"soak: {args.apps} apps ({args.quotas}) + account, POLL_INTERVAL={args.interval}, "
            f"{args.cycles} cycles, {args.rate} slash commands/s; bot pid {process.pid}, "
            f"logs in {workdir}",
            flush=True,
        )
        generator = asyncio.create_task(
            load_generator(http, port, args.rate, args.apps, stop, load)
        )
        deadline = started + args.max_seconds
        next_report = time.monotonic() + 30
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            if process.returncode is not None:
                raise SystemExit(f"FAILED: the bot exited ({process.returncode}); see {log_path}")
            cycles = await polls(http, port)
            if cycles is None:
                continue
            samples.append(proc_sample(process.pid, cycles))
            if time.monotonic() > next_report:
                s = samples[-1]
                print(
                    f"  {time.monotonic() - started:6.0f} s  cycles {s.cycles:6d}  "
                    f"VmRSS {s.rss_mb:6.1f} MB  fds {s.fds}  sockets {s.sockets}",
                    flush=True,
                )
                next_report += 30
            if cycles >= args.cycles:
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
        stop.set()
        await generator
    finally:
        await http.close()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(process.wait(), timeout=25)
            except TimeoutError:
                process.kill()
                code = await process.wait()
        else:
            code = process.returncode
        await sim.stop()
    return report(args, samples, load, log_path, code, timed_out, time.monotonic() - started)


def report(
    args: argparse.Namespace,
    samples: list[Sample],
    load: Load,
    log_path: Path,
    exit_code: int,
    timed_out: bool,
    seconds: float,
) -> int:
    first, last = samples[0], samples[-1]
    durations = [float(m.group(1)) for m in _DURATION.finditer(log_path.read_text())]
    cycles = last.cycles
    warm = max(100, cycles // 10)
    steady = [(float(s.cycles), s.rss_mb) for s in samples if s.cycles >= warm]
    growth = slope(steady) * 1000
    tenth = max(1, len(durations) // 10)
    failed: list[str] = []

    def judge(ok: bool, what: str) -> str:
        if not ok:
            failed.append(what)
        return "PASS" if ok else "FAIL"

    print(f"\n{cycles} cycles in {seconds:.0f} s ({cycles / seconds:.1f} cycles/s)")
    if timed_out:
        print(f"  stopped by --max-seconds {args.max_seconds:.0f} before {args.cycles} cycles")
    print(
        f"VmRSS after the first cycle {first.rss_mb:.1f} MB, at the end {last.rss_mb:.1f} MB"
        f"  [{judge(first.rss_mb < GOAL_RSS_MB, 'idle RSS')} < {GOAL_RSS_MB:.0f} MB]"
    )
    print(
        f"growth after cycle {warm}: {growth:+.2f} MB per 1000 cycles (least squares over "
        f"{len(steady)} samples)  [{judge(growth < GOAL_GROWTH_MB_PER_1000, 'RSS growth')}"
        f" < {GOAL_GROWTH_MB_PER_1000:.0f} MB]"
    )
    fd_ok = abs(last.fds - first.fds) <= GOAL_FD_DRIFT
    sock_ok = abs(last.sockets - first.sockets) <= GOAL_FD_DRIFT
    print(
        f"open fds {first.fds} -> {last.fds}  [{judge(fd_ok, 'fds')} flat]; sockets "
        f"{first.sockets} -> {last.sockets}  [{judge(sock_ok, 'sockets')} flat]; threads "
        f"{first.threads} -> {last.threads}"
    )
    print(
        f"max over the run: fds {max(s.fds for s in samples)}, sockets "
        f"{max(s.sockets for s in samples)}, VmRSS {max(s.rss_mb for s in samples):.1f} MB"
    )
    print("poll-cycle time (duration_s from the log):")
    print(cycle_row("all", durations))
    print(cycle_row("first tenth", durations[:tenth]))
    print(cycle_row("last tenth", durations[-tenth:]))
    answered = sum(load.statuses.values())
    all_ok = load.statuses.get("200", 0) == answered and answered > 0
    if load.latencies:
        print(
            f"slash commands: {answered} sent, {dict(load.statuses)}; latency p50 "
            f"{percentile(load.latencies, 50) * 1000:.1f} ms, p99 "
            f"{percentile(load.latencies, 99) * 1000:.1f} ms  [{judge(all_ok, 'slash')} all 200]"
        )
    print(f"SIGTERM: exit {exit_code}  [{judge(exit_code == 0, 'exit code')} 0]")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print("all goals met")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=2000, help="stop after this many cycles")
    parser.add_argument("--apps", type=int, default=200, help="apps on the simulator")
    parser.add_argument("--interval", type=float, default=0.05, help="POLL_INTERVAL, seconds")
    parser.add_argument("--rate", type=float, default=3.0, help="slash commands per second")
    parser.add_argument(
        "--quotas",
        choices=["values", "null"],
        default="null",
        help="what the apps answer: null quotas (no history) or steady values (history grows)",
    )
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long")
    return asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
