"""`POST /jpush/callback` throughput with 50 apps configured, beside a bare aiohttp route.

    /work/venv/bin/python bench/callbacks.py [--quick]

A JPush delivery report is signed with one app's credentials, and the bot finds which one by
trying every configured app (in constant time), so the cost grows with the number of apps:
this runs with 50. Every report is distinct (its own nonce, hence its own signature), so none
is answered as a replay; 98 % are 4001 (delivered), 1 % 4005 and 1 % 4006 on a few apps, which
open alerts and go through the alert engine and the outbox.

Servers, each in its own process pinned to core 0 (`taskset -c 0`), `wrk` pinned to core 1 with
64 connections and one thread, reading pre-signed bodies from a file:

    bot-memory   bot.web.create_app + bot.app.serve_app, memory:// (SQLite in memory), INFO logs
    bot-sqlite   the same with the production default store (sqlite in a temporary directory)
    bare         an aiohttp handler that reads the body and answers "ok" (the ceiling)

(The servers are bench/slash.py's, with 50 apps and this route.)

Rounds alternate between servers and the median is reported; CPU time per request (from
/proc) is printed too, since it does not depend on what else the machine is doing. The goal:
the bot takes more than 2,000 reports a second.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

from _common import app_name, median, wait_for
from slash import (
    SERVER_CORE,
    Server,
    WrkResult,
    _read_ready,
    serve_bare,
    serve_bot,
    wrk_load,
)

APPS = 50
PATH = "/jpush/callback"
CONNECTIONS = 64
GOAL_RPS = 2000.0
SERVERS = ("bot-memory", "bot-sqlite", "bare")
# More bodies than any run can post at the rate this machine allows; reused bodies would be
# answered as replays (cheaper), so a run that exhausts them is flagged.
BODIES_PER_RUN = 120_000


# -- the servers (child processes) ------------------------------------------------------------


def serve(kind: str, workdir: Path) -> None:
    if kind.startswith("bot-"):
        asyncio.run(serve_bot(kind.removeprefix("bot-"), workdir, apps=APPS))
    else:
        asyncio.run(serve_bare(b"ok", path=PATH))


# -- the load ---------------------------------------------------------------------------------


class Reports:
    """Signed, distinct delivery reports, as JPush would post them."""

    def __init__(self) -> None:
        self._nonce = random.SystemRandom().randrange(10**15, 10**16)
        self._rng = random.Random(14)

    def body(self) -> str:
        self._nonce += 1
        nonce = str(self._nonce)
        roll = self._rng.random()
        status = 4005 if roll < 0.01 else 4006 if roll < 0.02 else 4001
        # 4005/4006 from a few apps (alerts open once, then repeat reports only confirm them).
        app = self._rng.randrange(3) if status != 4001 else self._rng.randrange(APPS)
        name = app_name(app)
        timestamp = str(int(time.time() * 1000))
        text = (
            f"appKey={name}-key&appMasterSecret={name}-secret&nonce={nonce}&timestamp={timestamp}"
        )
        data = {
            "msgId": nonce[-9:],
            "status": status,
            "receiveTime": int(time.time()),
            "phone": f"1380013{nonce[-4:]}",
        }
        return urlencode(
            {
                "nonce": nonce,
                "timestamp": timestamp,
                "signature": hashlib.sha1(text.encode()).hexdigest(),
                "type": "SMS_REPORT",
                "data": json.dumps(data, separators=(",", ":")),
            }
        )

    def write(self, path: Path, n: int) -> Path:
        path.write_text("\n".join(self.body() for _ in range(n)) + "\n")
        return path


def wrk_script(workdir: Path, bodies: Path) -> Path:
    script = workdir / "callbacks.lua"
    script.write_text(
        "\n".join(
            [
                "local bodies = {}",
                f"for line in io.lines({json.dumps(str(bodies))}) do",
                "  bodies[#bodies + 1] = line",
                "end",
                "local i = 0",
                'wrk.method = "POST"',
                'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"',
                "request = function()",
                "  i = i + 1",
                "  if i > #bodies then i = 1 end",
                "  return wrk.format(nil, nil, nil, bodies[i])",
                "end",
            ]
        )
        + "\n"
    )
    return script


def start_server(name: str, workdir: Path) -> Server:
    cmd = ["taskset", "-c", SERVER_CORE, sys.executable, str(Path(__file__).resolve())]
    cmd += ["--serve", name, "--workdir", str(workdir)]
    log = open(workdir / f"{name}.log", "a")  # noqa: SIM115 - closed by Server.stop
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    port = _read_ready(process, name, workdir / f"{name}.log")
    return Server(name, process, port, log)


def run_wrk(server: Server, workdir: Path, reports: Reports, seconds: float) -> WrkResult:
    bodies = reports.write(workdir / "bodies.txt", BODIES_PER_RUN)
    result = wrk_load(server, wrk_script(workdir, bodies), PATH, seconds, CONNECTIONS)
    if result.requests > BODIES_PER_RUN:
        print(f"  note: {server.name} took more than {BODIES_PER_RUN} reports; some were replays")
    return result


def counted(port: int) -> float:
    """Reports the bot counted (sms_delivery_reports_total, every scope and status)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("sms_delivery_reports_total{")
    )


def check_bot(server: Server, reports: Reports) -> None:
    body = reports.body().encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{PATH}",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    before = counted(server.port)
    with urllib.request.urlopen(request, timeout=5) as response:
        answer = response.read()
    if answer != b"ok":
        raise SystemExit(f"FAILED: {server.name} refused a signed report ({answer!r})")
    # /metrics is rendered at most once a second: the count shows within that.
    wait_for(
        lambda: counted(server.port) == before + 1,
        timeout=5,
        what=f"{server.name} to count a signed report",
        step=0.1,
    )


def orchestrate(quick: bool) -> int:
    seconds = 3.0 if quick else 8.0
    rounds = 2 if quick else 3
    reports = Reports()
    with tempfile.TemporaryDirectory(prefix="bench-callbacks-") as tmp:
        workdir = Path(tmp)
        servers: dict[str, Server] = {}
        try:
            for name in SERVERS:
                servers[name] = start_server(name, workdir)
            for name in ("bot-memory", "bot-sqlite"):
                check_bot(servers[name], reports)
            print(f"{len(servers)} servers up; each bot counts a signed report ({APPS} apps)")
            for name in SERVERS:
                run_wrk(servers[name], workdir, reports, 1.0)  # warm-up
            runs: dict[str, list[WrkResult]] = {name: [] for name in SERVERS}
            for round_no in range(rounds):
                for name in SERVERS:
                    result = run_wrk(servers[name], workdir, reports, seconds)
                    runs[name].append(result)
                    print(
                        f"round {round_no + 1} {name:<11} {result.rps:>8.0f} req/s"
                        f"  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms"
                        f"  CPU {result.cpu_us:6.1f} us/req",
                        flush=True,
                    )
            totals = {name: counted(servers[name].port) for name in ("bot-memory", "bot-sqlite")}
        finally:
            for server in servers.values():
                server.stop()
    print()
    print(
        f"POST {PATH}, {APPS} apps, distinct signed reports, {CONNECTIONS} connections,"
        f" {seconds:.0f} s x {rounds} rounds (median)"
    )
    print(f"{'server':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10}")
    for name in SERVERS:
        rps = median([r.rps for r in runs[name]])
        p50 = median([r.p50_ms for r in runs[name]])
        p99 = median([r.p99_ms for r in runs[name]])
        cpu = median([r.cpu_us for r in runs[name]])
        print(f"{name:<12} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f} {cpu:>10.1f}")
    print()
    ok = True
    bare = median([r.rps for r in runs["bare"]])
    for name in ("bot-memory", "bot-sqlite"):
        rps = median([r.rps for r in runs[name]])
        cpu = median([r.cpu_us for r in runs[name]])
        passed = rps > GOAL_RPS
        ok = ok and passed
        print(
            f"  {'PASS' if passed else 'FAIL'}  {name}: {rps:.0f} reports/s > {GOAL_RPS:.0f}"
            f" ({rps / bare:.2f}x bare; {1e6 / cpu:.0f}/s per free core by CPU time;"
            f" {totals[name]:.0f} reports counted)"
        )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, two rounds")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, Path(args.workdir))
        return 0
    return orchestrate(args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
