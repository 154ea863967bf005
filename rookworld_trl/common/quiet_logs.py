"""`dropping(logger_name, text)`: leave out a library's log records that mislead in our setting (a warning about an
argument we pass on purpose, a report we turn into our own error), within a block.

    with dropping("transformers.modeling_utils", "LOAD REPORT"):
        model = GPT2LMHeadModel.from_pretrained(path)
"""

from __future__ import annotations

import contextlib
import logging


@contextlib.contextmanager
def dropping(logger_name: str, text: str):
    """Drop the records of `logger_name` whose message contains `text`, within the block.

    >>> import io
    >>> log, out = logging.getLogger("demo"), io.StringIO()
    >>> log.addHandler(logging.StreamHandler(out))
    >>> with dropping("demo", "noise"):
    ...     log.warning("noise: ignore me"); log.warning("signal")
    >>> out.getvalue().split()
    ['signal']
    """
    log = logging.getLogger(logger_name)
    only_others = logging.Filter()
    only_others.filter = lambda record: text not in record.getMessage()
    log.addFilter(only_others)
    try:
        yield
    finally:
        log.removeFilter(only_others)
