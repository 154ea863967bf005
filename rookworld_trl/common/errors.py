"""The one exception type for bad input a user can fix, printed in one line (common/entry.py run_stage), and the
one `did_you_mean` every command gives for a misspelt flag, field or command name."""


class UserError(RuntimeError):
    """Bad input or a missing tool; the message says what, where and how to fix it."""


def did_you_mean(name: str, choices, prefix: str = "--") -> str:
    """' (did you mean --learning_rate?)' for a misspelt name among `choices` (compared without dashes and
    with underscores for hyphens), else ''.

    >>> did_you_mean("--max-step", {"max_steps", "seed"}), did_you_mean("trian", ["train", "sft"], prefix="")
    (' (did you mean --max_steps?)', ' (did you mean train?)')
    """
    import difflib

    key = name.lstrip("-").split("=")[0].replace("-", "_")
    close = difflib.get_close_matches(key, [c.lstrip("-") for c in choices], n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def suggest_fields(cls):
    """Class decorator for a dataclass config: an unknown keyword is one TypeError with a did-you-mean."""
    import dataclasses
    import functools

    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        known = {f.name for f in dataclasses.fields(self) if f.init}
        unknown = [name for name in kwargs if name not in known]
        if unknown:
            name, kind = unknown[0], type(self).__name__
            raise TypeError(
                f"{kind}: unknown field {name!r}{did_you_mean(name, known, prefix='')}; help({kind}) lists "
                "the fields"
            )
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


MAX_MESSAGE = 2000  # characters of an error line: a value echoed in it is cut, not printed whole


def clip(message: str, limit: int = MAX_MESSAGE) -> str:
    """`message` cut to `limit` characters (a value a user gave may be megabytes), saying how much was left out."""
    message = str(message)
    return (
        message if len(message) <= limit else f"{message[:limit]}... ({len(message) - limit} more characters)"
    )
