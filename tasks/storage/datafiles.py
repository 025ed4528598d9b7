"""Reading data files exactly as written: every value a user gives reaches training and scoring as text.

`datasets`' JSON and CSV builders infer types: pyarrow turns "2049-07-05" into a timestamp and
pandas turns "007" into 7 and "NULL" into NaN, and casting back to text does not restore what
was written ("2049-07-05 00:00:00", "7", "None"). So p2m reads JSON Lines, JSON and CSV with the
standard library, number literals kept as their own text; Parquet is typed by whoever wrote it,
and its values are rendered as text (dates in ISO form, booleans as true/false).

A file that cannot be read completely is an error naming the file and line: half a dataset is
never used as if it were all of it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

from p2m.tasks.core.errors import BadInputError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class DataFileError(BadInputError):
    """A data file that is missing, not UTF-8, or malformed; the message names the file and line."""


def text_value(value) -> str | None:
    """A cell as text: strings as they are, JSON literals as written, None for a missing value."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _parse_json(text: str) -> tuple:
    """(value with numbers kept as the text they were written as, the same value parsed plainly).

    The first gives top-level cells exactly ("1.50", not 1.5); the second writes nested lists and
    objects back as JSON with their numbers as numbers.
    """
    exact = json.loads(text, parse_float=str, parse_int=str, parse_constant=str)
    return exact, json.loads(text)


def _json_record(exact, plain, where: str) -> dict[str, str | None]:
    if not isinstance(exact, dict):
        raise DataFileError(f"{where}: expected a JSON object with named fields, found {type(plain).__name__}")
    return {str(k): text_value(plain[k] if isinstance(plain[k], (list, dict)) else v) for k, v in exact.items()}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataFileError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise DataFileError(f"{path} is a folder, not a data file") from None
    except UnicodeDecodeError as e:
        raise DataFileError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise DataFileError(f"cannot read {path} ({e.strerror or e})") from None


def _jsonl_rows(path: Path) -> Iterator[dict]:
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            exact, plain = _parse_json(line)
        except json.JSONDecodeError as e:
            raise DataFileError(f"{path}, line {number}: not valid JSON ({e.msg}); fix or remove that line") from None
        yield _json_record(exact, plain, f"{path}, line {number}")


def _json_rows(path: Path) -> Iterator[dict]:
    text = _read_text(path)
    try:
        exact, plain = _parse_json(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON Lines saved as .json
            yield from _jsonl_rows(path)
            return
        raise DataFileError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    exact, plain = _records(exact), _records(plain)
    if not isinstance(exact, list):
        raise DataFileError(f"{path}: expected a list of records (or JSON Lines), found a JSON {type(plain).__name__}")
    for i, (e, p) in enumerate(zip(exact, plain, strict=True)):
        yield _json_record(e, p, f"{path}, record {i + 1}")


def _records(data):
    """The list of records a JSON document holds: itself, `{"data": [...]}`, or columns of equal length."""
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
            return lists[0]
        if data and len(lists) == len(data) and len({len(v) for v in lists}) == 1:
            return [dict(zip(data, values, strict=True)) for values in zip(*lists, strict=True)]
    return data


def _csv_rows(path: Path) -> Iterator[dict]:
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DataFileError(
                    f"{path}, line {reader.line_num}: {len(row)} fields where the header has {len(header)} "
                    "(a quote left open or an unquoted comma?)"
                )
            yield dict(zip(header, row, strict=True))
    except csv.Error as e:
        raise DataFileError(f"{path}, line {reader.line_num}: {e}") from None


def _parquet_rows(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataFileError(f"{path} does not exist") from None
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataFileError(f"{path} is not a readable Parquet file ({e.__class__.__name__}: {str(e)[:200]})") from None
    for row in table.to_pylist():
        yield {str(k): text_value(v) for k, v in row.items()}


_READERS = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}


def read_rows(path: Path, limit: int | None = None) -> list[dict[str, str | None]]:
    """The rows of a data file, every value text as written (None where a value is missing).

    Reads `limit` rows at most (all when None). Raises DataFileError for a missing, unreadable
    or malformed file, naming the line.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataFileError(f"{path}: unsupported data file type; use one of {', '.join(SUFFIXES)}")
    rows = []
    for row in reader(path):
        if limit is not None and len(rows) >= limit:
            break
        rows.append(row)
    return rows


def read_pairs(path: Path, input_column: str = "input", output_column: str = "output") -> list[dict[str, str]]:
    """`{"input", "output"}` rows of a test or training file; every row must have both.

    Raises DataFileError for a file with no rows, or a row without either column (naming it).
    """
    rows = read_rows(path)
    if not rows:
        raise DataFileError(
            f'{path} holds no rows; give it one {{"{input_column}": ..., "{output_column}": ...}} per line'
        )
    pairs = []
    for i, row in enumerate(rows, 1):
        inp, out = row.get(input_column), row.get(output_column)
        if inp is None or out is None:
            missing = [c for c, v in ((input_column, inp), (output_column, out)) if v is None]
            raise DataFileError(
                f"{path}, row {i}: no {' or '.join(repr(m) for m in missing)} value "
                f"(it has {sorted(row)}); every row needs both"
            )
        pairs.append({"input": inp, "output": out})
    return pairs


INPUT_COLUMNS = ("input", "text")


def read_inputs(path: Path, limit: int | None = None) -> list[str]:
    """A user's unlabelled inputs: the `input` (or `text`) column of a JSON Lines, JSON, CSV or
    Parquet file, or the non-empty lines of any other text file; at most `limit`, in order.

    Raises DataFileError for a missing or malformed file, a table without either column, or no inputs.
    """
    path = Path(path)
    if path.suffix.lower() in SUFFIXES:
        rows = read_rows(path, limit)
        column = next((c for c in INPUT_COLUMNS if rows and c in rows[0]), None)
        if rows and column is None:
            raise DataFileError(
                f"{path} has no `input` column (it has {sorted(rows[0])}); name the inputs' column input"
            )
        texts = [r.get(column) for r in rows]
    else:
        texts = _read_text(path).splitlines()
    texts = [t.strip() for t in texts if t and t.strip()][:limit]
    if not texts:
        raise DataFileError(f"{path} holds no inputs; give one per line, or a table with an `input` column")
    return texts
