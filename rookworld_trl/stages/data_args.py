"""The data-reading fields both training stages share (GRPOScriptArguments, stages/grpo_args.py; SFTScriptArguments,
stages/sft.py): how a malformed line is treated and which positions stay out of training. Every field is also a
recipe key and a --flag."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataReading:
    skip_bad_rows: bool = field(
        default=False,
        metadata={
            "help": "Skip malformed lines of raw-text data and count them (default: stop at the first, naming it)."
        },
    )
    exclude: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Drop every training row whose position (first four FEN fields) is in these files: FEN lists, "
            ".epd files, Lichess puzzle .csv files, BIG-bench checkmate_in_one task.json (data/exclude.py)."
        },
    )
