"""The billed cost of a run, from the workspace's Modal billing report.

What Modal's report is (``Workspace.billing.report``, modal 1.6.4's docstring): cost per
object (an App) per interval (hourly here), broken down by resource (CPU, memory, each
GPU type); ``start`` is rounded down to the beginning of its interval and a partial
final interval is excluded; billing data may arrive late. Tags exist per App, not per
function, so nothing finer than the app can be asked for.

So a run's billed cost is the sum of its app's hours from the hour the run started in
to the end of the hour it finished in. Read right after the run, that hour is partial
(excluded) and the others may not be in yet: the figure is recorded as *provisional*.
Once :data:`SETTLE_SECONDS` have passed since the last hour ended it is read again and
recorded as *final* (``echo-bench modal billing RUN``, and each scheduled run settles
the earlier runs that are due). Stated with every figure: whole hours only, so cost from
before the run in its first hour and anything else the app ran in those hours is
included. Without the report (no permission, old client, no network) the run keeps only
the estimate, which is labelled as one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

Report = Callable[..., Iterable[Any]]

#: How long after a run's last hour ends its figures are taken as final. Modal says its
#: billing data may lag without saying by how much; a day is the next night's run.
SETTLE_SECONDS = 24 * 3600
HOUR = timedelta(hours=1)


def hours_of(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[first, last): the whole hours that hold [start, end]."""
    first = start.replace(minute=0, second=0, microsecond=0)
    last = end.replace(minute=0, second=0, microsecond=0)
    return first, (last if last == end and last > first else last + HOUR)


def billed_cost(report: Report, app_id: str, start: datetime, end: datetime,
                now: datetime) -> dict[str, Any]:
    """The ``billed_*`` fields of a run of ``app_id`` over [start, end], read at ``now``
    from ``report`` (``modal.Workspace.from_context().billing.report``):
    ``billed_status`` is "final" once ``now`` is SETTLE_SECONDS past the run's last
    hour, else "provisional"; ``billed_usd`` is None while the report has no hour of
    the app."""
    first, last = hours_of(start, end)
    total = Decimal(0)
    by_resource: dict[str, Decimal] = {}
    intervals = 0
    for item in report(start=first, end=last, resolution="h"):
        if item.object_id != app_id:
            continue
        intervals += 1
        total += Decimal(item.cost)
        for resource, cost in dict(item.cost_by_resource).items():
            by_resource[resource] = by_resource.get(resource, Decimal(0)) + Decimal(cost)
    final_after = last + timedelta(seconds=SETTLE_SECONDS)
    final = now >= final_after
    hours = int((last - first) / HOUR)
    return {
        "billed_usd": float(total) if intervals else None,
        "billed_by_resource": {k: float(v) for k, v in sorted(by_resource.items())},
        "billed_status": "final" if final else "provisional",
        "billed_read_at": now.isoformat(timespec="seconds"),
        "billed_final_after": final_after.isoformat(timespec="seconds"),
        "billed_basis": (
            f"Modal billing report for app {app_id}: {intervals} of {hours} hourly "
            f"interval(s) from {first.isoformat(timespec='minutes')} (start rounded down to "
            "the hour; everything the app ran in those hours included)"
            + ("" if final else "; provisional: the last hour is partial or not yet "
               f"reported, final after {final_after.isoformat(timespec='minutes')}")),
    }
