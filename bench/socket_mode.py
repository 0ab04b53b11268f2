"""`/sms-balance` over Socket Mode against the same command over HTTP, in one run.

    .venv/bin/python bench/socket_mode.py [--quick]

One `sms-balance-bot serve` process (console script, sqlite state, 3 scopes, POLL_INTERVAL=1h)
has both transports on. This process runs the JPush simulator and a Socket Mode fake Slack
(`apps.connections.open` and the websocket, from tests/fake_socket_slack.py) on loopback, then
sends the same command (text "" = every scope) both ways:

- one at a time: the time from sending an envelope to receiving its ack (the reply rides in
  it), and from sending a signed POST /slack/commands to its response (the baseline);
- 16 in flight at once: commands answered per second each way.

Rounds alternate between the transports and medians are reported. Goals: every Socket Mode
ack within Slack's 3 s; the median ack within 2x the HTTP median + 2 ms (a websocket frame
and the SDK's queue cost little next to the reply itself).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import BOT, bench_simulator, bot_env, free_port, slack_headers, slash_body

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_socket_slack import FakeSocketSlack

APPS = 2
APP_TOKEN = "xapp-1-A1-bench"
CONCURRENCY = 16


def slash_payload() -> dict[str, str]:
    return {"command": "/sms-balance", "text": "", "user_id": "U1", "channel_id": "C1"}


async def socket_one(fake: FakeSocketSlack) -> float:
    envelope = await fake.send_envelope("slash_commands", slash_payload())
    ack = await fake.wait_ack(envelope, timeout=10)
    assert ack.body.get("payload", {}).get("blocks"), ack.body
    return ack.seconds


async def http_one(http: aiohttp.ClientSession, url: str) -> float:
    body = slash_body("")
    started = time.monotonic()
    async with http.post(url, data=body, headers=slack_headers(body)) as response:
        reply = await response.json()
        assert response.status == 200, reply
        assert reply.get("blocks"), reply
    return time.monotonic() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(quick: bool) -> int:
    rounds, per_round = (3, 50) if quick else (5, 200)
    sim = bench_simulator(APPS)
    await sim.start()
    fake = FakeSocketSlack(APP_TOKEN)
    await fake.start()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = bot_env(str(sim.base_url), APPS, Path(tmp), port)
        env.update({"SLACK_APP_TOKEN": APP_TOKEN, "SLACK_API_URL": fake.url + "/api/"})
        log = (Path(tmp) / "bot.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            str(BOT), "serve", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log
        )
        url = f"http://127.0.0.1:{port}/slack/commands"
        try:
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                            health = await r.json()
                        if health["socket_mode"] == "connected" and health["last_cycle_at"]:
                            break
                    except aiohttp.ClientError:
                        pass
                    if time.monotonic() > deadline:
                        print("FAILED: the bot did not connect within 30 s")
                        return 1
                    await asyncio.sleep(0.05)
                for _ in range(20):  # warm-up, both ways
                    await socket_one(fake)
                    await http_one(http, url)
                socket_lat: list[float] = []
                http_lat: list[float] = []
                socket_rate: list[float] = []
                http_rate: list[float] = []
                for _ in range(rounds):
                    socket_lat += [await socket_one(fake) for _ in range(per_round)]
                    http_lat += [await http_one(http, url) for _ in range(per_round)]
                    for one, rates in (
                        (lambda: socket_one(fake), socket_rate),
                        (lambda: http_one(http, url), http_rate),
                    ):
                        started = time.monotonic()
                        for _ in range(per_round // CONCURRENCY):
                            await asyncio.gather(*[one() for _ in range(CONCURRENCY)])
                        done = (per_round // CONCURRENCY) * CONCURRENCY
                        rates.append(done / (time.monotonic() - started))
        finally:
            proc.terminate()
            await proc.wait()
            log.close()
            await fake.stop()
            await sim.stop()

    ms = 1000.0
    print(f"{'transport':<12}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'cmd/s @16':>11}")
    for name, lat, rate in (("socket", socket_lat, socket_rate), ("http", http_lat, http_rate)):
        print(
            f"{name:<12}{pct(lat, 0.5) * ms:>9.2f}{pct(lat, 0.95) * ms:>9.2f}"
            f"{pct(lat, 0.99) * ms:>9.2f}{max(lat) * ms:>9.2f}{statistics.median(rate):>11.0f}"
        )
    ok = True
    worst = max(socket_lat)
    verdict = "PASS" if worst < 3.0 else "FAIL"
    ok &= worst < 3.0
    print(f"{verdict}: every Socket Mode ack within 3 s (worst {worst * ms:.1f} ms)")
    limit = 2 * pct(http_lat, 0.5) + 0.002
    fine = pct(socket_lat, 0.5) <= limit
    ok &= fine
    print(
        f"{'PASS' if fine else 'FAIL'}: median ack {pct(socket_lat, 0.5) * ms:.2f} ms"
        f" <= 2 x HTTP median + 2 ms ({limit * ms:.2f} ms)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
