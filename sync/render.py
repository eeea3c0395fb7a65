"""Rendering for the CLI: rich tables for people, stable JSON for scripts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from personas.explain import RuleResult
from personas.model import CHANNELS, Assignment
from personas.preview import Preview
from sync.app import Explanation


def wide_console() -> Console:
    """A console at least 120 columns wide, so reason names are not cut when output is piped."""
    return Console(width=max(Console().width, 120))


def preview_table(preview: Preview, console: Console) -> None:
    console.print(
        f"Clock {preview.clock.isoformat()}  mode {preview.mode}  "
        f"customers {preview.customers:,}  with a persona {preview.with_persona:,}"
    )
    personas = Table(title="Personas (priority order)", title_justify="left")
    for column in ("persona", "members", "holdouts", *(f"tagged {c}" for c in CHANNELS)):
        personas.add_column(column, justify="left" if column == "persona" else "right")
    for name, counts in preview.personas.items():
        label = f"{name} (negative)" if name in preview.negative_personas else name
        personas.add_row(
            label,
            f"{counts.members:,}",
            f"{counts.holdouts:,}",
            *(f"{counts.tagged[c]:,}" for c in CHANNELS),
        )
    console.print(personas)
    channels = Table(title="Channels", title_justify="left")
    for column in ("channel", "eligible", "tagged", "not consented", "suppressed", "invalid identifier"):
        channels.add_column(column, justify="left" if column == "channel" else "right")
    for channel, channel_counts in preview.channels.items():
        channels.add_row(
            channel,
            f"{channel_counts.eligible:,}",
            f"{channel_counts.tagged:,}",
            f"{channel_counts.not_consented:,}",
            _reasons(channel_counts.suppressed),
            _reasons(channel_counts.invalid_identifier),
        )
    console.print(channels)
    console.print("A customer closed on a channel for several reasons is counted under each.")


def _reasons(counts: Mapping[str, int]) -> str:
    return "\n".join(f"{reason} {n:,}" for reason, n in sorted(counts.items())) or "-"


def assignment_json(assignment: Assignment) -> dict[str, Any]:
    return {
        "key": assignment.key,
        "email": assignment.email,
        "phone": assignment.phone,
        "personas": list(assignment.personas),
        "holdouts": list(assignment.holdouts),
        "negative": list(assignment.negative),
        "channels": {
            channel: {
                "eligible": status.eligible,
                "suppressed": status.suppressed,
                "reasons": list(status.reasons),
                "tags": list(assignment.tags[channel]),
            }
            for channel, status in assignment.channels.items()
        },
    }


def explanation_json(explanation: Explanation) -> dict[str, Any]:
    return {
        "format_version": 1,
        "clock": explanation.clock.isoformat(),
        "assignment": assignment_json(explanation.assignment),
        "personas": [
            {
                "name": p.name,
                "negative": p.negative,
                "matched": p.matched,
                "outcome": p.outcome,
                "rules": _rule_json(p.rules),
            }
            for p in explanation.personas
        ],
    }


def _rule_json(node: RuleResult) -> dict[str, Any]:
    return {
        "path": node.path,
        "rule": node.label,
        "matched": node.matched,
        "values": {column: _plain(value) for column, value in node.values.items()},
        "children": [_rule_json(child) for child in node.children],
    }


def _plain(value: object) -> object:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def explanation_tree(explanation: Explanation, console: Console) -> None:
    a = explanation.assignment
    console.print(f"Customer {a.key}  (clock {explanation.clock.isoformat()})")
    console.print(f"  email {a.email or '-'}  phone {a.phone or '-'}")
    console.print(f"  personas: {', '.join(a.personas) or '-'}   holdouts: {', '.join(a.holdouts) or '-'}")
    for p in explanation.personas:
        mark = "[green]✓[/]" if p.matched else "[red]✗[/]"
        tree = Tree(f"{mark} [bold]{p.name}[/]{' (negative)' if p.negative else ''}: {p.outcome}")
        _add_rule(tree, p.rules)
        console.print(tree)
    channels = Table(title="Channels", title_justify="left")
    for column in ("channel", "eligible", "tags", "why not"):
        channels.add_column(column)
    for channel, status in a.channels.items():
        channels.add_row(
            channel,
            "yes" if status.eligible else "no",
            ", ".join(a.tags[channel]) or "-",
            ", ".join(status.reasons) or "-",
        )
    console.print(channels)


def _add_rule(parent: Tree, node: RuleResult) -> None:
    mark = "[green]✓[/]" if node.matched else "[red]✗[/]"
    values = "  ".join(f"({column} = {value!r})" for column, value in node.values.items())
    branch = parent.add(f"{mark} {_escape(node.label)} {values}".rstrip())
    for child in node.children:
        _add_rule(branch, child)


def _escape(text: str) -> str:
    return text.replace("[", "\\[")
