"""The build's table keeps one line per file at any terminal width, and prints full rows into a pipe."""
import io

import pytest
from rich.cells import cell_len
from rich.console import Console

from edgekit.report.markdown import COLUMNS
from edgekit.report.table import abbreviate, fit_table, middle

M = "mobilenetv2_digits_classifier"
ROWS = [  # what report.markdown.table_rows gives for a failed iot build with every format
    (f"{M}.onnx", "onnx", "fp32", "2.21 MB", "2.05 MB", "top1 0.9931", "+0.0000", "1.234", "1.456", "1.00x", "pass (4)"),
    (f"{M}_fp16.onnx", "onnx", "fp16", "1.11 MB", "1.01 MB", "top1 0.9931", "+0.0000", "1.734", "1.956", "0.71x",
     "FAIL: p90_latency"),
    (f"{M}_int8.onnx", "onnx", "int8", "612.4 KB", "540.1 KB", "top1 0.9896", "+0.0035", "0.912", "1.101", "1.35x ≈",
     "pass (4)"),
    (f"{M}_int4.onnx", "onnx", "int4", "388.0 KB", "350.2 KB", "top1 0.9712", "+0.0219", "1.012", "1.201", "1.22x",
     "FAIL: accuracy"),
    (f"{M}_int8.tflite", "tflite", "int8", "598.0 KB", "530.7 KB", "top1 0.9861", "+0.0070", "0.455", "0.501", "2.71x",
     "FAIL: p90_latency, rss"),
    (f"{M}_int4.tflite", "tflite", "int4", "401.2 KB", "380.9 KB", "out: cosine 0.9712", "+0.0312", "0.655", "0.701",
     "1.88x", "FAIL: accuracy, p90_latency, flash, rss"),
    (f"{M}_model_data.cc", "c_array", "int8", "598.0 KB", "-", "top1 0.9861", "+0.0070", "arena 45.2 KB", "-", "-",
     "FAIL: flash, ram"),
    (f"{M}_int8.xml", "openvino", "int8", "640.1 KB", "560.0 KB", "top1 0.9896", "+0.0035", "0.701", "0.823", "1.77x",
     "pass (4)"),
    (f"{M}_int8.pte", "executorch", "int8", "650.9 KB", "571.3 KB", "top1 0.9896", "+0.0035", "0.801", "0.923",
     "1.58x", "FAIL: p90_latency"),
]
TITLE = f"edgekit build {M} --profile iot: FAIL"


def on_terminal_rows(rows, width: int) -> list[str]:
    console = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=True)
    console.print(fit_table(TITLE, COLUMNS, rows, width=width, terminal=True))
    return console.file.getvalue().splitlines()


def on_terminal(width: int) -> list[str]:
    return on_terminal_rows(ROWS, width)


def on_terminal_text(width: int) -> str:
    return "\n".join(on_terminal(width))


def shows(cell: str, name: str) -> bool:
    """The cell is the file's name, or the name with its middle cut out."""
    if cell == name:
        return True
    head, cut, tail = cell.partition("…")
    return bool(cut) and len(cell) < len(name) and name.startswith(head) and name.endswith(tail)


def lines_per_file(lines: list[str], first_cell) -> dict[str, int]:
    return {row[0]: sum(1 for line in lines if (cell := first_cell(line)) is not None and shows(cell, row[0]))
            for row in ROWS}


@pytest.mark.parametrize("width", [60, 120, 200])
def test_a_terminal_gets_one_line_per_file_within_its_width(width):
    lines = on_terminal(width)
    assert max(cell_len(line) for line in lines) <= width
    body = [line for line in lines if line.startswith("│")]
    assert len(body) == len(ROWS)  # no row wrapped onto a second line
    found = lines_per_file(lines, lambda line: line.split("│")[1].strip() if line.startswith("│") else None)
    assert found == {row[0]: 1 for row in ROWS}


def test_what_goes_first_as_the_terminal_narrows():
    wide, mid, narrow = (on_terminal_text(w) for w in (200, 120, 60))
    assert "zip" not in wide and "zip" in on_terminal_text(216)  # the full table needs 216 columns
    assert "speedup" in wide and "FAIL: accuracy, p90_latency, flash, rss" in wide and f"{M}_model_data.cc" in wide
    assert "zip" not in mid and "speedup" not in mid and "p50" not in mid  # the low-value columns went first
    assert "FAIL acc,p90,flash,rss" in mid and "prec" in mid and "598.0K" in mid  # then the words got shorter
    assert "…" in narrow and "FAIL p90,rss" in narrow and "+0.0312" in narrow  # the verdict columns stay


def test_a_pipe_gets_full_rows_unwrapped():
    text = fit_table(TITLE, COLUMNS, ROWS, width=80, terminal=False)
    lines = text.splitlines()
    assert lines[0] == TITLE and lines[1].split() == ["file", "format", "precision", "size", "zip", "metric", "Δ",
                                                       "p50", "ms", "p90", "ms", "speedup", "gates"]
    assert len(lines) == 2 + len(ROWS) and max(len(line) for line in lines) > 150  # any length: not cut to 80
    assert not any(c in text for c in "│┃━─…")  # no box drawing, nothing cut
    found = lines_per_file(lines[2:], lambda line: line.split("  ")[0])
    assert found == {row[0]: 1 for row in ROWS}
    for row, line in zip(ROWS, lines[2:]):
        assert all(cell in line for cell in row)
    starts = {line.index(ROWS[i][10]) for i, line in enumerate(lines[2:])}
    assert len(starts) == 1  # fixed-width columns: every gates cell starts at the same place


def test_the_short_forms():
    assert abbreviate("gates", "FAIL: p90_latency, rss") == "FAIL p90,rss"
    assert abbreviate("gates", "pass (4)") == "pass"
    assert abbreviate("size", "612.4 KB") == "612.4K" and abbreviate("format", "c_array") == "c"
    assert abbreviate("metric", "out: cosine 0.9712") == "out: cos 0.9712"
    assert middle("abcdefghij", 5) == "a…hij" and middle("abc", 5) == "abc"
    assert middle(f"{M}_int8.tflite", 15, tail=12) == "mo…_int8.tflite"  # the tail asked for, then the head
    assert len(middle(f"{M}_model_data.cc", 9)) == 9


def test_no_rows_and_a_tiny_terminal_still_print():
    empty = on_terminal_rows([], 30)
    assert len(empty) == 5 and max(cell_len(line) for line in empty) <= 30  # title, header, three rules
    lines = on_terminal_rows(ROWS, 40)
    assert sum(line.startswith("│") for line in lines) == len(ROWS) and max(cell_len(line) for line in lines) <= 40


def test_the_cli_prints_full_rows_into_a_pipe(monkeypatch, capsys):
    from edgekit.cli.tables import print_build_table
    from edgekit.report.markdown import table_rows
    from test_record import _record

    record = _record(monkeypatch)
    print_build_table(record)
    out = capsys.readouterr().out.splitlines()
    rows = table_rows(record)
    assert out[0] == "edgekit build m --profile mobile: FAIL" and len(out) == 2 + len(rows) == 2 + len(record.artifacts)
    assert all(row[0] in line and row[10] in line for row, line in zip(rows, out[2:]))
