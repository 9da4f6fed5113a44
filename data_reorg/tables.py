"""The one markdown table formatter of the project.

It lives in ``data_reorg``, the lowest stage, because ``data-reorg stats`` prints a table and
``data_reorg`` may import nothing from ``e2e``; every table of ``e2e.reporting`` is built with it too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], right_aligned: Collection[int] = ()) -> str:
    """A GitHub-flavoured markdown table; cells are written with ``str``. ``right_aligned``: indices of
    the columns (numbers) aligned right, the others keep the default alignment."""
    rule = "|" + "".join("---:|" if column in right_aligned else "---|" for column in range(len(header)))
    return "\n".join([_row(header), rule, *map(_row, rows)])


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"
