"""A closed-loop load generator: C workers, each sending its next request when the last ends.

Requests started during the warm-up are not recorded; those started in the measurement
window are, including any that finish after it (steady state makes the two edges cancel).
Latency is the time to the complete response body; checking the body comes after.

To show the client was not the bottleneck it also records its own CPU time, the
event loop's scheduling lag, and the concurrency it actually achieved (Little's law:
time spent in requests / elapsed time).

Each worker has its own ``httpx.AsyncClient`` holding one keep-alive connection (C
connections in all). One shared client with a pool of C connections costs several
milliseconds of client CPU per request at C=50, because httpcore scans its whole pool on
every request start and end (encode/httpx#3215); on a small machine that made the load
generator, not the server, the limit (measured: 4-8 ms against 0.8-1.4 ms per request, and
2-5x lower throughput against the baseline).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.procstat import MACHINE, CpuGroups

Check = Callable[[httpx.Response], str | None]  # None when the response is right


@dataclass(frozen=True)
class Call:
    """One request to send and how to judge its response."""

    method: str
    path: str
    check: Check
    json: Any = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None


Sampler = Callable[[random.Random], Call]
ClientFactory = Callable[[], httpx.AsyncClient]  # a client for one worker (one connection)
LAG_TICK_S = 0.02


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


@dataclass
class Measurement:
    concurrency: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)  # successful requests, sorted
    failures: Counter[str] = field(default_factory=Counter)
    busy_s: float = 0.0  # sum of all recorded requests' latencies
    max_in_flight: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)  # "client" plus the CpuGroups
    loop_lag_ms: list[float] = field(default_factory=list)  # sorted

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def requests(self) -> int:
        return self.ok + sum(self.failures.values())

    @property
    def throughput(self) -> float:
        return self.ok / self.duration_s

    @property
    def achieved_concurrency(self) -> float:
        return self.busy_s / self.duration_s

    def latency(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    @property
    def other_cores(self) -> float | None:
        """Cores busy with processes outside the run (other work on this machine)."""
        if MACHINE not in self.cpu_s:
            return None
        ours = sum(v for k, v in self.cpu_s.items() if k != MACHINE)
        return max(0.0, self.cpu_s[MACHINE] - ours) / self.duration_s

    def cpu_ms_per_request(self, name: str) -> float | None:
        if name not in self.cpu_s or not self.requests:
            return None
        return 1000 * self.cpu_s[name] / self.requests

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "failures": dict(self.failures),
            "duration_s": round(self.duration_s, 3),
            "throughput_rps": round(self.throughput, 2),
            "latency_ms": {
                "p50": round(self.latency(50), 2),
                "p95": round(self.latency(95), 2),
                "p99": round(self.latency(99), 2),
                "max": round(self.latency(100), 2),
                "mean": round(sum(self.latencies_ms) / max(1, self.ok), 2),
            },
            "concurrency": {
                "configured": self.concurrency,
                "achieved": round(self.achieved_concurrency, 2),
                "max_in_flight": self.max_in_flight,
            },
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_s.items()},
            "cpu_ms_per_request": {
                k: round(v, 3) for k in self.cpu_s if (v := self.cpu_ms_per_request(k)) is not None
            },
            "client_loop_lag_ms": {
                "p50": round(percentile(self.loop_lag_ms, 50), 2),
                "p95": round(percentile(self.loop_lag_ms, 95), 2),
                "max": round(percentile(self.loop_lag_ms, 100), 2),
            },
        }


async def send(client: httpx.AsyncClient, call: Call) -> httpx.Response:
    return await client.request(
        call.method, call.path, json=call.json, params=call.params, headers=call.headers
    )


def client_factory(base_url: str, timeout_s: float = 30.0) -> ClientFactory:
    def connect() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=base_url,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=httpx.Timeout(timeout_s),
        )

    return connect


async def measure(
    connect: ClientFactory,
    sample: Sampler,
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    seed: int,
    cpu: CpuGroups | None = None,
) -> Measurement:
    result = Measurement(concurrency, duration_s)
    begin = time.perf_counter()
    window_start, window_end = begin + warmup_s, begin + warmup_s + duration_s
    in_flight = 0

    async def worker(number: int) -> None:
        nonlocal in_flight
        rng = random.Random(seed * 10_000 + number)
        async with connect() as client:
            while (started := time.perf_counter()) < window_end:
                call = sample(rng)
                in_flight += 1
                result.max_in_flight = max(result.max_in_flight, in_flight)
                try:
                    response = await send(client, call)
                    elapsed = time.perf_counter() - started
                    reason = call.check(response)
                except httpx.HTTPError as exc:
                    elapsed = time.perf_counter() - started
                    reason = type(exc).__name__
                finally:
                    in_flight -= 1
                if started < window_start:
                    continue
                result.busy_s += elapsed
                if reason is None:
                    result.latencies_ms.append(1000 * elapsed)
                else:
                    result.failures[reason] += 1

    async def observer() -> None:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        before = _cpu(cpu)
        while (now := time.perf_counter()) < window_end:
            await asyncio.sleep(LAG_TICK_S)
            result.loop_lag_ms.append(1000 * max(0.0, time.perf_counter() - now - LAG_TICK_S))
        after = _cpu(cpu)
        result.cpu_s = {name: after[name] - before[name] for name in after if name in before}

    await asyncio.gather(observer(), *(worker(n) for n in range(concurrency)))
    result.latencies_ms.sort()
    result.loop_lag_ms.sort()
    return result


def _cpu(groups: CpuGroups | None) -> dict[str, float]:
    sample = groups.sample() if groups is not None else {}
    return {"client": time.process_time(), **sample}
