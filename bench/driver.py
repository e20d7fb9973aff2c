"""Load generator, run in its own process: sends a message file over MLLP and measures.

    python -m bench.driver --port P --messages FILE --connections C [--rate R]

Messages are one per line (segments separated by CR inside a line). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter

from pamfr.transport.client import MLLPClient


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def ack_code(ack: bytes) -> str:
    for segment in ack.split(b"\r"):
        if segment.startswith(b"MSA|"):
            return segment.split(b"|")[1].decode()
    return "?"


async def run(host: str, port: int, messages: list[bytes], connections: int, rate: float | None):
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    shares = [messages[i::connections] for i in range(connections)]
    clients = [await MLLPClient.connect(host, port) for _ in range(connections)]
    start = time.perf_counter()

    async def worker(client: MLLPClient, share: list[bytes]) -> None:
        for i, payload in enumerate(share):
            if rate:
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent = time.perf_counter()
            ack = await client.send(payload, timeout=120)
            latencies.append(time.perf_counter() - sent)
            codes[ack_code(ack)] += 1

    await asyncio.gather(*(worker(c, s) for c, s in zip(clients, shares, strict=True)))
    elapsed = time.perf_counter() - start
    for c in clients:
        await c.close()
    return {
        "count": len(messages),
        "connections": connections,
        "elapsed_s": elapsed,
        "msgs_per_s": len(messages) / elapsed,
        "latency_ms": {
            "p50": percentile(latencies, 50) * 1000,
            "p99": percentile(latencies, 99) * 1000,
            "max": max(latencies) * 1000,
            "mean": statistics.fmean(latencies) * 1000,
        },
        "codes": dict(codes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--rate", type=float, default=None, help="offered messages/second")
    args = parser.parse_args()
    with open(args.messages, "rb") as f:
        messages = [line.rstrip(b"\n") for line in f if line.strip()]
    result = asyncio.run(run(args.host, args.port, messages, args.connections, args.rate))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
