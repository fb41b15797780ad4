"""What to do next, said as the CLI says it, with the Python API's form after it.

One message serves both users (the library raises, the CLI prints), so a hint names the CLI
option first (``--set shape.data=1,3,224,224``) and the keyword argument second.
"""

from __future__ import annotations

from collections.abc import Sequence


def shape(blobs: Sequence[str]) -> str:
    """How to give the shapes of ``blobs``."""
    sets = " ".join(f"--set shape.{b}=N,C,H,W" for b in blobs)
    py = ", ".join(f"'{b}': [N, C, H, W]" for b in blobs)
    whose = "its" if len(blobs) == 1 else "their"
    return f"give {whose} shape: {sets} (Python API: input_shapes={{{py}}})"


def image_size() -> str:
    return "give it: --set height=H --set width=W (Python API: height=H, width=W)"


def param_count(layer_type: str) -> str:
    return f"--param-count {layer_type}=N (Python API: param_counts={{'{layer_type}': N}})"


def net_state() -> str:
    return "--set stage=NAME or --set phase=TRAIN (Python API: stage='NAME' or phase='TRAIN')"
