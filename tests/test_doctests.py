"""The examples in the public API's docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = [
    "imgconv.choices",
    "imgconv.errors",
    "imgconv.filtering",
    "imgconv.chain",
    "imgconv.engine.plan",
    "imgconv.engine.finish",
    "imgconv.kernels.catalog",
    "imgconv.kernels.algebra",
    "imgconv.kernels.files",
    "imgconv.pipeline",
    "imgconv.batch",
    "imgconv.memory",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False)
    assert failures == 0, f"{failures} of {tried} docstring examples in {name} failed (run: python -m doctest -v)"


def test_the_public_functions_have_examples():
    import imgconv
    from imgconv import chain
    from imgconv.batch import run_batch

    for function in (imgconv.convolve, imgconv.apply_filter, imgconv.load_catalog, chain.apply_chain, run_batch):
        assert ">>> " in (function.__doc__ or ""), f"{function.__qualname__} has no example"
