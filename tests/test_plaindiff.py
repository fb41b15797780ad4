"""rewriter.util.plaindiff reports exactly what deepdiff reports, on random message-like values."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from rewriter.util import plaindiff
from rewriter.util.plaindiff import plain_diff

KEYS = ["name", "type", "lr_mult", "decay_mult", "param", "bottom", "top", "convolution_param"]


def _scalar(rng: random.Random) -> Any:
    return rng.choice(
        [0, 1, 2, 0.0, 1.0, 0.5, math.nan, True, False, "a", "b", "conv1", b"x", None, -1]
    )


def _value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth <= 0 or roll < 0.45:
        return _scalar(rng)
    if roll < 0.75:
        return {k: _value(rng, depth - 1) for k in rng.sample(KEYS, rng.randint(0, 4))}
    if rng.random() < 0.5:  # a repeated message field
        return [_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return [_scalar(rng) for _ in range(rng.randint(0, 3))]  # a repeated scalar field


def _mutate(rng: random.Random, value: Any, depth: int) -> Any:
    if rng.random() < 0.2:
        return _value(rng, depth)
    if isinstance(value, dict):
        out = dict(value)
        for k in list(out):
            roll = rng.random()
            if roll < 0.15:
                del out[k]
            elif roll < 0.6:
                out[k] = _mutate(rng, out[k], depth - 1)
        if rng.random() < 0.3:
            out[rng.choice(KEYS)] = _value(rng, depth - 1)
        return out
    if isinstance(value, list):
        out_l = [_mutate(rng, v, depth - 1) if rng.random() < 0.5 else v for v in value]
        if rng.random() < 0.3:
            out_l.append(_value(rng, depth - 1))
        if out_l and rng.random() < 0.2:
            out_l.pop(rng.randrange(len(out_l)))
        return out_l
    return value


def _key(r: tuple[Any, ...]) -> str:
    return repr(r)


@pytest.mark.parametrize("threshold", [0.33, 0])
def test_same_reports_as_deepdiff(threshold: float, monkeypatch: pytest.MonkeyPatch) -> None:
    real = plaindiff._deepdiff
    handed_over: list[int] = []
    monkeypatch.setattr(plaindiff, "_deepdiff", lambda *a: handed_over.append(1) or real(*a))
    rng = random.Random(20)
    for _ in range(3000):
        old = {k: _value(rng, 3) for k in rng.sample(KEYS, rng.randint(1, 5))}
        new = _mutate(rng, old, 3)
        ours = plain_diff(old, new, threshold)
        theirs = real(old, new, threshold)
        assert sorted(map(_key, ours)) == sorted(map(_key, theirs)), (old, new)
    assert len(handed_over) < 300  # the walk itself answered at least 90 % of the cases


def test_freeze_shaped_change_needs_no_deepdiff() -> None:
    """The common case (a param block's lr_mult, a block added) stays in the modelled walk."""
    old = {"name": "c", "param": [{"lr_mult": 1.0}], "convolution_param": {"num_output": 8}}
    new = {"name": "c", "param": [{"lr_mult": 0.0}, {"lr_mult": 0.0}]}
    new["convolution_param"] = {"num_output": 8}
    assert sorted(map(_key, plain_diff(old, new))) == [
        _key((("param", 0, "lr_mult"), "values_changed", 1.0, 0.0)),
        _key((("param", 1), "iterable_item_added", None, {"lr_mult": 0.0})),
    ]
