"""`python scraper.py URL CLIENTS SECONDS`: CLIENTS loops GET URL as fast as they can for
SECONDS; prints the number of answers by status as JSON. A separate process, so the load
does not share an event loop (or a CPU slice) with the simulator in the test process."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import aiohttp


async def scrape(url: str, clients: int, seconds: float) -> Counter[int]:
    statuses: Counter[int] = Counter()
    end = time.monotonic() + seconds

    async def one(http: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            try:
                async with http.get(url) as response:
                    await response.read()
                    statuses[response.status] += 1
            except aiohttp.ClientError:
                statuses[0] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as http:
        await asyncio.gather(*(one(http) for _ in range(clients)))
    return statuses


if __name__ == "__main__":
    found = asyncio.run(scrape(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
    print(json.dumps({str(k): v for k, v in found.items()}))
