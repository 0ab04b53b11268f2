"""`/sms-balance` throughput and latency: the bot against slack-bolt and a bare aiohttp handler.

    /work/venv/bin/python bench/slash.py [--quick] [--profile]

Every server runs in its own process pinned to core 0 (`taskset -c 0`); `wrk` runs pinned to
core 1 with 64 connections, one thread. The servers, all answering the same signed request with
the same reply bytes:

    bot-memory   bot.web.create_app + bot.app.serve_app, STATE_URL=memory:// (SQLite in memory),
                 production logging
    bot-sqlite   the same with the production default store (sqlite in a temporary directory)
    bolt         slack_bolt AsyncApp (default mode), stub authorize, ack() with the bot's reply
    bolt-pbr     the same with process_before_response=True
    bare         an aiohttp handler that reads the body and returns the reply bytes (the ceiling)

Runs alternate between servers (round-robin, after a warm-up) and the median of the rounds is
reported, so a noisy moment hurts every server alike. `--profile` also runs each bot variant
under cProfile for one load run and prints where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from _common import (
    DEV_KEY,
    DEV_SECRET,
    SIGNING_SECRET,
    bench_simulator,
    jpush_apps_json,
    median,
    slack_headers,
    slash_body,
)

APPS = 2  # plus the account scope: three scopes in the reply
PATH = "/slack/commands"
INTERACTIONS = "/slack/interactions"
CONNECTIONS = 64
WRK = "/usr/bin/wrk"
SERVER_CORE = "0"
LOADGEN_CORE = "1"
BOT_SERVERS = ("bot-memory", "bot-sqlite")
ALL_SERVERS = (*BOT_SERVERS, "bolt", "bolt-pbr", "bare")

GOAL_VS_BOLT = 2.5
GOAL_VS_BOLT_PBR = 1.8
GOAL_P99_MS = 10.0
GOAL_C1_P50_MS = 1.0


# -- the servers (child processes) ------------------------------------------------------------


def _ready(port: int) -> None:
    print(f"READY {port}", flush=True)


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def serve_bot(store_kind: str, workdir: Path, apps: int = APPS) -> None:
    from bot.app import build_services, serve_app
    from bot.logs import setup_logging
    from bot.notify import ConsoleNotifier
    from bot.settings import Settings
    from bot.store.factory import make_store
    from bot.web import SERVICES, create_app

    sim = bench_simulator(apps)
    url = await sim.start()
    settings = Settings(
        _env_file=None,
        jpush_base_url=url,
        jpush_dev_key=DEV_KEY,
        jpush_dev_secret=DEV_SECRET,
        jpush_apps=jpush_apps_json(apps),
        # Long enough that no poll cycle runs while load is applied.
        poll_interval=timedelta(hours=1),
        slack_signing_secret=SIGNING_SECRET,
    )
    state_url = "memory://" if store_kind == "memory" else f"sqlite:///{workdir}/state.db"
    store = make_store(state_url, retention=settings.history_retention)
    # As `serve` does: INFO to stderr (the orchestrator sends it to a file).
    setup_logging("INFO", "text")
    app = create_app(build_services(settings, store=store, notifier=ConsoleNotifier(sys.stderr)))

    async def first_poll_done(port: int) -> None:
        worker = app[SERVICES].worker
        deadline = time.monotonic() + 30
        while worker.last_cycle_at is None:
            if time.monotonic() > deadline:
                raise SystemExit("the first poll cycle did not finish within 30 s")
            await asyncio.sleep(0.01)
        _ready(port)

    try:
        await serve_app(app, "127.0.0.1", 0, on_started=first_poll_done)
    finally:
        await sim.stop()


async def serve_bolt(reply: dict[str, Any], *, process_before_response: bool) -> None:
    from aiohttp import web
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.authorization import AuthorizeResult

    async def authorize(
        enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> AuthorizeResult:
        # What an installation store would return, without calling Slack's auth.test.
        return AuthorizeResult(
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
            bot_token="xoxb-bench-token",
            bot_id="B0BENCH",
            bot_user_id="U0BENCH",
        )

    app = AsyncApp(
        signing_secret=SIGNING_SECRET,
        authorize=authorize,
        process_before_response=process_before_response,
    )

    @app.command("/sms-balance")
    async def sms_balance(ack: Any) -> None:
        # The whole-reply form: bolt then serialises exactly the bot's key order (the keyword
        # form, ack(text=, blocks=, response_type=), reorders the keys: same JSON, other bytes).
        await ack(dict(reply))

    runner = web.AppRunner(app.web_app(path=PATH))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    _ready(int(runner.addresses[0][1]))
    await _wait_for_signal()
    await runner.cleanup()


async def serve_bare(reply_bytes: bytes, path: str = PATH) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=reply_bytes, content_type="application/json", charset="utf-8")

    app = web.Application()
    app.router.add_post(path, handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    _ready(int(runner.addresses[0][1]))
    await _wait_for_signal()
    await runner.cleanup()


def serve(kind: str, workdir: Path, reply_file: Path | None, profile: Path | None) -> None:
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    if kind.startswith("bot-"):
        coro = serve_bot(kind.removeprefix("bot-"), workdir)
    else:
        assert reply_file is not None
        raw = reply_file.read_bytes()
        if kind == "bare":
            coro = serve_bare(raw)
        else:
            coro = serve_bolt(json.loads(raw), process_before_response=kind == "bolt-pbr")
    try:
        asyncio.run(coro)
    finally:
        if profiler is not None and profile is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))


# -- the orchestrator -------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[str]
    port: int
    log: IO[str]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def start_server(
    name: str, workdir: Path, reply_file: Path | None = None, profile: Path | None = None
) -> Server:
    cmd = [
        "taskset",
        "-c",
        SERVER_CORE,
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        name,
        "--workdir",
        str(workdir),
    ]
    if reply_file is not None:
        cmd += ["--reply-file", str(reply_file)]
    if profile is not None:
        cmd += ["--profile-out", str(profile)]
    log = open(workdir / f"{name}.log", "a")  # noqa: SIM115 - closed by Server.stop
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    port = _read_ready(process, name, workdir / f"{name}.log")
    return Server(name, process, port, log)


def _read_ready(process: subprocess.Popen[str], name: str, log_path: Path) -> int:
    assert process.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.daemon = True
    reader.start()
    reader.join(timeout=40)
    line = result[0] if result else ""
    if not line.startswith("READY "):
        process.kill()
        tail = log_path.read_text()[-2000:] if log_path.exists() else ""
        raise SystemExit(f"FAILED: {name} did not start (got {line!r})\n{tail}")
    return int(line.split()[1])


def post(port: int, body: bytes, path: str = PATH) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers=slack_headers(body), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status), bytes(response.read())


def check_bot_reply(name: str, status: int, raw: bytes, reference: dict[str, Any]) -> None:
    # The bot's own reply says "read N min ago", so compare its shape, not its bytes.
    reply = json.loads(raw)
    same_shape = (
        reply.get("response_type") == "ephemeral"
        and list(reply) == list(reference)
        and len(reply["blocks"]) == len(reference["blocks"])
        and [b["type"] for b in reply["blocks"]] == [b["type"] for b in reference["blocks"]]
    )
    if status != 200 or not same_shape:
        raise SystemExit(f"FAILED: {name} answered {status} {raw[:300]!r}")


def check_exact(name: str, status: int, raw: bytes, expected: bytes) -> None:
    if status != 200 or raw != expected:
        raise SystemExit(
            f"FAILED: {name} answered {status} with {len(raw)} bytes, not the bot's"
            f" {len(expected)}-byte reply:\n{raw[:300]!r}\nexpected\n{expected[:300]!r}"
        )


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    raw: str
    cpu_us: float = 0.0  # server CPU time per request: robust to other load on the machine


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _latency_ms(text: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    if match is None:
        raise SystemExit(f"FAILED: no {percentile}% latency in wrk output:\n{text}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(text: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    if rps is None or total is None:
        raise SystemExit(f"FAILED: cannot parse wrk output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=_latency_ms(text, "50"),
        p99_ms=_latency_ms(text, "99"),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sockets.groups()) if sockets else 0,
        raw=text,
    )


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of ASCII text is a valid Lua string literal


def interaction_body() -> bytes:
    """A signed button press (Acknowledge on a scope with nothing open): the route's whole
    path, the signature, the form and JSON parsing, the handler and its store read."""
    payload = {
        "type": "block_actions",
        "user": {"id": "U0BENCH"},
        "actions": [{"action_id": "ack", "block_id": "incident:account", "value": "account"}],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def wrk_script(workdir: Path, body: bytes) -> Path:
    # Signed now: the signature stays valid for 5 minutes, longer than any one run.
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.decode('ascii'))}"]
    for name, value in slack_headers(body).items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    path = workdir / "slash.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(
    server: Server,
    workdir: Path,
    seconds: float,
    connections: int,
    path: str = PATH,
    body: bytes | None = None,
) -> WrkResult:
    script = wrk_script(workdir, body if body is not None else slash_body())
    return wrk_load(server, script, path, seconds, connections)


def wrk_load(
    server: Server, script: Path, path: str, seconds: float, connections: int = CONNECTIONS
) -> WrkResult:
    """`wrk` with `script` against one server, pinned to the load core; the server's CPU time
    per request comes along. Any non-2xx answer or socket error fails the benchmark."""
    cmd = [
        "taskset",
        "-c",
        LOADGEN_CORE,
        WRK,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{server.port}{path}",
    ]
    cpu_before = cpu_seconds(server.process.pid)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    cpu_used = cpu_seconds(server.process.pid) - cpu_before
    if done.returncode != 0:
        raise SystemExit(f"FAILED: wrk exited {done.returncode}: {done.stderr}")
    result = parse_wrk(done.stdout)
    result.cpu_us = cpu_used / max(result.requests, 1) * 1e6
    if result.non_2xx or result.socket_errors:
        raise SystemExit(
            f"FAILED: {server.name}: {result.non_2xx} non-2xx responses,"
            f" {result.socket_errors} socket errors\n{done.stdout}"
        )
    if server.process.poll() is not None:
        raise SystemExit(f"FAILED: {server.name} exited during the run")
    return result


@dataclass
class Summary:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float


def summarise(results: list[WrkResult]) -> Summary:
    return Summary(
        rps=median([r.rps for r in results]),
        p50_ms=median([r.p50_ms for r in results]),
        p99_ms=median([r.p99_ms for r in results]),
        cpu_us=median([r.cpu_us for r in results]),
    )


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_report(
    loaded: dict[str, Summary], single: dict[str, Summary], rounds: int, seconds: float
) -> bool:
    print()
    print(
        f"POST {PATH} text='' (all scopes, {APPS + 1} scopes), {CONNECTIONS} connections,"
        f" {seconds:.0f} s x {rounds} rounds (median); single connection: 1 run"
    )
    print(
        f"{'server':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10}   "
        f"{'c=1 req/s':>9} {'c=1 p50 ms':>10} {'c=1 p99 ms':>10}"
    )
    for name in ALL_SERVERS:
        s, one = loaded[name], single[name]
        print(
            f"{name:<12} {s.rps:>9.0f} {s.p50_ms:>8.2f} {s.p99_ms:>8.2f} {s.cpu_us:>10.1f}   "
            f"{one.rps:>9.0f} {one.p50_ms:>10.3f} {one.p99_ms:>10.3f}"
        )
    print()
    ok = True
    for bot in BOT_SERVERS:
        b = loaded[bot]
        vs_bolt = b.rps / loaded["bolt"].rps
        vs_pbr = b.rps / loaded["bolt-pbr"].rps
        vs_bare = b.rps / loaded["bare"].rps
        print(
            f"{bot}: {bot}/bolt-default {vs_bolt:.2f}x   {bot}/bolt-pbr {vs_pbr:.2f}x   "
            f"{bot}/bare {vs_bare:.2f}x   (by CPU per request: "
            f"{loaded['bolt'].cpu_us / b.cpu_us:.2f}x, {loaded['bolt-pbr'].cpu_us / b.cpu_us:.2f}x,"
            f" {loaded['bare'].cpu_us / b.cpu_us:.2f}x)"
        )
        goals = [
            (f"throughput >= {GOAL_VS_BOLT}x bolt default", vs_bolt >= GOAL_VS_BOLT),
            (
                f"throughput >= {GOAL_VS_BOLT_PBR}x bolt process_before_response",
                vs_pbr >= GOAL_VS_BOLT_PBR,
            ),
            (
                f"p99 < {GOAL_P99_MS:g} ms at {CONNECTIONS} connections ({b.p99_ms:.2f} ms)",
                b.p99_ms < GOAL_P99_MS,
            ),
            (
                f"median < {GOAL_C1_P50_MS:g} ms with one connection ({single[bot].p50_ms:.3f} ms)",
                single[bot].p50_ms < GOAL_C1_P50_MS,
            ),
        ]
        for text, passed in goals:
            print(f"  {_verdict(passed)}  {text}")
            ok = ok and passed
    return ok


def profile_bot(name: str, workdir: Path, seconds: float) -> None:
    import pstats

    out = workdir / f"{name}.prof"
    server = start_server(name, workdir, profile=out)
    try:
        run_wrk(server, workdir, seconds, CONNECTIONS)
    finally:
        server.stop()
    stream = io.StringIO()
    stats = pstats.Stats(str(out), stream=stream)
    stats.strip_dirs().sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(
        r"web.py|slash.py|commands.py|monitor.py|memory.py|sqlite.py|metrics.py|signature|json"
    )
    print(f"\n--- cProfile of {name} under {CONNECTIONS} connections ({seconds:.0f} s) ---")
    print(stream.getvalue())


def orchestrate(quick: bool, profile: bool) -> int:
    seconds = 3.0 if quick else 10.0
    single_seconds = 2.0 if quick else 5.0
    warmup = 1.0 if quick else 3.0
    rounds = 2 if quick else 3
    with tempfile.TemporaryDirectory(prefix="bench-slash-") as tmp:
        workdir = Path(tmp)
        servers: dict[str, Server] = {}
        try:
            for name in BOT_SERVERS:
                servers[name] = start_server(name, workdir)
            status, raw = post(servers["bot-memory"].port, slash_body())
            reference = json.loads(raw)
            check_bot_reply("bot-memory", status, raw, reference)
            reply_file = workdir / "reply.json"
            reply_file.write_bytes(raw)
            for name in ("bolt", "bolt-pbr", "bare"):
                servers[name] = start_server(name, workdir, reply_file)
                check_exact(name, *post(servers[name].port, slash_body()), raw)
            sqlite_reply = post(servers["bot-sqlite"].port, slash_body())
            check_bot_reply("bot-sqlite", *sqlite_reply, reference)
            print(
                f"all {len(servers)} servers answer 200; bolt, bolt-pbr and bare send the bot's"
                f" exact {len(raw)}-byte reply"
            )
            for name in ALL_SERVERS:
                run_wrk(servers[name], workdir, warmup, CONNECTIONS)
            loaded_runs: dict[str, list[WrkResult]] = {name: [] for name in ALL_SERVERS}
            for round_no in range(rounds):
                for name in ALL_SERVERS:
                    result = run_wrk(servers[name], workdir, seconds, CONNECTIONS)
                    loaded_runs[name].append(result)
                    print(
                        f"round {round_no + 1} {name:<11} {result.rps:>8.0f} req/s"
                        f"  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms"
                        f"  CPU {result.cpu_us:5.1f} us/req",
                        flush=True,
                    )
            interactions: dict[str, Summary] = {}
            for name in BOT_SERVERS:
                status, _ = post(servers[name].port, interaction_body(), INTERACTIONS)
                if status != 200:
                    raise SystemExit(f"FAILED: {name} {INTERACTIONS} answered {status}")
                runs = [
                    run_wrk(
                        servers[name],
                        workdir,
                        seconds,
                        CONNECTIONS,
                        path=INTERACTIONS,
                        body=interaction_body(),
                    )
                    for _ in range(rounds)
                ]
                interactions[name] = summarise(runs)
            single: dict[str, Summary] = {}
            for name in ALL_SERVERS:
                single[name] = summarise([run_wrk(servers[name], workdir, single_seconds, 1)])
            for name in ALL_SERVERS:
                check_status, check_raw = post(servers[name].port, slash_body())
                if name in BOT_SERVERS:
                    check_bot_reply(name, check_status, check_raw, reference)
                else:
                    check_exact(name, check_status, check_raw, raw)
        finally:
            for server in servers.values():
                server.stop()
        loaded = {name: summarise(runs) for name, runs in loaded_runs.items()}
        ok = print_report(loaded, single, rounds, seconds)
        print()
        print(f"POST {INTERACTIONS} (a signed Acknowledge press), beside the slash command:")
        for name in BOT_SERVERS:
            i, b = interactions[name], loaded[name]
            print(
                f"{name:<12} {i.rps:>9.0f} req/s  p50 {i.p50_ms:.2f} ms  p99 {i.p99_ms:.2f} ms"
                f"  CPU {i.cpu_us:.1f} us/req   ({i.rps / b.rps:.2f}x the slash command's"
                f" {b.rps:.0f} req/s; {i.rps / loaded['bolt'].rps:.2f}x bolt's slash)"
            )
        if profile:
            for name in BOT_SERVERS:
                profile_bot(name, workdir, seconds)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--profile", action="store_true", help="also cProfile the bot servers")
    parser.add_argument("--serve", choices=ALL_SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--reply-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            serve(args.serve, args.workdir or Path(os.getcwd()), args.reply_file, args.profile_out)
        return 0
    return orchestrate(args.quick, args.profile)


if __name__ == "__main__":
    sys.exit(main())
