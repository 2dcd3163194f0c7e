"""The billed cost of a run, from the workspace's Modal billing report.

Modal reports cost per object (an App) per interval (hourly here), broken down by
resource (CPU, memory, each GPU type). A run's billed cost is the sum over its app's
intervals between the run's start and end. Two limits, stated with every figure: Modal
reports whole intervals only (the hour a run ends appears once it is over, and billing
data may lag), and anything else the app ran in those hours is included. Without the
report (no permission, old client, no network) the run keeps only the estimate, which
is labelled as one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

Report = Callable[..., Iterable[Any]]


def billed_cost(report: Report, app_id: str, start: datetime, end: datetime
                ) -> dict[str, Any] | None:
    """``{"billed_usd", "billed_by_resource", "billed_basis"}`` for ``app_id`` over
    [start, end) from ``report`` (``modal.Workspace.from_context().billing.report``);
    None when the report has no interval of that app yet."""
    total = Decimal(0)
    by_resource: dict[str, Decimal] = {}
    intervals = 0
    for item in report(start=start, end=end, resolution="h"):
        if item.object_id != app_id:
            continue
        intervals += 1
        total += Decimal(item.cost)
        for resource, cost in dict(item.cost_by_resource).items():
            by_resource[resource] = by_resource.get(resource, Decimal(0)) + Decimal(cost)
    if not intervals:
        return None
    return {
        "billed_usd": float(total),
        "billed_by_resource": {k: float(v) for k, v in sorted(by_resource.items())},
        "billed_basis": (f"Modal billing report for app {app_id}, {intervals} hourly "
                         f"interval(s) from {start.isoformat(timespec='minutes')}; whole "
                         "hours only, anything else the app ran then included"),
    }
