"""Rich output for ``sync``, ``apply`` and ``runs``: plans, results, run history.

Everything here renders the documented JSON shapes (``SyncSummary.as_json()`` and the
run records), so what a person reads and what a script parses cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from sync.app import RunDetails
from sync.ledger import RunRecord

KIND_LABELS: Final = {
    "suppress": "suppress",
    "remove_tag": "remove tag",
    "unsuppress": "lift suppression",
    "add_tag": "add tag",
}
MIGRATION_ROWS: Final = 12


def sync_summary(summary: Mapping[str, Any], console: Console) -> None:
    """The plan per destination, then (after a real run) what happened."""
    for plan in summary["destinations"]:
        _plan(plan, console, dry_run=summary["dry_run"])
    console.print(_closing_line(summary))


def _plan(plan: Mapping[str, Any], console: Console, *, dry_run: bool) -> None:
    first = " (first sync)" if plan["first_sync"] else ""
    console.print(f"\n[bold]{plan['destination']}[/bold] ({plan['channel']}){first}")
    if plan.get("check_problem"):
        console.print(f"  [red]check failed:[/red] {plan['check_problem']}")
    result = plan.get("result")
    table = Table(box=None, pad_edge=False)
    table.add_column("change")
    table.add_column("planned", justify="right")
    table.add_column("customers", justify="right")
    table.add_column("requests", justify="right")
    if result is not None:
        table.add_column("applied", justify="right")
        table.add_column("failed", justify="right")
    requests = plan["estimate"]["requests"]
    for kind, label in KIND_LABELS.items():
        row = [
            label,
            f"{plan['changes'][kind]:,}",
            f"{plan['customers'][kind]:,}",
            f"{requests.get(kind, 0):,}",
        ]
        if result is not None:
            failed = result["failed_retryable"].get(kind, 0) + result["failed_permanent"].get(kind, 0)
            row += [f"{result['applied'].get(kind, 0):,}", f"{failed:,}"]
        table.add_row(*row)
    console.print(table)
    if plan["held_permanent_failures"]:
        console.print(
            f"  held back: {plan['held_permanent_failures']:,} change(s) that failed permanently for the "
            "same data (use --retry-failed to send them again)"
        )
    if plan["tags"]:
        console.print(
            "  per tag: "
            + ", ".join(f"{tag} +{n['add']:,}/-{n['remove']:,}" for tag, n in plan["tags"].items())
        )
    if plan["migrations"]:
        moves = Table(box=None, pad_edge=False, title="  moves since the last sync", title_justify="left")
        moves.add_column("from")
        moves.add_column("to")
        moves.add_column("customers", justify="right")
        for move in plan["migrations"][:MIGRATION_ROWS]:
            moves.add_row(move["from"], move["to"], f"{move['customers']:,}")
        hidden = len(plan["migrations"]) - MIGRATION_ROWS
        console.print(moves)
        if hidden > 0:
            console.print(f"  ... and {hidden} more (see --format json)")
    for verdict in plan["guardrails"]:
        style = "red" if verdict["blocked"] else "yellow"
        word = "BLOCKED" if verdict["blocked"] else "allowed" if "allow-large" in verdict["message"] else "ok"
        console.print(f"  [{style}]guardrail {word}[/{style}]: {verdict['message']}")
    if dry_run:
        _samples(plan["samples"], console)
    if result is not None and result.get("fatal"):
        console.print(f"  [red]stopped:[/red] {result['fatal']}")


def _samples(samples: Mapping[str, Sequence[Mapping[str, Any]]], console: Console) -> None:
    for kind, changes in samples.items():
        for change in changes[:3]:
            detail = change["tag"] or ",".join(change["reasons"]) or ""
            console.print(
                f"  e.g. {KIND_LABELS[kind]:<16} key {change['key']} ({change['address']}) {detail}"
            )


def _closing_line(summary: Mapping[str, Any]) -> str:
    total = sum(sum(p["changes"].values()) for p in summary["destinations"])
    customers = f"{summary['source_rows']:,} customers"
    if summary.get("shard"):
        customers += f" of shard {summary['shard']}"
    if summary.get("skipped_verified"):
        customers += f" ({summary['skipped_verified']:,} verified in sync, checked in the warehouse)"
    if summary["dry_run"]:
        verdict = "blocked by a guardrail" if summary["status"] == "blocked" else "nothing was sent"
        return f"\nDry run: {total:,} change(s) planned for {customers}; {verdict}; state unchanged."
    if summary["status"] == "blocked":
        return (
            "\nBlocked before sending anything: a guardrail was exceeded. Check the data; if the change "
            "is intended, run again with --allow-large-changes."
        )
    requests = sum((p.get("result") or {}).get("requests", 0) for p in summary["destinations"])
    shard = f" for {customers}" if summary.get("shard") else ""
    return (
        f"\nRun {summary['run_id']}: {summary['status']} in {summary['seconds']:.1f} s; {total:,} change(s) "
        f"planned{shard}, {requests:,} request(s) sent. Details: personasync runs show {summary['run_id']}"
    )


def run_list(runs: Sequence[RunRecord], console: Console) -> None:
    table = Table()
    for column in ("run", "command", "status", "started", "seconds", "applied", "failed", "requests"):
        table.add_column(
            column,
            justify="right" if column in ("run", "seconds", "applied", "failed", "requests") else "left",
        )
    for run in runs:
        totals = run_totals(run.summary)
        table.add_row(
            str(run.run_id),
            run.command,
            run.status,
            run.started_at,
            f"{run.summary.get('seconds', 0):.1f}",
            f"{totals['applied']:,}",
            f"{totals['failed']:,}",
            f"{totals['requests']:,}",
        )
    console.print(table)


def run_totals(summary: Mapping[str, Any]) -> dict[str, int]:
    totals = {"applied": 0, "failed": 0, "requests": 0}
    for destination in summary.get("destinations", []):
        result = destination.get("result") or {}
        totals["applied"] += sum(result.get("applied", {}).values())
        totals["failed"] += sum(result.get("failed_retryable", {}).values()) + sum(
            result.get("failed_permanent", {}).values()
        )
        totals["requests"] += result.get("requests", 0)
    return totals


def run_details(details: RunDetails, console: Console) -> None:
    run = details.run
    console.print(
        f"Run {run.run_id} ({run.command}): {run.status}; started {run.started_at}, finished "
        f"{run.finished_at or '-'}; pid {run.pid} on {run.host}"
    )
    if run.summary:
        for plan in run.summary.get("destinations", []):
            _plan(plan, console, dry_run=False)
        seconds, requests = run.summary.get("seconds", 0), run_totals(run.summary)["requests"]
        console.print(f"\nduration {seconds:.1f} s, requests {requests:,}")
    if details.failures:
        console.print(f"\n{details.failure_count:,} record failure(s); the first {len(details.failures)}:")
        table = Table(box=None, pad_edge=False)
        for column in ("destination", "key", "address", "change", "tag", "status", "reason", "attempts"):
            table.add_column(column)
        for f in details.failures:
            table.add_row(
                f.destination,
                f.key,
                f.address,
                f.change,
                f.tag or "",
                f.status,
                f.reason or "",
                str(f.attempts),
            )
        console.print(table)


def run_details_json(details: RunDetails) -> dict[str, Any]:
    run = details.run
    return {
        **run_record_json(run),
        "summary": run.summary,
        "failure_count": details.failure_count,
        "failures": [asdict(f) for f in details.failures],
    }


def run_record_json(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "command": run.command,
        "status": run.status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "host": run.host,
        "pid": run.pid,
        **run_totals(run.summary),
        "seconds": run.summary.get("seconds"),
    }
