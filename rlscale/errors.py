"""Errors that reach the user as one line: which file, which field, what was expected.

Every loader and config reader raises `InputError` (never a traceback from pandas or torch), and
the CLI prints `str(error)` and exits with status 2.
"""

from __future__ import annotations

from os import PathLike


class InputError(ValueError):
    """Bad user input: a trace, config, manifest or checkpoint that cannot be used as given.

    The message names where (`file`, optional `row`, `field`) and what was expected, e.g.
    ``trace.csv: row 17, field 'prompt_tokens': expected a number >= 0, got -3``.
    """

    def __init__(
        self,
        where: str | PathLike[str],
        problem: str,
        *,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        parts = [str(where)]
        if row is not None:
            parts.append(f"row {row}")
        if field is not None:
            parts.append(f"field '{field}'")
        self.where = str(where)
        self.row = row
        self.field = field
        self.problem = problem
        super().__init__(f"{', '.join(parts)}: {problem}")
