"""Sharded sync: ``personasync sync --shard I/N`` handles only the customers whose key hashes
to shard I of N, so N workers of an orchestrator (a Kubernetes indexed Job, Airflow dynamic
task mapping) share one large sync. Together the N shards send exactly what one unsharded
run would: every customer, with their ledger rows, falls in exactly one shard.

The hash is BLAKE2b of the key's text: stable across runs, machines and Python versions
(unlike ``hash()``), and independent of row order. Indexes count from 0, like
``JOB_COMPLETION_INDEX`` and Airflow's ``map_index``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

MAX_SHARDS: Final = 1024
_FORM = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class ShardError(ValueError):
    """A ``--shard`` value that is not ``I/N`` with 0 <= I < N."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @staticmethod
    def parse(text: str) -> Shard:
        match = _FORM.match(text)
        if match is None:
            raise ShardError(f"--shard {text!r}: expected I/N, e.g. 0/4 (shard indexes count from 0)")
        index, count = int(match.group(1)), int(match.group(2))
        if not 1 <= count <= MAX_SHARDS:
            raise ShardError(f"--shard {text!r}: N must be between 1 and {MAX_SHARDS}")
        if index >= count:
            raise ShardError(f"--shard {text!r}: I must be between 0 and {count - 1}")
        return Shard(index, count)

    def holds(self, key: str) -> bool:
        """Whether the customer with this key belongs to this shard."""
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def overlaps(self, other: Shard | None) -> bool:
        """Whether two runs could handle the same customer (``None``: an unsharded run)."""
        if other is None:
            return True
        return self.count != other.count or self.index == other.index
