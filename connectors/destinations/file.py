"""A real local destination: CSV files a marketer can import into any ESP, SMS tool or CRM.

Per destination folder:

- ``members.csv``: ``key,email,phone,tags``, one row per contact holding our tags
  (tags ``;``-separated), sorted by key;
- ``suppressions.csv``: ``key,email,phone,reasons``, one row per contact we suppressed.

Each batch is merged into the current file in one pass (both are sorted) and the result
replaces it atomically (temp file, fsync, rename), so a reader, or a crash, only ever
sees a whole file. A contact is identified by (key, address): the email for the email and
CRM channels, the phone for SMS, so a contact whose address changed shows on two rows
until the old one has lost our tags.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

from personas.model import Channel
from sync.changes import Change, ChangeKind
from sync.membership import ADDRESS_KIND
from sync.ports import BatchResult, Capabilities, ChangeResult, DestinationError, Outcome

MEMBERS_FILE: Final = "members.csv"
SUPPRESSIONS_FILE: Final = "suppressions.csv"
MEMBER_COLUMNS: Final = ("key", "email", "phone", "tags")
SUPPRESSION_COLUMNS: Final = ("key", "email", "phone", "reasons")
BATCH_SIZE: Final = 50_000  # changes merged per file rewrite; bounds memory per batch
LIST_SEPARATOR: Final = ";"

Row = dict[str, str]


class FileDestination:
    """:class:`sync.ports.Destination` writing CSV files into ``folder``."""

    def __init__(self, name: str, channel: Channel, folder: Path, batch_size: int = BATCH_SIZE) -> None:
        self.name = name
        self.folder = folder
        self._address_column = ADDRESS_KIND[channel]
        self._capabilities = Capabilities(
            max_batch={kind: batch_size for kind in ChangeKind}, requests_per_second=None, can_unsuppress=True
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def check(self) -> None:
        existing = next(p for p in (self.folder, *self.folder.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise DestinationError(f"{self.name}: cannot create or write the folder {self.folder}")

    def apply(self, kind: ChangeKind, batch: Sequence[Change]) -> BatchResult:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if kind in (ChangeKind.ADD_TAG, ChangeKind.REMOVE_TAG):
                self._merge(MEMBERS_FILE, MEMBER_COLUMNS, batch, _tag_update)
            else:
                self._merge(SUPPRESSIONS_FILE, SUPPRESSION_COLUMNS, batch, _suppression_update)
        except OSError as exc:
            raise DestinationError(f"{self.name}: cannot write {self.folder}: {exc.strerror}") from None
        return BatchResult([ChangeResult(change, Outcome.APPLIED) for change in batch])

    def members(self) -> list[Row]:
        """The current members file (for tests and the demo)."""
        return list(self._read(self.folder / MEMBERS_FILE))

    def suppressions(self) -> list[Row]:
        return list(self._read(self.folder / SUPPRESSIONS_FILE))

    # --- merging ---------------------------------------------------------------------------
    def _merge(
        self,
        file_name: str,
        columns: tuple[str, ...],
        batch: Sequence[Change],
        update: Callable[[Row | None, Change], Row | None],
    ) -> None:
        by_contact: dict[tuple[str, str], list[Change]] = {}
        for change in batch:
            by_contact.setdefault((change.key, change.address), []).append(change)
        pending = sorted(by_contact)
        path = self.folder / file_name
        temporary = path.with_name(f".{file_name}.tmp")
        with open(temporary, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=columns)
            writer.writeheader()
            i = 0

            def emit(ident: tuple[str, str], row: Row | None) -> None:
                for change in by_contact.pop(ident, []):
                    row = update(row, change)
                if row is not None:
                    writer.writerow(row)

            for row in self._read(path):
                ident = (row["key"], row[self._address_column])
                while i < len(pending) and pending[i] < ident:
                    emit(pending[i], None)
                    i += 1
                if i < len(pending) and pending[i] == ident:
                    i += 1
                emit(ident, row)
            for ident in pending[i:]:
                emit(ident, None)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        _fsync_folder(self.folder)

    @staticmethod
    def _read(path: Path) -> Iterator[Row]:
        if not path.exists():
            return
        with open(path, newline="", encoding="utf-8") as handle:
            yield from csv.DictReader(handle)


def _tag_update(row: Row | None, change: Change) -> Row | None:
    tags = set(row["tags"].split(LIST_SEPARATOR)) - {""} if row else set()
    assert change.tag is not None
    if change.kind is ChangeKind.ADD_TAG:
        tags.add(change.tag)
        row = {"key": change.key, "email": change.email or "", "phone": change.phone or "", "tags": ""}
    elif row is None:
        return None
    else:
        tags.discard(change.tag)
    if not tags:
        return None
    row["tags"] = LIST_SEPARATOR.join(sorted(tags))
    return row


def _suppression_update(row: Row | None, change: Change) -> Row | None:
    if change.kind is ChangeKind.UNSUPPRESS:
        return None
    return {
        "key": change.key,
        "email": change.email or "",
        "phone": change.phone or "",
        "reasons": LIST_SEPARATOR.join(change.reasons),
    }


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
