"""``cargohold bench``: the speed test to run before choosing write-back or write-through.

It times writes and reads of a few sizes on the local tier (a Hold's put with the syncer
held, and its get) and straight on the configured remote, and recommends a strategy:

- **write-through** (``put(..., durable=True)``) when the remote is fast enough that waiting
  for it costs little (p99 put under ``FAST_REMOTE_MS``) and the remote spends no scarce
  budget per write: nothing is ever only on this disk.
- **write-back** (the default ``put``) otherwise: the app answers at local speed and the
  syncer batches uploads; the risk is the loss window, which must fit the host's grace
  period so a shutdown flush can empty it.

The results are saved next to the local tier (``bench.json``) for the dashboard's chart.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .keys import internal_key
from .platform import default_shutdown_grace

if TYPE_CHECKING:
    from .hold import Hold

__all__ = ["BenchReport", "BenchRow", "histogram", "run_bench"]

SIZES = (1024, 100 * 1024, 1024 * 1024)
FAST_REMOTE_MS = 30.0


@dataclass(frozen=True, slots=True)
class BenchRow:
    tier: str  # "local" or "remote"
    op: str  # "put" or "get"
    size: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    samples: list[float]


@dataclass(frozen=True, slots=True)
class BenchReport:
    remote: str
    at: str
    rows: list[BenchRow]
    recommendation: str
    reason: str
    grace_seconds: float

    def to_json(self) -> dict[str, object]:
        return {
            "remote": self.remote,
            "at": self.at,
            "recommendation": self.recommendation,
            "reason": self.reason,
            "grace_seconds": self.grace_seconds,
            "rows": [{k: v for k, v in asdict(r).items() if k != "samples"} for r in self.rows],
        }


def _pct(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def _row(tier: str, op: str, size: int, samples: list[float]) -> BenchRow:
    return BenchRow(
        tier, op, size, _pct(samples, 50), _pct(samples, 95), _pct(samples, 99), samples
    )


def run_bench(
    hold: Hold, *, rounds: int = 20, progress: object = None, save: bool = True
) -> BenchReport:
    """Time ``rounds`` writes and reads per size on each tier; clean up what it wrote.

    ``progress``, if given, is called with (done, total) after each measurement.
    """
    rows: list[BenchRow] = []
    total = len(SIZES) * 4 * rounds
    done = 0
    run = uuid.uuid4().hex[:8]

    def tick() -> None:
        nonlocal done
        done += 1
        if callable(progress):
            progress(done, total)

    for size in SIZES:
        data = os.urandom(size)
        keys = [internal_key(f"bench/{run}/{size}/{i}") for i in range(rounds)]
        timings: dict[tuple[str, str], list[float]] = {}
        with hold.sync_paused():
            for key in keys:
                start = time.perf_counter()
                hold.put(key, data)
                timings.setdefault(("local", "put"), []).append(
                    (time.perf_counter() - start) * 1000
                )
                tick()
            for key in keys:
                start = time.perf_counter()
                hold.get(key, max_age=math.inf)
                timings.setdefault(("local", "get"), []).append(
                    (time.perf_counter() - start) * 1000
                )
                tick()
            for key in keys:
                hold.delete(key)  # journaled; the syncer removes them remotely later
        remote_keys = [internal_key(f"bench/{run}/remote/{size}/{i}") for i in range(rounds)]
        for key in remote_keys:
            start = time.perf_counter()
            hold.remote.put(key, data)
            timings.setdefault(("remote", "put"), []).append((time.perf_counter() - start) * 1000)
            tick()
        for key in remote_keys:
            start = time.perf_counter()
            hold.remote.get(key)
            timings.setdefault(("remote", "get"), []).append((time.perf_counter() - start) * 1000)
            tick()
        hold.remote.delete_many(remote_keys)
        rows += [_row(tier, op, size, samples) for (tier, op), samples in timings.items()]
    recommendation, reason, grace = _recommend(hold, rows)
    report = BenchReport(
        remote=hold.remote.url,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        rows=rows,
        recommendation=recommendation,
        reason=reason,
        grace_seconds=grace,
    )
    if save:
        (hold.local_dir / "bench.json").write_text(json.dumps(report.to_json(), indent=2))
    return report


def _recommend(hold: Hold, rows: list[BenchRow]) -> tuple[str, str, float]:
    grace = hold.shutdown_grace or default_shutdown_grace()
    remote_put = max(
        r.p99_ms for r in rows if r.tier == "remote" and r.op == "put" and r.size == SIZES[0]
    )
    local_put = max(
        r.p99_ms for r in rows if r.tier == "local" and r.op == "put" and r.size == SIZES[0]
    )
    budget = hold.remote.stats().get("commit_budget")
    if budget is not None:
        return (
            "write-back",
            f"the remote spends a commit budget ({_budget_text(budget)}) per write, so writes must be batched; "
            f"keep the loss window under the host's {grace:.0f}s grace period",
            grace,
        )
    if remote_put <= FAST_REMOTE_MS:
        return (
            "write-through",
            f"the remote answers a small put in {remote_put:.1f} ms at p99, so put(..., "
            "durable=True) costs little and nothing is ever only on this disk",
            grace,
        )
    return (
        "write-back",
        f"a small put takes {remote_put:.1f} ms at p99 on the remote and {local_put:.2f} ms on "
        f"the local tier; write back and let flush() or the shutdown handler (a {grace:.0f}s "
        "grace period here) empty the loss window",
        grace,
    )


def histogram(samples: list[float], width: int = 30, bins: int = 8) -> list[str]:
    """A text histogram of latencies in milliseconds, one line per bin."""
    low, high = min(samples), max(samples)
    if high <= low:
        return [f"{low:9.3f} ms | {'#' * width} {len(samples)}"]
    step = (high - low) / bins
    counts = [0] * bins
    for value in samples:
        counts[min(bins - 1, int((value - low) / step))] += 1
    peak = max(counts)
    return [
        f"{low + i * step:9.3f} ms | {'#' * max(1 if c else 0, round(width * c / peak)):<{width}} {c}"
        for i, c in enumerate(counts)
    ]


def _budget_text(budget: object) -> str:
    """A remote's commit budget in words (the ``summary`` of an ``hf://`` budget)."""
    summary = budget.get("summary") if isinstance(budget, dict) else None
    return summary if isinstance(summary, str) else str(budget)
