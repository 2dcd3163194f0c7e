"""One line on what a run cost: the estimate and, when Modal's billing report had the
run's hours, the billed figure beside it, each with its basis (``manifest["cost"]``,
written by the Modal nightly). Without a billed figure the estimate is labelled so."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def run_cost_text(manifest: Mapping[str, Any]) -> str | None:
    cost = manifest.get("cost") or {}
    parts = []
    if cost.get("estimate_usd") is not None:
        parts.append(f"estimated {cost['estimate_usd']:.2f} USD "
                     f"({cost.get('estimate_gpu_hours', 0):.2f} GPU hours; "
                     f"{cost.get('estimate_basis') or 'estimate'})")
    if cost.get("billed_usd") is not None:
        # A figure read before Modal's report was complete is not the bill: say so.
        label = "billed so far (provisional)" if cost.get("billed_status") == "provisional" \
            else "billed"
        parts.append(f"{label} {cost['billed_usd']:.2f} USD ({cost.get('billed_basis') or ''})")
    elif parts:
        parts.append("billed: not available, so the figure above is an estimate only")
    return "Run cost: " + "; ".join(parts) + "." if parts else None
