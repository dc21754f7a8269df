# -*- coding: utf-8 -*-
# Copyright: cellctl developers
# Apache License 2.0 (see the repository's Cargo.toml)
"""Filters for the cellctl.vcd playbook: version comparison and the outage from cellctl's reports."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from datetime import datetime, timezone


def _base(version):
    """10.6.0-24268925 (version-build, or rpm's version-release) -> 10.6.0."""
    return str(version).strip().split("-", 1)[0]


def same_version(installed, target):
    """Whether the installed version is the target: equal, or equal but for a build suffix."""
    if not installed or not target:
        return False
    installed, target = str(installed).strip(), str(target).strip()
    return installed == target or _base(installed) == _base(target)


def _when(text):
    """cellctl's RFC 3339 timestamps (2026-11-30T05:03:05.325Z) as aware datetimes."""
    text = str(text)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def step_time(report, step, edge="started_at"):
    """The time (RFC 3339) the named step of a cellctl report started (or ended), or None."""
    if not isinstance(report, dict):
        return None
    for s in report.get("steps") or []:
        if s.get("step") == step and s.get(edge):
            return s[edge]
    return None


def outage(down_at, up_times):
    """Seconds from the last serving cell's shutdown to the first healthy cell, or None."""
    ups = [_when(t) for t in (up_times or []) if t]
    if not down_at or not ups:
        return None
    return round((min(ups) - _when(down_at)).total_seconds(), 3)


def last_serving(cells, services):
    """The last of `cells` whose service runs (`services` in the same order), else the last cell."""
    running = [c for c, s in zip(cells, services) if s == "running"]
    return (running or list(cells))[-1]


def _outcome(result):
    """A registered cellctl task result: its outcome, `skipped`, or None when it never ran."""
    if not isinstance(result, dict) or not result:
        return None
    if result.get("skipped"):
        return "skipped"
    return result.get("outcome") or ("failed" if result.get("failed") else None)


def summary(rows, last):
    """The play's summary from each cell's row (see the playbook's last play).

    Each row: cell, version_before, version_after, service, and the registered results drain,
    install, db, start. The outage runs from the last serving cell's shutdown (its drain report's
    `shutdown` step) to the first cell healthy again (the end of a start report's `health` step).
    """
    cells = []
    down_at = None
    ups = []
    for row in rows:
        drain, start = row.get("drain") or {}, row.get("start") or {}
        if row.get("cell") == last:
            down_at = step_time(drain, "shutdown")
        up = step_time(start, "health", "ended_at")
        if up:
            ups.append(up)
        cells.append(
            {
                "cell": row.get("cell"),
                "version_before": row.get("version_before"),
                "version_after": row.get("version_after"),
                "service": row.get("service"),
                "drain": _outcome(drain),
                "install": _outcome(row.get("install")),
                "db_upgrade": _outcome(row.get("db")),
                "start": _outcome(start),
                "healthy_at": up,
            }
        )
    seconds = outage(down_at, ups)
    return {
        "cells": cells,
        "last_cell": last,
        "outage": {
            "from": down_at,
            "to": min(ups, key=_when) if ups else None,
            "seconds": seconds,
            "note": None
            if seconds is not None
            else "not measured: the last cell was not shut down in this run (a rerun), or no cell started",
        },
    }


def cell_states(results):
    """A looped `status` task's results as one line of state per cell (after a failure)."""
    out = []
    for r in results or []:
        run = r.get("recorded_run")
        out.append(
            {
                "cell": r.get("item"),
                "service": r.get("service", "unknown"),
                "installed_version": r.get("installed_version"),
                "recorded_run": run,
                "error": None if r.get("rc") == 0 else r.get("msg"),
            }
        )
    return out


class FilterModule(object):
    def filters(self):
        return {
            "same_version": same_version,
            "step_time": step_time,
            "outage": outage,
            "last_serving": last_serving,
            "summary": summary,
            "cell_states": cell_states,
        }
