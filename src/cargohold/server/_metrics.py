"""Prometheus text for a Hold (no client library: a handful of gauges and counters)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..hold import Hold

__all__ = ["metrics_text"]


def metrics_text(hold: Hold) -> str:
    """The Hold's state in the Prometheus exposition format (version 0.0.4)."""
    status = hold.status()
    state = hold.sync_activity()
    reads = max(1, hold.reads)
    samples = [
        (
            "cargohold_pending_writes",
            "gauge",
            "Writes and deletes not yet on the remote.",
            status.pending_count,
        ),
        (
            "cargohold_pending_bytes",
            "gauge",
            "Bytes written locally, not yet on the remote.",
            status.pending_bytes,
        ),
        (
            "cargohold_loss_window_seconds",
            "gauge",
            "Age of the oldest write not yet on the remote.",
            status.loss_window,
        ),
        ("cargohold_local_bytes", "gauge", "Bytes held in the local tier.", status.local_bytes),
        (
            "cargohold_local_max_bytes",
            "gauge",
            "The local tier's byte bound.",
            status.local_max_bytes,
        ),
        (
            "cargohold_synced_objects_total",
            "counter",
            "Objects the syncer put on or deleted from the remote.",
            state.synced_objects,
        ),
        (
            "cargohold_synced_bytes_total",
            "counter",
            "Bytes the syncer sent to the remote.",
            state.synced_bytes,
        ),
        ("cargohold_sync_errors_total", "counter", "Failed sync attempts.", state.error_count),
        ("cargohold_reads_total", "counter", "get, open and path calls.", hold.reads),
        (
            "cargohold_read_throughs_total",
            "counter",
            "Reads the local tier could not answer.",
            hold.read_throughs,
        ),
        (
            "cargohold_hit_ratio",
            "gauge",
            "Share of reads the local tier answered.",
            1 - hold.read_throughs / reads,
        ),
        ("cargohold_syncing", "gauge", "1 if this process runs the syncer.", int(status.syncing)),
    ]
    lines = []
    for name, kind, help_text, value in samples:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {float(value):g}" if isinstance(value, float) else f"{name} {value}")
    return "\n".join(lines) + "\n"
