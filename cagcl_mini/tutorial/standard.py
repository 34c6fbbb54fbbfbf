"""The notebook standard: what every tutorial notebook holds, checked (as MONAI's tutorials check
theirs with a runner).

A notebook, top to bottom:

1. a title cell: ``# NN · Title`` and a **What you will learn** list;
2. a setup code cell (the first code cell): imports, ``set_determinism``, and as its last
   statement ``print_environment()`` (the kit's folders and MONAI's ``print_config`` in one block);
3. exactly one code cell tagged ``parameters`` holding only ``name = literal`` lines (papermill
   and ``cagcl-mini notebooks -p`` inject into it);
4. the lesson, then a last code cell of ``assert`` statements (nbval fails the notebook when the
   numbers drift);
5. three closing markdown cells: ``## Summary``, ``## Exercises`` (2 to 4 items that run in the
   notebook's own budget) and ``## References``;
6. no outputs, no execution counts, no code line over 100 characters, and the kernelspec that
   ``make install`` registers (so opening a notebook does not mark it modified).

:func:`notebook_problems` lists what a notebook breaks, one line each.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

KERNELSPEC: dict[str, str] = {
    "name": "python3",
    "display_name": "Python 3 (cagcl-mini)",
    "language": "python",
}
MAX_LINE = 100
SETUP_LAST = ("print_environment", "print_config")
CLOSING = ("## Summary", "## Exercises", "## References")
EXERCISES = (2, 4)
_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+\S", re.MULTILINE)
_TITLE = re.compile(r"^# \d\d · \S")


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _python(source: str) -> str:
    """``source`` without IPython magics and shell lines (``%matplotlib inline``, ``!ls``)."""
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


def _literal_assignments(source: str) -> str | None:
    """None when ``source`` holds only ``name = literal`` statements, else what breaks the rule."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError as exc:
        return f"does not parse ({exc.msg}, line {exc.lineno})"
    if not tree.body:
        return "is empty"
    for node in tree.body:
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            return f"line {node.lineno} is not a `name = literal` assignment"
        try:
            ast.literal_eval(node.value)
        except ValueError:
            return f"line {node.lineno} assigns an expression, not a literal"
    return None


def _last_call(source: str) -> str | None:
    """The name of the function the last statement of ``source`` calls, if it is a call."""
    try:
        body = ast.parse(_python(source)).body
    except SyntaxError:
        return None
    if not body or not isinstance(body[-1], ast.Expr) or not isinstance(body[-1].value, ast.Call):
        return None
    func = body[-1].value.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _has_assert(source: str) -> bool:
    try:
        return any(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(_python(source))))
    except SyntaxError:
        return False


def notebook_problems(path: str | Path) -> list[str]:
    """Every rule of the module doc that the notebook at ``path`` breaks (empty: it conforms)."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{path.name}: cannot be read as a notebook ({exc})"]
    cells = nb.get("cells", [])
    code = [c for c in cells if c.get("cell_type") == "code"]
    problems: list[str] = []
    if not cells or not code:
        return [f"{path.name}: has no cells or no code cells"]

    title = _source(cells[0]) if cells[0].get("cell_type") == "markdown" else ""
    if not _TITLE.match(title):
        problems.append("the first cell must be a markdown title `# NN · Title`")
    if "what you will learn" not in title.lower():
        problems.append("the title cell must list **What you will learn**")

    setup = _source(code[0])
    if "set_determinism(" not in setup:
        problems.append("the setup cell (first code cell) must call set_determinism")
    if _last_call(setup) not in SETUP_LAST:
        problems.append("the setup cell must end with print_environment() (MONAI's print_config)")

    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"exactly one code cell must be tagged `parameters`, found {len(tagged)}")
    else:
        why = _literal_assignments(_source(tagged[0]))
        if why:
            problems.append(f"the parameters cell {why}")

    if not _has_assert(_source(code[-1])):
        problems.append("the last code cell must hold the notebook's asserts")

    closing = [_source(c).strip() for c in cells[-len(CLOSING) :]]
    kinds = [c.get("cell_type") for c in cells[-len(CLOSING) :]]
    for heading, text, kind in zip(CLOSING, closing, kinds, strict=False):
        if kind != "markdown" or not text.startswith(heading):
            problems.append(f"the notebook must end with markdown cells {', '.join(CLOSING)}")
            break
    else:
        n_items = len(_ITEM.findall(closing[1]))
        if not EXERCISES[0] <= n_items <= EXERCISES[1]:
            problems.append(
                f"## Exercises must list {EXERCISES[0]}-{EXERCISES[1]} items, has {n_items}"
            )
        if not re.search(r"arxiv|https?://|doi", closing[2], re.IGNORECASE):
            problems.append("## References must cite at least one paper (arXiv, DOI or URL)")

    if any(c.get("outputs") or c.get("execution_count") is not None for c in code):
        problems.append("outputs and execution counts must be stripped")
    long = [
        (i, n)
        for i, c in enumerate(code)
        for n, line in enumerate(_source(c).splitlines(), 1)
        if len(line) > MAX_LINE
    ]
    if long:
        i, n = long[0]
        problems.append(f"code cell {i} line {n} is over {MAX_LINE} characters ({len(long)} lines)")
    if nb.get("metadata", {}).get("kernelspec") != KERNELSPEC:
        problems.append(
            f"kernelspec must be {KERNELSPEC} (what make install registers), "
            f"is {nb.get('metadata', {}).get('kernelspec')}"
        )
    return [f"{path.name}: {p}" for p in problems]
