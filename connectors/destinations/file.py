"""A real local destination: CSV files a marketer can import into any ESP, SMS tool or CRM.

Per destination folder:

- ``members.csv``: ``key,email,phone,tags``, one row per contact holding our tags
  (tags ``;``-separated), sorted by key and address;
- ``suppressions.csv``: ``key,email,phone,reasons``, one row per contact we suppressed.

A contact is identified by (key, address): the email for the email and CRM channels, the
phone for SMS, so a contact whose address changed shows on two rows until the old one has
lost our tags.

Runs, and why. Merging each batch into the whole file would rewrite the file once per
batch: a first sync of N customers would cost N / batch size rewrites of a growing file,
which is quadratic (at 10M customers the suppressions file was 220 MB per rewrite). So
``apply`` writes its batch, sorted by contact, as a numbered *run* in the hidden folder
``.pending/`` (``000001-members.csv``, ...: temp file, fsync, rename, fsync), and
acknowledges it once the run is durable. The runs are merged into the file in one
streaming k-way merge (the file and every run are sorted by contact; a contact's changes
apply in run order, then in batch order) when the sync run ends (:meth:`finish`), and as
soon as a file's runs, this batch included, would hold more bytes than the file itself
(then the batch goes straight into that merge, not to a run): the file at least doubles
between merges, so a whole sync writes a small multiple of its output, not N / batch size
times. When ``MAX_RUNS`` runs pile up before that (small batches into a large file), they
are merged into one run instead, so a merge never opens more than ``MAX_RUNS + 1`` files.
Memory stays one batch.

The merged file replaces the old one atomically (temp file, fsync, rename), so a reader, or
a crash, only ever sees a whole file, complete once the run has ended. Runs left behind by
a crash are merged on the next ``apply``, ``finish``, ``members`` or ``suppressions``. A
crash after a merge's rename but before its runs are deleted (oldest first) leaves the
latest of them behind, to be merged again; a crash during a compaction leaves older runs
that the compacted one repeats. Neither changes the result: every change sets one tag,
one suppression or the address, so the last change to set each one still wins.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
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
BATCH_SIZE: Final = 50_000  # changes per batch; bounds memory per batch
LIST_SEPARATOR: Final = ";"
PENDING_FOLDER: Final = ".pending"  # the runs not yet merged
MAX_RUNS: Final = 64  # a file's runs are merged into one run once there are this many
TAG_KINDS: Final = (ChangeKind.ADD_TAG, ChangeKind.REMOVE_TAG)
HELD: Final = "held"  # the kind of an entry standing for a row the file already holds

Row = dict[str, str]
Entry = Sequence[str]
"""One line of a run: key, address, kind, email, phone, then the tag (tag kinds) or the
reasons; a row of the file becomes one too, of kind ``HELD``, so merging is one fold."""


class FileDestination:
    """:class:`sync.ports.Destination` writing CSV files into ``folder``."""

    def __init__(self, name: str, channel: Channel, folder: Path, batch_size: int = BATCH_SIZE) -> None:
        self.name = name
        self.folder = folder
        self._pending = folder / PENDING_FOLDER
        self._address_column = ADDRESS_KIND[channel]
        self._capabilities = Capabilities(
            max_batch={kind: batch_size for kind in ChangeKind}, requests_per_second=None, can_unsuppress=True
        )
        self._recovered = False  # runs left by an earlier process merged?

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def check(self) -> None:
        existing = next(p for p in (self.folder, *self.folder.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise DestinationError(f"{self.name}: cannot create or write the folder {self.folder}")

    def apply(self, kind: ChangeKind, batch: Sequence[Change]) -> BatchResult:
        file_name = MEMBERS_FILE if kind in TAG_KINDS else SUPPRESSIONS_FILE
        entries = sorted(map(_entry, batch), key=_contact)  # stable: a contact's changes keep their order
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not self._recovered:
                self._merge_all()
            runs = self._runs(file_name)
            if _size(*runs) + _run_size(entries) > _size(self.folder / file_name):
                self._merge(file_name, entries)
            else:
                self._write_run(file_name, entries)
                if len(runs) + 1 >= MAX_RUNS:
                    self._compact(self._runs(file_name))
        except OSError as exc:
            raise DestinationError(f"{self.name}: cannot write {self.folder}: {exc.strerror}") from None
        return BatchResult([ChangeResult(change, Outcome.APPLIED) for change in batch])

    def finish(self) -> None:
        """Merge every pending run into its file; the engine calls it when a sync run ends."""
        try:
            self._merge_all()
        except OSError as exc:
            raise DestinationError(f"{self.name}: cannot write {self.folder}: {exc.strerror}") from None

    def members(self) -> list[Row]:
        """The current members file, pending runs merged first (for tests and the demo)."""
        self._merge(MEMBERS_FILE)
        return list(self._read(self.folder / MEMBERS_FILE))

    def suppressions(self) -> list[Row]:
        self._merge(SUPPRESSIONS_FILE)
        return list(self._read(self.folder / SUPPRESSIONS_FILE))

    # --- runs ------------------------------------------------------------------------------
    def _runs(self, file_name: str) -> list[Path]:
        """The pending runs of ``file_name``, oldest first."""
        if not self._pending.is_dir():
            return []
        runs = [p for p in self._pending.iterdir() if _run_number(p) and p.name.endswith(f"-{file_name}")]
        return sorted(runs, key=_run_number)

    def _write_run(self, file_name: str, entries: Iterable[Entry]) -> None:
        if not self._pending.is_dir():
            self._pending.mkdir()
            _fsync_folder(self.folder)
        number = max(map(_run_number, self._pending.iterdir()), default=0) + 1
        temporary = self._pending / ".run.tmp"
        with open(temporary, "w", newline="", encoding="utf-8") as out:
            csv.writer(out).writerows(entries)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self._pending / f"{number:06d}-{file_name}")
        _fsync_folder(self._pending)

    def _compact(self, runs: list[Path]) -> None:
        """Merge ``runs`` into one run in place of the newest (the file is left alone), so a
        merge never opens more than ``MAX_RUNS + 1`` files."""
        temporary = self._pending / ".run.tmp"
        with open(temporary, "w", newline="", encoding="utf-8") as out:
            merged = heapq.merge(*map(_read_run, runs), key=_contact)  # stable: runs stay in order
            csv.writer(out).writerows(merged)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, runs[-1])
        _fsync_folder(self._pending)
        for run in runs[:-1]:
            run.unlink()

    # --- merging ---------------------------------------------------------------------------
    def _merge_all(self) -> None:
        self._merge(MEMBERS_FILE)
        self._merge(SUPPRESSIONS_FILE)
        self._recovered = True
        if self._pending.is_dir():
            for leftover in self._pending.glob(".*.tmp"):  # a run a crash interrupted, never acknowledged
                leftover.unlink()
            if not any(self._pending.iterdir()):
                self._pending.rmdir()

    def _merge(self, file_name: str, batch: Sequence[Entry] = ()) -> None:
        """Merge the pending runs of ``file_name``, then ``batch`` (sorted), into the file in
        one streaming pass; then drop the runs."""
        runs = self._runs(file_name)
        if not runs and not batch:
            return
        columns, update = (
            (MEMBER_COLUMNS, _tag_update)
            if file_name == MEMBERS_FILE
            else (SUPPRESSION_COLUMNS, _suppression_update)
        )
        path = self.folder / file_name
        temporary = path.with_name(f".{file_name}.tmp")
        # heapq.merge is stable: for one contact, the file's row comes first, then the runs in order
        streams: list[Iterable[Entry]] = [self._held(path), *map(_read_run, runs), batch]
        with open(temporary, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(columns)
            for _, entries in itertools.groupby(heapq.merge(*streams, key=_contact), key=_contact):
                row: list[str] | None = None
                for entry in entries:
                    row = update(row, entry)
                if row is not None:
                    writer.writerow(row)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        _fsync_folder(self.folder)
        for run in runs:  # oldest first: what a crash leaves is always the latest runs
            run.unlink()
        _fsync_folder(self._pending)

    def _held(self, path: Path) -> Iterator[Entry]:
        """The rows of the file (``key,email,phone,tags`` or ``...,reasons``), as entries."""
        if not path.exists():
            return
        by_phone = self._address_column == "phone"
        with open(path, newline="", encoding="utf-8") as handle:
            rows = csv.reader(handle)
            next(rows, None)  # the header
            for key, email, phone, value in rows:
                yield key, phone if by_phone else email, HELD, email, phone, value

    @staticmethod
    def _read(path: Path) -> Iterator[Row]:
        if not path.exists():
            return
        with open(path, newline="", encoding="utf-8") as handle:
            yield from csv.DictReader(handle)


def _contact(entry: Entry) -> tuple[str, str]:
    return entry[0], entry[1]


def _entry(change: Change) -> Entry:
    value = change.tag or "" if change.kind in TAG_KINDS else LIST_SEPARATOR.join(change.reasons)
    return change.key, change.address, change.kind.value, change.email or "", change.phone or "", value


def _read_run(path: Path) -> Iterator[Entry]:
    with open(path, newline="", encoding="utf-8") as handle:
        yield from csv.reader(handle)


def _run_number(path: Path) -> int:
    """The number of a run file (``000001-members.csv``), 0 for anything else."""
    number, _, rest = path.name.partition("-")
    return int(number) if number.isdigit() and rest in (MEMBERS_FILE, SUPPRESSIONS_FILE) else 0


def _size(*paths: Path) -> int:
    return sum(path.stat().st_size for path in paths if path.exists())


def _run_size(entries: Sequence[Entry]) -> int:
    """About the bytes ``entries`` take as a run: the fields, 5 commas and CRLF (quoting aside)."""
    return sum(map(len, itertools.chain.from_iterable(entries))) + 7 * len(entries)


def _tag_update(row: list[str] | None, entry: Entry) -> list[str] | None:
    key, _, kind, email, phone, tag = entry
    if kind == HELD:
        return [key, email, phone, tag]
    tags = set(row[3].split(LIST_SEPARATOR)) - {""} if row else set()
    if kind == ChangeKind.ADD_TAG.value:
        tags.add(tag)
        row = [key, email, phone, ""]
    elif row is None:
        return None
    else:
        tags.discard(tag)
    if not tags:
        return None
    row[3] = LIST_SEPARATOR.join(sorted(tags))
    return row


def _suppression_update(row: list[str] | None, entry: Entry) -> list[str] | None:
    key, _, kind, email, phone, reasons = entry
    return None if kind == ChangeKind.UNSUPPRESS.value else [key, email, phone, reasons]


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
