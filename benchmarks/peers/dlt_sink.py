"""Peer (b): dlt, with a ``@dlt.destination`` sink pushing the same records as the naive peer.

    python -m benchmarks.peers.dlt_sink --warehouse WAREHOUSE.db --pipelines-dir DIR [--as-of DAY]

A dlt resource yields :func:`benchmarks.peers.naive.contacts`; dlt extracts them to load
packages on disk, normalises them and hands them to the sink in batches of 10,000 (one
Klaviyo import job), which sends them with the naive peer's :class:`Pusher`. dlt brings
the plumbing (load packages, retries of failed load jobs, pipeline state in
``--pipelines-dir``), not a diff: a sink receives every record the resource yields, so
every run resends everything. Incremental loading (``dlt.sources.incremental``) would need
an updated-at cursor, which the demo has not, and would still miss deletions and consent
withdrawn in other tables. Telemetry is off (``RUNTIME__DLTHUB_TELEMETRY``).
"""

from __future__ import annotations

import json
import os
from datetime import date

from benchmarks.peers.naive import KLAVIYO_JOB, Pusher, arguments, contacts

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--pipelines-dir", required=True, help="where dlt keeps its state and load packages")
    args = parser.parse_args()
    import dlt  # the bench extra

    pusher = Pusher()
    rows = 0

    @dlt.resource(name="contacts", write_disposition="append")
    def records():  # type: ignore[no-untyped-def]
        nonlocal rows
        for record in contacts(args.warehouse, date.fromisoformat(args.as_of)):
            rows += 1
            yield record

    @dlt.destination(batch_size=KLAVIYO_JOB, name="vendors", max_table_nesting=0)
    def vendors(items, table) -> None:  # type: ignore[no-untyped-def]
        pusher.push(items)

    pipeline = dlt.pipeline("personas", destination=vendors, pipelines_dir=args.pipelines_dir)
    pipeline.run(records())
    print(json.dumps({"rows": rows, **pusher.counts}))


if __name__ == "__main__":
    main()
