"""The model-zoo matrix: every family of :mod:`hooklab.zoo` × every feature (tests/zoo_matrix.py).

Each family's tiny checkpoint is built and loaded once per session. Known failures are listed in
:data:`KNOWN_FAILURES` (strict xfail: a cell that starts passing fails the run, so remove its
entry when the fix lands). ``python -m tests.zoo_matrix --markdown`` prints the same matrix as
the README's "Supported models" table.

Cost: the whole file (417 tests) took about 65 s of CPU on one core (measured on a 2-core
machine shared with other jobs: 4 min 50 s wall); the routes column (26 more cells, each
checked against an edge-by-edge reference) adds about 79 s wall on the same shared machine
(``-k routes``, 2026-12-07); no cell needs a slow tier.
"""

from __future__ import annotations

import pytest

from tests import zoo_matrix

#: ``{(family, feature): reason}``: the cells that fail today. Remove an entry with its fix.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def _cells():
    for family in zoo_matrix.FAMILIES:
        for feature in zoo_matrix.FEATURES:
            marks = []
            if (family, feature) in KNOWN_FAILURES:
                reason = KNOWN_FAILURES[family, feature]
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            yield pytest.param(family, feature, marks=marks, id=f"{family}-{feature}")


@pytest.fixture(scope="session")
def zoo_models(tmp_path_factory):
    """Family name -> its loaded tiny model, built on first use (once per session)."""
    models: dict[str, object] = {}
    root = tmp_path_factory.mktemp("zoo")

    def get(name: str):
        if name not in models:
            models[name] = zoo_matrix.load(name, root)
        return models[name]

    return get


@pytest.mark.parametrize("family", zoo_matrix.FAMILIES)
def test_biases_and_norm_weights_are_random(zoo_models, family):
    hf = zoo_models(family).original_model
    for name, p in hf.named_parameters():
        if p.ndim == 1:  # biases and norm weights
            assert not (p == 0).all() and not (p == 1).all(), name


def test_known_failures_name_real_cells():
    cells = {(f, x) for f in zoo_matrix.FAMILIES for x in zoo_matrix.FEATURES}
    assert set(KNOWN_FAILURES) <= cells, set(KNOWN_FAILURES) - cells


@pytest.mark.parametrize(("family", "feature"), list(_cells()))
def test_zoo(zoo_models, family, feature):
    model = zoo_models(family)
    try:
        zoo_matrix.CHECKS[feature](model, zoo_matrix.zoo.FAMILIES[family])
    except zoo_matrix.Skip as exc:
        pytest.skip(str(exc))
    except zoo_matrix.NotSupported:
        pass  # refused with the documented clear error (zoo_matrix.UNSUPPORTED)
