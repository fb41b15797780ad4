"""Synthetic Caffe nets for benchmarks and scaling tests.

Why generated: the corpus has no net beyond a few thousand layers, and the targets in the issues
speak of 10k and 100k layers. Shapes follow real files (Caffe's own indentation style, param blocks,
fillers, in-place ReLUs, splits, concats) so the parser meets what it meets in the wild.
"""

from __future__ import annotations

import argparse
import re
import sys


def _conv(name: str, bottom: str, top: str, num_output: int = 64) -> str:
    return (
        "layer {\n"
        f'  name: "{name}"\n'
        '  type: "Convolution"\n'
        f'  bottom: "{bottom}"\n'
        f'  top: "{top}"\n'
        "  param {\n    lr_mult: 1\n    decay_mult: 1\n  }\n"
        "  param {\n    lr_mult: 2\n    decay_mult: 0\n  }\n"
        "  convolution_param {\n"
        f"    num_output: {num_output}\n"
        "    pad: 1\n    kernel_size: 3\n    stride: 1\n"
        '    weight_filler {\n      type: "xavier"\n    }\n'
        '    bias_filler {\n      type: "constant"\n      value: 0.2\n    }\n'
        "  }\n"
        "}\n"
    )


def _relu(name: str, blob: str) -> str:
    return f'layer {{\n  name: "{name}"\n  type: "ReLU"\n  bottom: "{blob}"\n  top: "{blob}"\n}}\n'


def _header(name: str) -> str:
    return (
        f'name: "{name}"\n'
        "# synthetic benchmark net\n"
        'layer {\n  name: "data"\n  type: "Input"\n  top: "data"\n  top: "label"\n'
        "  input_param {\n    shape { dim: 1 dim: 3 dim: 32 dim: 32 }\n"
        "    shape { dim: 1 }\n  }\n}\n"
    )


def _loss(bottom: str) -> str:
    return (
        'layer {\n  name: "fc"\n  type: "InnerProduct"\n'
        f'  bottom: "{bottom}"\n  top: "fc"\n'
        "  inner_product_param {\n    num_output: 10\n  }\n}\n"
        'layer {\n  name: "loss"\n  type: "SoftmaxWithLoss"\n  bottom: "fc"\n  bottom: "label"\n'
        '  top: "loss"\n}\n'
    )


def chain(n_layers: int) -> str:
    """Conv + in-place ReLU pairs: the plain VGG shape."""
    parts = [_header("chain")]
    prev = "data"
    for i in range(n_layers // 2):
        parts.append(_conv(f"conv{i}", prev, f"conv{i}"))
        parts.append(_relu(f"relu{i}", f"conv{i}"))
        prev = f"conv{i}"
    parts.append(_loss(prev))
    return "".join(parts)


def resnet(n_layers: int) -> str:
    """Residual blocks: every block input feeds two consumers, so Caffe inserts a split."""
    parts = [_header("resnet")]
    prev = "data"
    for i in range(n_layers // 4):
        parts.append(_conv(f"res{i}_a", prev, f"res{i}_a"))
        parts.append(_relu(f"res{i}_relu", f"res{i}_a"))
        parts.append(_conv(f"res{i}_b", f"res{i}_a", f"res{i}_b"))
        parts.append(
            "layer {\n"
            f'  name: "res{i}"\n  type: "Eltwise"\n  bottom: "{prev}"\n  bottom: "res{i}_b"\n'
            f'  top: "res{i}"\n'
            "}\n"
        )
        prev = f"res{i}"
    parts.append(_loss(prev))
    return "".join(parts)


def densenet(n_layers: int) -> str:
    """Concat-heavy blocks of width 4: many consumers per blob."""
    parts = [_header("densenet")]
    prev = "data"
    for i in range(n_layers // 3):
        parts.append(_conv(f"d{i}_conv", prev, f"d{i}_conv", num_output=12))
        parts.append(_relu(f"d{i}_relu", f"d{i}_conv"))
        parts.append(
            "layer {\n"
            f'  name: "d{i}_cat"\n  type: "Concat"\n  bottom: "{prev}"\n  bottom: "d{i}_conv"\n'
            f'  top: "d{i}_cat"\n'
            "}\n"
        )
        prev = f"d{i}_cat"
    parts.append(_loss(prev))
    return "".join(parts)


def _bn_scale(name: str, blob: str) -> str:
    """BatchNorm + Scale in place, as every ResNet since 2015 writes them (KaimingHe style)."""
    return (
        "layer {\n"
        f'  name: "bn_{name}"\n  type: "BatchNorm"\n  bottom: "{blob}"\n  top: "{blob}"\n'
        "  param {\n    lr_mult: 0\n  }\n  param {\n    lr_mult: 0\n  }\n"
        "  param {\n    lr_mult: 0\n  }\n"
        "}\n"
        "layer {\n"
        f'  name: "scale_{name}"\n  type: "Scale"\n  bottom: "{blob}"\n  top: "{blob}"\n'
        "  scale_param {\n    bias_term: true\n  }\n"
        "}\n"
    )


def _conv_nobias(name: str, bottom: str, top: str, kernel: int, num_output: int) -> str:
    pad = kernel // 2
    return (
        "layer {\n"
        f'  name: "{name}"\n  type: "Convolution"\n  bottom: "{bottom}"\n  top: "{top}"\n'
        "  param {\n    lr_mult: 1\n    decay_mult: 1\n  }\n"
        "  convolution_param {\n"
        f"    num_output: {num_output}\n    kernel_size: {kernel}\n    pad: {pad}\n"
        "    stride: 1\n    bias_term: false\n"
        '    weight_filler {\n      type: "msra"\n    }\n'
        "  }\n"
        "}\n"
    )


def resnet_bn(n_layers: int) -> str:
    """Bottleneck residual blocks with BatchNorm + Scale after every convolution (the shape of
    ResNet-50/152 and SE-ResNet): 13 layers a block, in-place BN/Scale/ReLU, a split per block,
    a projection shortcut in the first block; Caffe sets it up without complaint."""
    parts = [_header("resnet_bn")]
    prev = "data"
    for i in range(max(1, n_layers // 13)):
        b = f"res{i}"
        if i == 0:  # a projection shortcut: the input has 3 channels, the block 256
            parts.append(_conv_nobias(f"{b}_branch1", prev, f"{b}_branch1", 1, 256))
            parts.append(_bn_scale(f"{b}_branch1", f"{b}_branch1"))
            prev = f"{b}_branch1"
        x = prev
        for branch, kernel, width in (("a", 1, 64), ("b", 3, 64), ("c", 1, 256)):
            top = f"{b}_branch2{branch}"
            parts.append(_conv_nobias(top, x, top, kernel, width))
            parts.append(_bn_scale(top, top))
            if branch != "c":
                parts.append(_relu(f"{top}_relu", top))
            x = top
        parts.append(
            "layer {\n"
            f'  name: "{b}"\n  type: "Eltwise"\n  bottom: "{prev}"\n  bottom: "{x}"\n'
            f'  top: "{b}"\n'
            "}\n"
        )
        parts.append(_relu(f"{b}_relu", b))
        prev = b
    parts.append(_loss(prev))
    return "".join(parts)


_V1_TYPES = {
    "Convolution": "CONVOLUTION",
    "ReLU": "RELU",
    "Eltwise": "ELTWISE",
    "Concat": "CONCAT",
    "InnerProduct": "INNER_PRODUCT",
    "SoftmaxWithLoss": "SOFTMAX_LOSS",
}


def to_v1(text: str) -> str:
    """A generated net written the V1 way, for the upgrade benchmarks: ``layers`` blocks with
    enum types, ``blobs_lr`` / ``weight_decay`` instead of ``param`` blocks, and the legacy
    ``input`` / ``input_dim`` fields instead of the Input layer."""
    start = text.index('layer {\n  name: "data"')
    end = text.index("}\n}\n", start) + 4
    legacy = (
        'input: "data"  # images\ninput_dim: 1\ninput_dim: 3\ninput_dim: 32\ninput_dim: 32\n'
        'input: "label"\ninput_dim: 1\ninput_dim: 1\ninput_dim: 1\ninput_dim: 1\n'
    )
    text = text[:start] + legacy + text[end:]
    text = text.replace("layer {\n", "layers {\n")
    text = re.sub(
        r'^  type: "(\w+)"$', lambda m: f"  type: {_V1_TYPES[m.group(1)]}", text, flags=re.M
    )
    return re.sub(
        r"  param \{\n    lr_mult: (\S+)\n    decay_mult: (\S+)\n  \}\n",
        r"  blobs_lr: \1  # lr\n  weight_decay: \2\n",
        text,
    )


def v1chain(n_layers: int) -> str:
    """:func:`chain` in the V1 format (see :func:`to_v1`)."""
    return to_v1(chain(n_layers))


SHAPES = {
    "chain": chain,
    "resnet": resnet,
    "resnet_bn": resnet_bn,
    "densenet": densenet,
    "v1chain": v1chain,
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("layers", type=int)
    args = ap.parse_args(argv)
    sys.stdout.write(SHAPES[args.shape](args.layers))


if __name__ == "__main__":
    main()
