"""`rookworld report`: PNG training curves and a short markdown summary from a run's JSONL metrics (stages/eval/charts.py).

rookworld report runs/grpo                  # reads runs/grpo/metrics.jsonl, writes runs/grpo/report/
rookworld report runs/grpo/metrics.jsonl --out /tmp/report
"""

from __future__ import annotations

import argparse

from rookworld_trl.common.flags import FlagParser
from rookworld_trl.stages.eval.charts import report


def written_line(written: dict[str, str]) -> str:
    """What `report` wrote, in one line."""
    return f"rookworld report: {len(written) - 1} charts and {written['summary']}"


def main(argv: list[str] | None = None) -> int:
    parser = FlagParser(
        prog="rookworld report",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: rookworld report runs/grpo_tiny_cpu",
    )
    parser.add_argument("run", help="a training output_dir, or its metrics JSONL file")
    parser.add_argument("--out", help="directory for the PNGs and report.md (None: <run>/report)")
    parser.add_argument("--metrics", default="metrics.jsonl", help="metrics file name inside the output_dir")
    args = parser.parse_args(argv)
    print(written_line(report(args.run, args.out, args.metrics)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
