"""The build's table as printed: one line per file, whatever the width.

``fit_table`` takes plain strings (a title, the column names and one tuple of cells per file), so it does not
care where they come from. On a terminal it returns a rich ``Table`` that fits the width by narrowing, never by
wrapping a row: low-value columns go first, then the words are abbreviated, then long file names lose their
middle, then more columns go; a pipe or a CI log gets the full rows as plain text, as wide as they are.
"""
from __future__ import annotations

from collections.abc import Sequence

MIN_FILE = 12  # a file name is never cut shorter than this while another column can still go
LEFT = ("file", "format", "metric", "gates")  # the other columns are figures, right-aligned
# The order of narrowing: (columns dropped, abbreviated). The file name's middle is cut from the first
# abbreviated step on, before the next column goes.
PLAN = (((), False), (("zip",), False), (("zip", "speedup"), False), (("zip", "speedup", "p50 ms"), False),
        (("zip", "speedup", "p50 ms"), True), (("zip", "speedup", "p50 ms", "format"), True),
        (("zip", "speedup", "p50 ms", "format", "size"), True),
        (("zip", "speedup", "p50 ms", "format", "size", "metric"), True),
        (("zip", "speedup", "p50 ms", "format", "size", "metric", "precision"), True))
HEADERS = {"precision": "prec", "format": "fmt", "speedup": "spd", "p50 ms": "p50", "p90 ms": "p90"}
WORDS = {  # per column, (long, short) replacements, in order
    "format": (("c_array", "c"), ("openvino", "ov"), ("executorch", "et"), ("tflite", "tfl")),
    "size": ((" KB", "K"), (" MB", "M")), "zip": ((" KB", "K"), (" MB", "M")),
    "metric": (("cosine", "cos"), ("argmax", "agr"), ("agree@thr", "agr@t")),
    "p50 ms": (("arena ", "a "), (" KB", "K")),
    "gates": (("FAIL: ", "FAIL "), ("p90_latency", "p90"), ("accuracy", "acc"), ("tflm_ops", "ops"),
              ("formats", "fmts"), (", ", ",")),
}


def fit_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], *, width: int, terminal: bool):
    """What to print for ``rows`` under ``columns``: on a terminal, a rich Table at most ``width`` columns wide
    with one line per row; elsewhere, plain text (fixed-width columns, no box, no wrapping, any length)."""
    columns = tuple(columns)
    rows = [tuple(str(cell) for cell in row) for row in rows]
    if not terminal:
        return plain(title, columns, rows)
    width = max(int(width), 20)
    for dropped, short in PLAN:
        keep = [i for i, c in enumerate(columns) if c not in dropped]
        heads = [HEADERS.get(columns[i], columns[i]) if short else columns[i] for i in keep]
        cells = [[abbreviate(columns[i], row[i]) if short else row[i] for i in keep] for row in rows]
        need = _need(heads, cells)
        if need <= width:
            return _rich(title, [columns[i] for i in keep], heads, cells)
        at = keep.index(columns.index("file")) if "file" in columns else None
        if short and at is not None:
            names = [row[at] for row in cells]
            room = width - (need - _widths(heads, cells)[at])
            last = dropped == PLAN[-1][0]
            if room >= _floor(names) or last:
                tail = max(len(n) for n in names) - len(_common_prefix(names)) if len(names) > 1 else 0
                cut = max(room, min(_floor(names), 10)) if last else room
                cells = [row[:at] + [middle(row[at], cut, tail)] + row[at + 1:] for row in cells]
                return _rich(title, [columns[i] for i in keep], heads, _squeeze(heads, cells, width, at))
    return _rich(title, [columns[i] for i in keep], heads, cells)  # rich cuts the cells' ends: still one line


def _common_prefix(names: Sequence[str]) -> str:
    import os

    return os.path.commonprefix(list(names))


def _floor(names: Sequence[str]) -> int:
    """The narrowest file column that still tells the files apart: what follows the name they share (the
    precision and the suffix), after a few of its letters and an ellipsis; at least MIN_FILE."""
    longest = max((len(n) for n in names), default=0)
    shared = len(_common_prefix(names)) if len(names) > 1 else longest
    return min(longest, max(MIN_FILE, 4 + max((len(n) - shared for n in names), default=0)))


def _squeeze(heads: list[str], cells: list[list[str]], width: int, at: int) -> list[list[str]]:
    """Cut the widest other column's cells at their end, one character at a time, until the table fits."""
    widths = _widths(heads, cells)
    while sum(widths) + 3 * len(widths) + 1 > width:
        wide = [i for i, w in enumerate(widths) if i != at and w > max(len(heads[i]), 4)]
        if not wide:
            break
        i = max(wide, key=widths.__getitem__)
        widths[i] -= 1
        for row in cells:
            if len(row[i]) > widths[i]:
                row[i] = row[i][:widths[i] - 1] + "…"
    return cells


def plain(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The title, the header and one line per row, columns padded to their widest cell."""
    widths = _widths(columns, rows)

    def line(cells) -> str:
        return "  ".join(c.ljust(w) if col in LEFT else c.rjust(w)
                         for c, w, col in zip(cells, widths, columns)).rstrip()
    return "\n".join([title, line(columns)] + [line(r) for r in rows])


def abbreviate(column: str, text: str) -> str:
    """The short form of one cell: 'FAIL: p90_latency, rss' -> 'FAIL p90,rss', '12.5 KB' -> '12.5K'."""
    if column == "gates" and text.startswith("pass ("):
        return "pass"
    for long, short in WORDS.get(column, ()):
        text = text.replace(long, short)
    return text


def middle(text: str, width: int, tail: int = 0) -> str:
    """``text`` at most ``width`` characters, its middle replaced by an ellipsis. The end keeps at least
    ``tail`` characters where it can (where the files of one build differ: the precision and the suffix),
    and two thirds otherwise."""
    if len(text) <= width:
        return text
    keep = max(width - 1, 1)
    head = max(0, min(keep // 3, keep - tail))
    return text[:head] + "…" + text[len(text) - (keep - head):]


def _widths(heads: Sequence[str], cells: Sequence[Sequence[str]]) -> list[int]:
    from rich.cells import cell_len

    return [max([cell_len(h)] + [cell_len(row[i]) for row in cells]) for i, h in enumerate(heads)]


def _need(heads: Sequence[str], cells: Sequence[Sequence[str]]) -> int:
    """The rendered width of a boxed rich table: each column's cells plus one space either side and a rule."""
    return sum(_widths(heads, cells)) + 3 * len(heads) + 1


def _rich(title: str, names: Sequence[str], heads: Sequence[str], cells: Sequence[Sequence[str]]):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title, no_wrap=True, overflow="ellipsis"))
    for name, head in zip(names, heads):
        table.add_column(Text(head), justify="left" if name in LEFT else "right", no_wrap=True, overflow="ellipsis")
    for row in cells:
        table.add_row(*(Text(c) for c in row))
    return table
