"""The documentation's Python examples run: every ```python block of README.md and docs/*.md is
executed, so a renamed function, module, parameter path or config key fails here, naming the file and
line of the block.

Conventions for the blocks:
- Each block runs alone, in a fresh namespace, with the working directory set to a temporary
  directory, so files it writes (runs/, exported/) land there, and with $LMX_CACHE set to this test
  session's cache directory. Blocks of one file share this process (and JAX's compilation cache), so
  tiny models keep the whole module within seconds once the trained run exists.
- A block that loads a trained run reads it from `runs/exp1` (the directory the README's CLI examples
  train into): the test links `runs/exp1` in that working directory to a run it trains once per
  session with `lmx train --config tiny` (the fixture `trained_run`), only if some selected block
  names `runs/exp1`.
- A block that is not a program (a signature listing, a formula) is marked with an HTML comment on
  the line right before its fence, `<!-- not-run: REASON -->`; this test skips it and reports the
  reason. Keep those few. `<!-- slow: REASON -->` runs the block under @pytest.mark.slow (`make test`
  runs it, `make test-fast` does not): only for a block that trains and whose API another block
  covers (docs/training.md's plain `train` example; its hooks example trains the same way and runs).

Tracebacks point into the Markdown file: each block is compiled with the file's path as its filename
and its code at the lines it has there.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gc
import os
import re
import shutil
import time
from pathlib import Path

import jax
import pytest

from lmx.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!--\s*(?P<kind>not-run|slow):\s*(?P<reason>.+?)\s*-->$")
RUN_PLACEHOLDER = "runs/exp1"


@dataclasses.dataclass(frozen=True)
class Example:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    not_run: str | None  # the reason given by a `<!-- not-run: ... -->` comment
    slow: str | None = None  # the reason given by a `<!-- slow: ... -->` comment

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Example]:
    """Every ```python block of a Markdown file, with the line of its fence and its marker's reason."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```"):
            i += 1
            continue
        start, end = i, i + 1
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        if fence == "```python":
            j = start - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            marker = MARKER.match(lines[j].strip()) if j >= 0 else None
            reasons = {marker["kind"]: marker["reason"]} if marker else {}
            blocks.append(Example(path, start + 1, "\n".join(lines[start + 1:end]) + "\n",
                                  reasons.get("not-run"), reasons.get("slow")))
        i = end + 1
    return blocks


EXAMPLES = [block for path in DOC_FILES for block in python_blocks(path)]


def test_the_docs_have_python_examples():
    """The extraction finds the blocks (a broken fence parser would make every test below vacuous)."""
    names = {e.name.split(":")[0] for e in EXAMPLES if e.not_run is None}
    assert "README.md" in names and "docs/model.md" in names and "docs/decoding.md" in names, names
    assert sum(e.not_run is None for e in EXAMPLES) >= 10


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, cache_dir):
    """A finished `lmx train --config tiny` run, trained once per test session: under pytest-xdist the
    workers share it (the first to get the lock trains it in the run's common temporary directory)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this pytest run
    run_dir = root / "doc-examples-run"
    with open(root / "doc-examples-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (run_dir / "summary.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # a run that failed in another worker
            code = main(["train", "--config", "tiny", "--quiet", "--run-dir", str(run_dir),
                         "--set", f"data.cache_dir={cache_dir}"])
            assert code == 0, "lmx train --config tiny failed: the examples that load runs/exp1 cannot run"
    return run_dir


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
    """Free the examples' compiled programs and arrays when the module is done, not at interpreter exit
    (where an xdist worker's shutdown can interrupt JAX's garbage-collection callback)."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.mark.parametrize("example", [pytest.param(e, id=e.name, marks=[pytest.mark.slow] if e.slow else [])
                                     for e in EXAMPLES])
def test_doc_example_runs(example: Example, request, tmp_path, monkeypatch, cache_dir):
    __tracebackhide__ = True  # the failure shows the Markdown file's lines, not this function
    if example.not_run is not None:
        pytest.skip(f"marked not-run: {example.not_run}")
    if RUN_PLACEHOLDER in example.code:
        (tmp_path / RUN_PLACEHOLDER).parent.mkdir(parents=True)
        (tmp_path / RUN_PLACEHOLDER).symlink_to(request.getfixturevalue("trained_run"), target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMX_CACHE", cache_dir)
    # the code at its own line numbers of the Markdown file, so tracebacks name the doc's lines
    code = compile("\n" * example.line + example.code, str(example.path), "exec")
    start, cpu = time.perf_counter(), time.process_time()
    try:
        exec(code, {"__name__": "__doc_example__"})
    except Exception as exc:
        raise AssertionError(f"the example at {example.name} fails: {type(exc).__name__}: {exc}") from exc
    print(f"{example.name}: {time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu:.1f} s CPU")
