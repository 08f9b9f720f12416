"""The one rule for the names Lepton keys things by, and the bound on free text.

Tenants, datasets, models, nodes, jobs, regions and priority classes are named by whoever
sends a request or a heartbeat, and those names end up as message keys, database keys,
file paths, log fields, metric labels and dashboard text. A *name* is therefore:

- 1 to :data:`MAX_NAME_CHARS` (64) characters, in Unicode normal form NFC (one spelling
  per name: ``é`` is not also ``e`` + a combining accent);
- letters and digits of any script (Unicode categories L*, Nd, and the marks M* that
  some scripts need), ``.``, ``_`` and ``-``;
- starting with a letter or a digit.

So ``acme``, ``house_prices``, ``gpu-节点-07`` and ``房价-B区`` are names; a space, a tab,
a slash, ``@`` or ``:`` (separators of keys, model references and principals), an
invisible format character such as U+202E (right-to-left override, which makes a name
display as another) and 10,000 characters are not.

Free text a record carries (a job's failure reason, a progress stage) is bounded by
:data:`MAX_TEXT_CHARS`: producers :func:`clip` it, consumers refuse more.
"""

from __future__ import annotations

import math
import re
import unicodedata

from lepton.errors import RequestError

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "NAME_RULE",
    "InvalidField",
    "check_finite",
    "check_name",
    "check_text",
    "clip",
    "name_problem",
]

MAX_NAME_CHARS = 64
MAX_TEXT_CHARS = 1024
NAME_RULE = (
    f"1 to {MAX_NAME_CHARS} letters, digits, '.', '_' or '-', starting with a letter or digit"
)

# Most names are plain ASCII: one match, no per-character look-up.
_ASCII_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_CHARS - 1}}}")
_PUNCTUATION = frozenset("._-")


class InvalidField(RequestError, ValueError):
    """A value from outside that breaks its rule; ``str()`` is ``field: reason``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _shown(value: str) -> str:
    # Never echo megabytes (or invisible characters) back: a bounded, escaped excerpt.
    return ascii(value[:40]) + ("..." if len(value) > 40 else "")


def name_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a name, or None if it is one."""
    if not isinstance(value, str):
        return f"must be a name ({NAME_RULE}), got {type(value).__name__}"
    if _ASCII_NAME.fullmatch(value):
        return None
    if not 0 < len(value) <= MAX_NAME_CHARS:
        return f"must be 1 to {MAX_NAME_CHARS} characters, got {len(value)}"
    for index, char in enumerate(value):
        kind = unicodedata.category(char)
        allowed = (
            kind[0] == "L"
            or kind == "Nd"
            or (index > 0 and (kind[0] == "M" or char in _PUNCTUATION))
        )
        if not allowed:
            return (
                f"character {index + 1} (U+{ord(char):04X}) is not allowed in "
                f"{_shown(value)}: {NAME_RULE}"
            )
    if not unicodedata.is_normalized("NFC", value):
        return f"{_shown(value)} is not in Unicode normal form NFC"
    return None


def check_name(value: object, field: str) -> str:
    """``value`` if it is a name, else :class:`InvalidField` naming ``field``."""
    problem = name_problem(value)
    if problem is not None:
        raise InvalidField(field, problem)
    assert isinstance(value, str)
    return value


def check_text(value: object, field: str, limit: int = MAX_TEXT_CHARS) -> None:
    """Free text (or None) of at most ``limit`` characters, else :class:`InvalidField`."""
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        size = len(value) if isinstance(value, str) else type(value).__name__
        raise InvalidField(field, f"must be text of at most {limit} characters, got {size}")


def check_finite(value: float, field: str, *, above: float = 0.0) -> float:
    """``value`` if it is a finite number greater than ``above``, else :class:`InvalidField`."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > above):
        raise InvalidField(field, f"must be a finite number above {above:g}, got {value!r}")
    return value


def clip(text: str | None, limit: int = MAX_TEXT_CHARS) -> str | None:
    """``text`` cut to at most ``limit`` characters (marked with an ellipsis when cut)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"
