"""Sharded sync (``sync --shard I/N``): N workers, each with its own lock and 1/N of the rate
limits, together send exactly what one unsharded run sends, day after day, and no shard
ever touches another shard's customers."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectors.demo_data import mutate_sqlite_demo
from sync.exit_codes import ExitCode
from sync.lock import LockHeld, acquire
from sync.shard import Shard, ShardError
from sync.state import create_state_engine, migrate
from tests.conftest import run_cli
from tests.sync_world import World, assert_in_sync, make_world

SHARDS = 4


def held(world: World) -> dict[str, tuple[dict[str, frozenset[str]], set[str]]]:
    return {name: (d.tagged(), d.suppressed()) for name, d in world.destinations.items()}


def planned(summary_json: dict[str, object]) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for plan in summary_json["destinations"]:  # type: ignore[attr-defined]
        for kind, n in plan["changes"].items():
            counts[(plan["destination"], kind)] += n
    return counts


def sharded_sync(world: World) -> Counter[tuple[str, str]]:
    total: Counter[tuple[str, str]] = Counter()
    for index in range(SHARDS):
        summary = world.sync(shard=Shard(index, SHARDS), allow_large_changes=True)
        assert summary.exit_code is ExitCode.OK, summary.as_json()
        total += planned(summary.as_json())
    return total


def test_n_shards_together_apply_exactly_the_unsharded_plan_day_after_day(tmp_path: Path) -> None:
    whole, split = make_world(tmp_path / "whole"), make_world(tmp_path / "split")  # the same data
    for day in range(3):
        if day:
            for world in (whole, split):
                mutate_sqlite_demo(world.warehouse)
        summary = whole.sync(allow_large_changes=True)
        assert summary.exit_code is ExitCode.OK
        assert sharded_sync(split) == planned(summary.as_json()), f"day {day}"
        assert held(split) == held(whole), f"day {day}"
        assert_in_sync(split)
    for index in range(SHARDS):  # all done: no shard finds anything left, nor anyone to remove
        assert sum(planned(split.sync(shard=Shard(index, SHARDS)).as_json()).values()) == 0


def test_every_customer_falls_in_exactly_one_shard() -> None:
    keys = [str(k) for k in range(2000)] + ["", "é", "key with spaces"]
    owners = Counter(sum(Shard(i, SHARDS).holds(k) for i in range(SHARDS)) for k in keys)
    assert owners == {1: len(keys)}
    sizes = Counter(next(i for i in range(SHARDS) if Shard(i, SHARDS).holds(k)) for k in keys[:2000])
    assert min(sizes.values()) > 400  # roughly even: 500 each


def test_shards_of_one_split_run_side_by_side_and_exclude_anything_overlapping(tmp_path: Path) -> None:
    engine = create_state_engine(sa.engine.make_url(f"sqlite:///{tmp_path / 'state.db'}"))
    migrate(engine)
    hour = timedelta(hours=1)
    try:
        first = acquire(engine, hour, Shard(0, 4))
        second = acquire(engine, hour, Shard(1, 4))  # another shard of the same split: fine
        for overlapping in (None, Shard(0, 4), Shard(0, 2), Shard(3, 8)):
            with pytest.raises(LockHeld, match="pid"):
                acquire(engine, hour, overlapping)
        first.release()
        second.release()
        whole = acquire(engine, hour)
        with pytest.raises(LockHeld):
            acquire(engine, hour, Shard(2, 4))  # the whole store is being synced
        whole.release()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM locks")).scalar_one() == 0  # none left behind
    finally:
        engine.dispose()


@pytest.mark.parametrize("value", ["4/4", "-1/4", "1", "a/b", "0/0", "1/2000"])
def test_a_bad_shard_is_refused_before_anything_runs(tmp_path: Path, value: str) -> None:
    make_world(tmp_path, customers=20)
    result, output = run_cli("sync", "--config", str(tmp_path / "personasync.toml"), "--shard", value)
    assert result.exit_code == ExitCode.CONFIG and "--shard" in output, output
    assert not (tmp_path / "personasync-state.db").exists()
    with pytest.raises(ShardError):
        Shard.parse(value)


def test_each_shard_takes_its_share_of_a_vendors_rate_limit(tmp_path: Path) -> None:
    """N shards run side by side: each may use 1/N of the account's limit, so together they
    stay within it (the rate the client's token bucket is built with)."""
    from sync.config_loader import load_config
    from sync.destinations import destination_for

    world = make_world(
        tmp_path,
        customers=20,
        extra_config="""
[[destinations]]
type = "hubspot"
name = "hubspot"
channel = "crm"
access_token = "pat-test"
requests_per_ten_seconds = 100

[[destinations]]
type = "mailchimp"
name = "mailchimp"
channel = "email"
api_key = "0123456789abcdef-us6"
list_id = "aud1"
requests_per_second = 8
""",
    )
    config = load_config(world.folder / "personasync.toml")
    for name in ("hubspot", "mailchimp"):
        chosen = next(d for d in config.destinations if d.name == name)
        whole = destination_for(chosen, config.personas).capabilities.requests_per_second
        quarter = destination_for(chosen, config.personas, rate_share=0.25).capabilities.requests_per_second
        assert whole is not None and quarter is not None
        assert quarter == pytest.approx(whole / 4, rel=0.05), name
