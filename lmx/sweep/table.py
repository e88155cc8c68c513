"""`lmx sweep table`: the results store as a Markdown, CSV or JSON table, with column choice, row
filters (`--where`) and sorting (`--sort`).

Column names are the store's (`name`, `status`, `config.model.n_layers`, `metrics.val_loss`, ...); a
name may drop its `config.` or `metrics.` prefix (`model.n_layers`, `val_loss`) or be any unique tail
of dotted segments (`n_layers`). An unknown name is a one-line ConfigError listing close matches.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import re
from pathlib import Path

import pyarrow as pa

from lmx.errors import ConfigError
from lmx.sweep import runs, store

FORMATS = ("md", "csv", "json")

# The final metrics a default table shows, when some trial has them.
MAIN_METRICS = ("metrics.val_loss", "metrics.val_perplexity", "metrics.val_bits_per_byte", "metrics.params",
                "metrics.tokens_seen")

_WHERE = re.compile(r"^\s*(?P<key>[^=!<>]+?)\s*(?P<op>!=|>=|<=|==|=|>|<)\s*(?P<value>.*?)\s*$")
_NULLS = ("", "null", "none")


# --- column names ------------------------------------------------------------------------------


def short_name(column: str) -> str:
    return column.removeprefix("config.").removeprefix("metrics.")


def resolve_column(name: str, columns: list[str], what: str) -> str:
    """The store column `name` means: itself, with `config.`/`metrics.` prepended, or the one column it
    is a dotted tail of. Unknown or ambiguous -> ConfigError naming it (and `what`: --sort, --where ...)
    with the close matches."""
    name = name.strip()
    if name in columns:
        return name
    for prefix in ("config.", "metrics."):
        if prefix + name in columns:
            return prefix + name
    tails = [c for c in columns if c.endswith("." + name)]
    if len(tails) == 1:
        return tails[0]
    if len(tails) > 1:
        raise ConfigError(f"{what}: column {name!r} is ambiguous: {', '.join(tails)}")
    shorts = {short_name(c): c for c in columns}
    close = difflib.get_close_matches(name, list(columns) + list(shorts), n=5, cutoff=0.6)
    close = list(dict.fromkeys(shorts.get(c, c) for c in close))
    if close:
        hint = f"; did you mean {', '.join(close)}?"
    else:
        fields = [c for c in columns if not c.startswith(("config.", "metrics."))]
        metrics = [short_name(c) for c in columns if c.startswith("metrics.")]
        hint = (f"; columns: {', '.join(fields)}, config.<dotted key> (e.g. config.model.d_model)"
                + (f" and metrics.<name> ({', '.join(metrics)})" if metrics else ""))
    raise ConfigError(f"{what}: unknown column {name!r}{hint}")


def varying_config_columns(rows: list[dict], columns: list[str]) -> list[str]:
    """The config columns whose value differs between trials, plus the keys of the trials' own overrides
    (swept keys), without run-location keys; in store (config tree) order."""
    swept = set()
    for row in rows:
        try:
            swept.update(f"config.{k}" for k in json.loads(row.get("overrides") or "{}"))
        except (json.JSONDecodeError, TypeError):
            pass
    location = {f"config.{k}" for k in runs.RUN_LOCATION_KEYS}
    chosen = []
    for column in columns:
        if not column.startswith("config.") or column in location:
            continue
        if column in swept or len({_key(row[column]) for row in rows if row.get(column) is not None}) > 1:
            chosen.append(column)
    return chosen


def _key(value):
    return json.dumps(value, sort_keys=True, default=str)


def default_columns(rows: list[dict], columns: list[str]) -> list[str]:
    """name, status, the swept config keys, wall_s and the main final metrics that some trial has."""
    metrics = [m for m in MAIN_METRICS if m in columns and any(row.get(m) is not None for row in rows)]
    return ["name", "status", *varying_config_columns(rows, columns), "wall_s", *metrics]


# --- filters and sorting -----------------------------------------------------------------------


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def parse_where(expr: str, schema: pa.Schema):
    """`key=value`, `key!=value`, `key>value`, `key<value`, `key>=value`, `key<=value` -> a predicate on a
    row dict. Numeric columns compare as numbers; `key=null` (or `key=`) matches a missing value."""
    match = _WHERE.match(expr)
    if not match:
        raise ConfigError(f"--where {expr!r}: expected KEY=VALUE, KEY!=VALUE, KEY>VALUE, KEY<VALUE, KEY>=VALUE "
                          "or KEY<=VALUE")
    column = resolve_column(match["key"], schema.names, f"--where {expr!r}")
    op, raw = match["op"], match["value"]
    op = "=" if op == "==" else op
    kind = schema.field(column).type
    if raw.lower() in _NULLS and op in ("=", "!="):
        return lambda row: (row.get(column) is None) == (op == "=")
    if _numeric(kind):
        try:
            target = float(raw)
        except ValueError:
            raise ConfigError(f"--where {expr!r}: {column} is numeric; {raw!r} is not a number") from None
    elif pa.types.is_boolean(kind):
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"--where {expr!r}: {column} is true/false; got {raw!r}")
        target = raw.lower() in ("true", "1", "yes")
    else:
        target = raw

    def keep(row: dict) -> bool:
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return op == "!="
        if op == "=":
            return value == target
        if op == "!=":
            return value != target
        if op == ">":
            return value > target
        if op == "<":
            return value < target
        if op == ">=":
            return value >= target
        return value <= target

    return keep


def sort_rows(rows: list[dict], sort: str, columns: list[str]) -> list[dict]:
    """Rows sorted by a column (`-column`: descending); missing and NaN values last either way."""
    descending = sort.startswith("-")
    column = resolve_column(sort.removeprefix("-"), columns, f"--sort {sort!r}")

    def missing(row):
        value = row.get(column)
        return value is None or (isinstance(value, float) and math.isnan(value))

    present = sorted((r for r in rows if not missing(r)), key=lambda r: r[column], reverse=descending)
    return present + [r for r in rows if missing(r)]


# --- formatting --------------------------------------------------------------------------------


def format_cell(value) -> str:
    """A value as Markdown table text: floats to 5 significant digits, no `|` or newlines."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.5g}"
    text = str(value)
    if "\n" in text:
        text = " / ".join(line.strip() for line in text.strip().splitlines()[-3:])
    if len(text) > 80:
        text = text[:77] + "..."
    return text.replace("|", "\\|")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def render(headers: list[str], rows: list[list], fmt: str, keys: list[str] | None = None,
           right: list[bool] | None = None) -> str:
    """`rows` (lists of values, one per header) as an aligned Markdown table (number columns, or those
    `right` marks, right-aligned), CSV, or a JSON list of objects keyed by `keys` (default: the headers)."""
    if fmt == "json":
        keys = keys or headers
        return json.dumps([{k: _plain(v) for k, v in zip(keys, row, strict=True)} for row in rows], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(headers)
        for row in rows:
            writer.writerow(["" if v is None else ("true" if v is True else "false" if v is False else v)
                             for v in row])
        return buffer.getvalue().rstrip("\n")
    if fmt != "md":
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    cells = [[format_cell(v) for v in row] for row in rows]
    right = right or [bool(rows) and all(_is_number(row[i]) or row[i] is None for row in rows)
             and any(_is_number(row[i]) for row in rows) for i in range(len(headers))]
    widths = [max([len(h), 3, *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]

    def line(values):
        return "| " + " | ".join(v.rjust(w) if r else v.ljust(w)
                                 for v, w, r in zip(values, widths, right, strict=True)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if r else "-" * (w + 2)
                          for w, r in zip(widths, right, strict=True)) + "|"
    return "\n".join([line(headers), rule, *(line(c) for c in cells)])


# --- the table -----------------------------------------------------------------------------------


def filter_rows(table: pa.Table, where=()) -> list[dict]:
    """The rows (dicts) of a store table that pass every `where` expression."""
    rows = table.to_pylist()
    for expr in where or ():
        keep = parse_where(expr, table.schema)
        rows = [row for row in rows if keep(row)]
    return rows


def sweep_table(out: Path, cols=None, sort=None, where=(), fmt: str = "md") -> str:
    """The results store of sweep directory `out` as text: columns `cols` (default: name, status, the
    swept config keys, wall_s and the main final metrics), rows kept by every `where` expression,
    sorted by `sort` (`-key` descending). Markdown headers drop the `config.`/`metrics.` prefixes;
    CSV and JSON keep the full column names."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    table = store.read_store(Path(out))
    columns = table.schema.names
    if cols:
        chosen = [resolve_column(c, columns, "--cols") for c in cols]
    else:
        chosen = default_columns(table.to_pylist(), columns)
    rows = filter_rows(table, where)
    if sort:
        rows = sort_rows(rows, sort, columns)
    values = [[row.get(c) for c in chosen] for row in rows]
    if fmt == "md":
        shorts = [short_name(c) for c in chosen]
        headers = shorts if len(set(shorts)) == len(shorts) else chosen
        text = render(headers, values, "md")
        return text if rows else text + f"\n(no trials{' match' if where else ''} in {out})"
    return render(chosen, values, fmt)
