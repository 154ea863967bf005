"""The one exception type for bad input a user can fix (no Stockfish, a model that will not load, ...): stages
print its message in one line (rookworld_trl.entry.run_stage) instead of a traceback."""


class UserError(RuntimeError):
    """Bad input or a missing tool; the message says what, where and how to fix it."""
