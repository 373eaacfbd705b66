"""Source listings for the notebooks, trimmed to the lines that carry the math.

Notebooks print a model's `forward` so that students read each paper equation beside its code. The
docstring and the input checks (`if ...: raise ...`, calls of `_check...` helpers) are true code
but not the method; `math_source` drops them and keeps everything else, comments included, in
the original order and indentation:

    from colorkit.listing import show_source
    show_source(SelfAttention2d.forward)
"""

from __future__ import annotations

import ast
import inspect
import textwrap


def _is_check(node: ast.stmt) -> bool:
    """An input check: `if ...: raise ...` with no else, or a bare call of a `_check...` / `check_...` helper."""
    if isinstance(node, ast.If):
        return not node.orelse and all(isinstance(s, ast.Raise) for s in node.body)
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name.startswith("_check") or name.startswith("check_")
    return False


def _only_checks(node: ast.stmt) -> bool:
    """A check, or a loop or `with` block that holds nothing but checks (dropped whole, header too)."""
    if _is_check(node):
        return True
    if isinstance(node, (ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith)):
        return not getattr(node, "orelse", None) and all(_only_checks(s) for s in node.body)
    return False


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def math_source(obj, *, keep_checks: bool = False, keep_docstring: bool = False) -> str:
    """The source of a function, method or class without its docstrings and input checks.

    Lines are removed, never rewritten: what remains is exactly the code that runs, with its
    comments (the equation numbers and tensor shapes). Nested functions and classes are trimmed too.
    """
    source = textwrap.dedent(inspect.getsource(obj))
    lines = source.splitlines()
    drop: set[int] = set()                                  # 0-based line numbers to remove
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for i, stmt in enumerate(body):
            docstring = i == 0 and _is_docstring(stmt) and isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if (docstring and not keep_docstring) or (not keep_checks and _only_checks(stmt)):
                drop.update(range(stmt.lineno - 1, stmt.end_lineno))
    kept = [line for n, line in enumerate(lines) if n not in drop]
    # a blank line left where a block was removed is kept once, never twice in a row
    trimmed = [line for n, line in enumerate(kept) if line.strip() or (n > 0 and kept[n - 1].strip())]
    return "\n".join(trimmed) + "\n"


def show_source(*objects, **options) -> None:
    """Print `math_source` of each object, a blank line between them."""
    print("\n".join(math_source(obj, **options) for obj in objects), end="")
