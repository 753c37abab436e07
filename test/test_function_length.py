"""No function of the package is over ~60 lines unless its docstring says why (a line starting "Length:"),
so that a newcomer can hold each one in their head (issue 19)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "threed_llm_ros"
MAX_LINES = 60  # from ``def`` to the last line, signature and docstring included
# Known exceptions, each with its reason: "path:function" -> why it is not split yet.
ALLOWED: dict[str, str] = {}  # where:name -> why a long function cannot say so itself (none today)


def long_functions(source: str, where: str) -> list[str]:
    """``where:name (N lines)`` for each function of ``source`` over MAX_LINES whose docstring does not say why."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            says_why = any(line.strip().startswith("Length:") for line in (ast.get_docstring(node) or "").splitlines())
            if lines > MAX_LINES and not says_why and f"{where}:{node.name}" not in ALLOWED:
                found.append(f"{where}:{node.name} ({lines} lines)")
    return found


def test_no_function_is_long_without_saying_why() -> None:
    found = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        found += long_functions(path.read_text(), str(path.relative_to(PACKAGE_ROOT.parent)))
    assert not found, "split these, or say why in a docstring line starting 'Length:':\n" + "\n".join(found)


def test_a_long_function_is_found_and_a_reason_accepted() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    assert long_functions(f"def f():\n{body}", "m.py") == [f"m.py:f ({MAX_LINES + 1} lines)"]
    assert long_functions(f'def f():\n    """Does f.\n\n    Length: a table.\n    """\n{body}', "m.py") == []
