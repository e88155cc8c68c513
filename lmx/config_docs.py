"""docs/config.md, rendered from the config tree: `python -m lmx.config_docs` (or `make docs`) rewrites it.

A table row is one field of lmx/config.py: its dotted key, its default (read from `Config()`) and its
docstring (the string literal on the line after the field, read with `ast`). A setting that validation
checks against a registry (`registry.X.check(self.f, "key")`) or a fixed tuple
(`_check_choice(self.f, NAMES, "key")`) lists the accepted names of that table as they are when the
page is generated. tests/test_docs.py checks that docs/config.md is exactly `render()`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

from lmx import config as config_module
from lmx import registry

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "config.md"
COMMAND = "`make docs` (`python -m lmx.config_docs`)"

INTRO = f"""\
# Configuration

<!-- Generated from the docstrings in lmx/config.py by {COMMAND}; edit them, not this file. -->

One frozen-dataclass tree (`lmx.config.Config`) holds every setting. Config files are Python files in
`configs/` that define `config` (or `get_config()`); `--set dotted.key=value` overrides a value and is
coerced to the field's type (integers, floats, booleans `true/false`, JSON for mappings and lists).
Invalid values raise `lmx.ConfigError` naming the key; the CLI prints it on one line and exits with 2.
The resolved config is written to `RUN/config.json`.

The `model` section is nested: the shape (`model.d_model`, `model.n_layers`, ...) sits at its top,
and each family of variants has a sub-config that the module implementing it takes whole:
`model.attention` (`AttentionConfig`), `model.position` (`PositionConfig`, with one sub-section per
scheme: `rope`, `xpos`, `t5`, `shaw`, `base_n`), `model.ffn`, `model.norm`, `model.ssm` and
`model.moe`. The accepted names of a variant setting live in the `lmx.registry` table that its
implementing module fills; the "one of" lists below are read from those tables.

```bash
lmx train --config tiny --set model.d_model=64 --set model.position.kind=alibi --set mesh.shape='{{"data": 1}}'
```

```python
from lmx import load_config
from lmx.config import ModelConfig, PositionConfig

config = load_config("tiny", ["model.n_layers=3", "model.attention.qk_norm=true"])
config = config.replace(**{{"optim.lr": 1e-3, "model.position.kind": "alibi"}})   # Python values, same validation
model = ModelConfig(position=PositionConfig(kind="alibi"))
model = model.replace(n_layers=2, position__kind="xpos")   # relative to `model`; `__` stands for the dots
```

## Renamed keys

Before the nested model config these keys were flat. A config file, `--set`, `replace` or a saved
`config.json` that names one is refused with a one-line error giving its new spelling:

```
lmx train: error: model.position: renamed to model.position.kind (the model config is nested; see docs/config.md)
```
"""


def _is_string(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _docstrings(tree: ast.Module) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Class docstrings and field docstrings ({class: {field: text}}) of the source of lmx/config.py."""
    classes, fields = {}, {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = ast.get_docstring(node) or ""
            fields[node.name] = {
                stmt.target.id: inspect.cleandoc(after.value.value)
                for stmt, after in zip(node.body, node.body[1:])
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and _is_string(after)
            }
    return classes, fields


def _choices(tree: ast.Module) -> dict[str, tuple[str, ...]]:
    """Dotted key -> accepted names, from the validation calls of lmx/config.py."""
    choices = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and len(node.args) >= 2):
            continue
        func, key = node.func, node.args[-1]
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            continue
        if (isinstance(func, ast.Attribute) and func.attr == "check" and isinstance(func.value, ast.Attribute)
                and isinstance(func.value.value, ast.Name) and func.value.value.id == "registry"):
            choices[key.value] = getattr(registry, func.value.attr).names()
        elif isinstance(func, ast.Name) and func.id == "_check_choice" and isinstance(node.args[1], ast.Name):
            choices[key.value] = getattr(config_module, node.args[1].id)
    return choices


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _section(lines: list[str], obj, key: str, depth: int, classes, fields, choices) -> None:
    cls = type(obj)
    lines += [f"{'#' * depth} {f'`{key}`' if key else 'top level'}", ""]
    if key and classes[cls.__name__]:
        lines += [_one_line(classes[cls.__name__]).replace(f"`{key}`", f"`{cls.__name__}`", 1), ""]
    rows, subsections = [], []
    for field in dataclasses.fields(obj):
        value, full = getattr(obj, field.name), f"{key}.{field.name}" if key else field.name
        if dataclasses.is_dataclass(value):
            subsections.append((value, full))
            continue
        if field.name not in fields[cls.__name__]:
            raise ValueError(f"lmx/config.py: {cls.__name__}.{field.name} has no docstring (the string on the "
                             "line after the field)")
        meaning = _one_line(fields[cls.__name__][field.name])
        if full in choices:
            meaning += "; one of " + ", ".join(f"`{name}`" for name in choices[full])
        rows.append(f"| `{full}` | `{value!r}` | {_cell(meaning)} |")
    if rows:
        lines += ["| key | default | meaning |", "|---|---|---|", *rows, ""]
    for value, full in subsections:
        _section(lines, value, full, depth + 1 if key else depth, classes, fields, choices)


def render() -> str:
    """The whole of docs/config.md."""
    tree = ast.parse(Path(config_module.__file__).read_text())
    classes, fields = _docstrings(tree)
    lines = [INTRO, "| old key | new key |", "|---|---|"]
    lines += [f"| `{old}` | `{new}` |" for old, new in config_module.RENAMED_KEYS.items()]
    lines.append("")
    _section(lines, config_module.Config(), "", 2, classes, fields, _choices(tree))
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    DOC_PATH.write_text(render())
    print(f"wrote {DOC_PATH}")


if __name__ == "__main__":
    main()
