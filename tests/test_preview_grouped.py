"""``Preview.add_all`` counts assignments in groups exactly as ``Preview.add`` counts them one by one."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

import personas.preview
from personas.model import CHANNELS, Assignment, ChannelStatus
from personas.preview import Preview

CLOCK = datetime(2026, 11, 22, tzinfo=timezone.utc)


def _assignments(rnd: random.Random, count: int, share_mappings: bool) -> Iterator[Assignment]:
    names = ["neg", "a", "b", "c"]
    shared: dict[tuple[object, ...], tuple[dict[Any, ChannelStatus], dict[Any, tuple[str, ...]]]] = {}
    reasons = [(), ("no_consent",), ("unsubscribed",), ("missing_email",), ("x", "consent_not_configured")]
    for i in range(count):
        personas = tuple(n for n in names[1:] if rnd.random() < 0.4)
        holdouts = tuple(n for n in names[1:] if n not in personas and rnd.random() < 0.1)
        negative = ("neg",) if rnd.random() < 0.1 else ()
        shape = tuple(rnd.randrange(len(reasons)) for _ in CHANNELS)
        if share_mappings and (shape, personas) in shared:
            channels, tags = shared[(shape, personas)]
        else:
            channels = {
                c: ChannelStatus(not reasons[r], reasons[r]) for c, r in zip(CHANNELS, shape, strict=True)
            }
            tags = {c: personas if channels[c].eligible else () for c in CHANNELS}
            shared[(shape, personas)] = (channels, tags)
        yield Assignment(f"k{i}", None, None, personas, holdouts, negative, channels, tags)


@pytest.mark.parametrize("share_mappings", [True, False])
def test_preview_counts_in_groups_as_one_by_one(
    share_mappings: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(personas.preview, "_MAX_GROUPS", 50)  # count the groups out many times
    personas_ = [("neg", True), ("a", False), ("b", False), ("c", False)]
    one_by_one = Preview.empty(CLOCK, "all_matches", personas_)
    for assignment in _assignments(random.Random(1), 5_000, share_mappings):
        one_by_one.add(assignment)
    grouped = Preview.empty(CLOCK, "all_matches", personas_)
    grouped.add_all(_assignments(random.Random(1), 5_000, share_mappings))
    assert grouped.as_json() == one_by_one.as_json()
    assert grouped.example_key == one_by_one.example_key is not None
