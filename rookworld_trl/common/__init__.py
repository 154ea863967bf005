"""What every command shares, at the bottom of the house: one-line errors and the one did-you-mean (errors.py),
--flag spelling (flags.py), running a command's main with one-line failures (entry.py), bundled paths (paths.py),
library log filters (quiet_logs.py)."""
