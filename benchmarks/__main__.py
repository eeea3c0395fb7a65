"""One entry point for the benchmarks:

    python -m benchmarks run [--customers 100000,1000000,10000000] [--scenario NAME ...] [--out results.json]
    python -m benchmarks report RESULTS.json [MORE.json ...] [--docs docs/performance.md]

See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    if argv[:1] == ["run"]:
        from benchmarks import runner

        runner.main(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="measure (see `python -m benchmarks run --help`)")
    rendering = commands.add_parser("report", help="write a results file as Markdown (docs/performance.md)")
    rendering.add_argument(
        "results",
        type=Path,
        nargs="+",
        help="one or more results files (every figure of each; targets judged within each run)",
    )
    rendering.add_argument("--docs", type=Path, help="where (default docs/performance.md; - for stdout)")
    args = parser.parse_args(argv)
    from benchmarks import report

    text = report.merged(args.results)
    if args.docs == Path("-"):
        print(text, end="")
    else:
        (args.docs or report.DOCS).write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
