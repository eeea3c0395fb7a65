"""Planned changes on disk, so a run with millions of changes plans in bounded memory.

While the diff streams, each change is appended to a file per (destination, kind) in a
private temporary folder. Applying reads them back in batches, in apply order. A plan
saved with ``--plan-out`` is one JSON-lines file: a header line, then per (destination,
kind) a section line followed by its changes; ``personasync apply`` reads it the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any, Final

from sync.changes import APPLY_ORDER, Change, ChangeKind

PLAN_FORMAT: Final = "personasync-plan"
PLAN_FORMAT_VERSION: Final = 1


def encode(change: Change) -> str:
    return json.dumps(
        [
            change.key,
            change.address,
            change.email,
            change.phone,
            change.fingerprint,
            change.tag,
            change.reasons,
        ],
        separators=(",", ":"),
    )


def decode(kind: ChangeKind, line: str) -> Change:
    key, address, email, phone, fp, tag, reasons = json.loads(line)
    return Change(kind, key, address, email, phone, fp, tag, tuple(reasons))


@dataclass(frozen=True)
class Section:
    destination: str
    kind: ChangeKind
    count: int


class PlanError(Exception):
    """A saved plan cannot be read or no longer applies."""


class Spool:
    """Changes per (destination, kind) in a temporary folder; delete with :meth:`close`."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="personasync-plan-"))
        self._files: dict[tuple[str, ChangeKind], IO[str]] = {}
        self._counts: dict[tuple[str, ChangeKind], int] = {}

    def write(self, destination: str, changes: Sequence[Change]) -> None:
        for change in changes:
            slot = (destination, change.kind)
            handle = self._files.get(slot)
            if handle is None:
                handle = self._files[slot] = open(self._path(slot), "w", encoding="utf-8")  # noqa: SIM115
                self._counts[slot] = 0
            handle.write(encode(change) + "\n")
            self._counts[slot] += 1

    def _path(self, slot: tuple[str, ChangeKind]) -> Path:
        return self._dir / f"{slot[0]}.{slot[1].value}.jsonl"

    def finish(self) -> None:
        for handle in self._files.values():
            handle.close()

    def sections(self, destinations: Sequence[str]) -> list[Section]:
        """Non-empty (destination, kind) groups, in apply order: every destination's
        suppressions first, then removals, lifts and additions."""
        return [
            Section(d, kind, self._counts[(d, kind)])
            for kind in APPLY_ORDER
            for d in destinations
            if self._counts.get((d, kind))
        ]

    def changes(self, section: Section) -> Iterator[Change]:
        with open(self._path((section.destination, section.kind)), encoding="utf-8") as handle:
            for line in handle:
                yield decode(section.kind, line)

    def save(self, path: Path, header: dict[str, Any], destinations: Sequence[str]) -> None:
        """Write the plan file (atomically: temp file + rename)."""
        temporary = path.with_name(f".{path.name}.tmp")
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(
                json.dumps({"format": PLAN_FORMAT, "format_version": PLAN_FORMAT_VERSION, **header}) + "\n"
            )
            for section in self.sections(destinations):
                out.write(
                    json.dumps(
                        {
                            "section": {
                                "destination": section.destination,
                                "kind": section.kind.value,
                                "count": section.count,
                            }
                        }
                    )
                    + "\n"
                )
                with open(self._path((section.destination, section.kind)), encoding="utf-8") as part:
                    shutil.copyfileobj(part, out)
        os.replace(temporary, path)

    def close(self) -> None:
        self.finish()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def read_header(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            header = json.loads(handle.readline())
    except (OSError, ValueError) as exc:
        raise PlanError(f"{path}: not a readable plan file ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != PLAN_FORMAT:
        raise PlanError(f"{path}: not a personasync plan file")
    if header.get("format_version") != PLAN_FORMAT_VERSION:
        raise PlanError(f"{path}: plan format version {header.get('format_version')} is not supported")
    return header


def read_sections(path: Path) -> Iterator[tuple[Section, Iterator[Change]]]:
    """Each section of a saved plan with its changes (consume them before the next section)."""
    with open(path, encoding="utf-8") as handle:
        handle.readline()
        while line := handle.readline():
            try:
                raw = json.loads(line)["section"]
                section = Section(raw["destination"], ChangeKind(raw["kind"]), int(raw["count"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise PlanError(f"{path}: damaged plan file ({exc})") from None
            changes = (decode(section.kind, text) for text in islice(handle, section.count))
            yield section, changes
            for _ in changes:  # skip what the consumer did not read (e.g. a destination that failed)
                pass
