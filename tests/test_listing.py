"""colorkit.listing: source listings without docstrings and input checks, everything else kept."""

import ast
import inspect
import textwrap

import pytest

from colorkit.attention import SelfAttention2d
from colorkit.listing import math_source, show_source


def _check_shape(x):
    if x < 0:
        raise ValueError("negative")


def sample(x, y=2):
    """A docstring that the listing drops."""
    _check_shape(x)
    for name, value in (("x", x), ("y", y)):      # a loop of checks only: dropped with its header
        if value is None:
            raise ValueError(f"{name} is None")
    if x > 100:
        raise ValueError(f"x too large: {x}")     # a check: dropped
    if x > 50:                                    # not a check: it has work in its body
        x = x / 2
    z = x * y                                     # (eq. 1) kept with its comment

    def inner(t):
        """inner docstring"""
        return t + 1

    return inner(z)


def test_drops_docstrings_and_checks_and_keeps_the_rest_verbatim():
    text = math_source(sample)
    assert "docstring" not in text and "raise" not in text and "_check_shape" not in text and "for name" not in text
    original = textwrap.dedent(inspect.getsource(sample)).splitlines()
    for line in text.splitlines():                # every kept line is an original line, unchanged
        assert line in original
    assert "    z = x * y                                     # (eq. 1) kept with its comment" in text
    assert "    if x > 50:" in text and "        x = x / 2" in text
    namespace = {"_check_shape": _check_shape}
    exec(compile(ast.parse(text), "<listing>", "exec"), namespace)   # what is left still runs, and the same
    assert namespace["sample"](10) == sample(10) and namespace["sample"](60, y=3) == sample(60, y=3)


def test_every_listing_of_the_course_models_parses():
    from colorkit.models import jiang, lakhani, li, narkhede, sun2023, sun2023_upgrade
    for module in (jiang, lakhani, li, narkhede, sun2023, sun2023_upgrade):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and "forward" in vars(cls):
                ast.parse(math_source(cls.forward))      # no block left without a body


def test_options_keep_what_is_asked_and_methods_dedent():
    assert '"""A docstring' in math_source(sample, keep_docstring=True)
    assert "raise ValueError" in math_source(sample, keep_checks=True)
    text = math_source(SelfAttention2d.forward)
    assert text.startswith("def forward(") and "(eq. 3)" in text and "raise" not in text
    ast.parse(text)


def test_show_source_prints_each(capsys):
    show_source(sample, _check_shape, keep_checks=True)
    out = capsys.readouterr().out
    assert out.count("def ") == 3 and out.endswith("\n")


def test_no_source_is_a_clear_error():
    with pytest.raises(TypeError):
        math_source(len)
