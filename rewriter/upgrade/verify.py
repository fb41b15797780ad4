"""The checks of an upgraded net beyond its message: Caffe's ``Net::Init`` graph of the result
must equal the original's (read the old way, as Caffe does) in every phase and stage named in
the net (:func:`check_same_graph`), and a result that ``Net::Init`` refuses everywhere is either
refused (:class:`InputDropped`: the upgrade dropped an input it reads) or reported
(:class:`BuildWarning`: the original fails the same way).

The driver (:mod:`rewriter.upgrade.document`) runs them; they import no step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rewriter.errors import Location
from rewriter.schema.runtime import message_from_wire
from rewriter.text.cst import encode_string
from rewriter.upgrade.forks import _set_fork_types
from rewriter.upgrade.result import UpgradeError


def _graph_signature(msg: Any, phase: str, stages: tuple[str, ...]) -> Any:
    from rewriter.caffe.graph import build_graph

    try:
        g = build_graph(msg, phase, stages)
    except Exception as e:  # Caffe's refusal (CaffeError), or anything else: same on both sides
        return ("refused", f"{type(e).__name__}: {e}")
    return (g.net_name, g.force_backward, g.layers, g.blob_list, g.inputs, g.outputs)


def _read_the_old_way(box: list[Any]) -> Any:
    """``build_graph``'s own in-memory upgrade of the net in ``box``, done once for every
    phase rather than once per graph (``build_graph`` of the result starts with the same,
    idempotent upgrade). When it refuses, the net itself: each build then refuses the same way.
    The net is taken out of ``box``: when that was its last reference, it is freed here."""
    from rewriter.caffe.graph import upgrade_net_message

    msg = box.pop()
    try:
        net = upgrade_net_message(msg)
    except Exception:
        return msg
    if net is msg:
        return net
    del msg
    # The copies it made leave their cleared layers in the message's arena (about half its
    # size); a round trip through the wire format keeps the same message without them.
    return message_from_wire(type(net), net.SerializePartialToString())


def _graph_difference(
    original: list[Any],
    upgraded: Callable[[], Any],
    what: str,
    no_nan: bool = False,
    repaired: bool = False,
    inputs: tuple[str, ...] = (),
    fork_types: Mapping[int, str] | None = None,
) -> UpgradeError | None:
    """What :func:`check_same_graph` raises, or None. The original net is handed over in a
    box and read the old way first; ``upgraded`` makes the upgraded net only then. One phase
    at a time: each pair of graphs is compared and dropped before the next is built.

    When both read the old way are the very same message, ``Net::Init`` builds the same graphs
    from them and none is built. Only with ``no_nan`` (the text has no "nan"): a graph's
    floats are the message's, and a NaN float makes two otherwise equal graphs differ.

    ``repaired``: the upgrade deliberately makes a net Caffe cannot build buildable (a V0
    ``input_shape`` kept): where the original is refused, the result only has to build.
    Either way the result must build in at least one phase (:func:`_never_builds`);
    ``inputs`` are the original's legacy input names (see :func:`_cannot_build`)."""
    n_v1 = len(original[0].layers)
    before_net = _read_the_old_way(original)
    if fork_types and not len(before_net.layers):
        # read the old way, the fork's layers have no type: the one the user named, as in
        # the upgrade (its V1 layers come last, after an Input layer made of legacy inputs)
        offset = len(before_net.layer) - n_v1
        _set_fork_types(before_net, fork_types, [None] * offset + list(range(n_v1)))
    after_box = [upgraded()]
    from rewriter.caffe.initcheck import net_init_runs

    runs = net_init_runs(after_box[0])
    after_net = _read_the_old_way(after_box)
    if no_nan and before_net == after_net:
        return _never_builds(after_net, runs, what, inputs)
    refusals: list[str] = []
    for phase, stages in runs:
        before = _graph_signature(before_net, phase, stages)
        after = _graph_signature(after_net, phase, stages)
        if after[0] == "refused":
            refusals.append(f"phase {phase}{_stage_text(stages)}: {after[1]}")
        if before == after or (repaired and before[0] == "refused" and after[0] != "refused"):
            del before, after  # before the next phase's graphs are built
            continue
        detail = "the nets differ"
        if before[0] == "refused" or after[0] == "refused":
            detail = f"before: {before}, after: {after}"
        else:
            for a, b in zip(before[2], after[2], strict=False):
                if a != b:
                    detail = f"layer {a.name!r} differs: {a} != {b}"
                    break
        run = phase + _stage_text(stages)
        return UpgradeError(
            f"internal error: upgrading {what} changed Caffe's net in phase {run}: {detail}"
        )
    if len(refusals) == len(runs):
        return _cannot_build(what, refusals[0], inputs)
    return None


def _stage_text(stages: tuple[str, ...]) -> str:
    return f" stage={','.join(stages)}" if stages else ""


def _never_builds(
    net: Any, runs: list[tuple[str, tuple[str, ...]]], what: str, inputs: tuple[str, ...]
) -> UpgradeError | None:
    """The refusal to write a net that ``Net::Init`` refuses in every phase and stage named in
    it (one that builds in one phase only, e.g. a deploy net, is fine), or None."""
    first = ""
    for phase, stages in runs:
        sig = _graph_signature(net, phase, stages)
        if sig[0] != "refused":
            return None
        first = first or f"phase {phase}{_stage_text(stages)}: {sig[1]}"
    return _cannot_build(what, first, inputs)


class BuildWarning(UpgradeError):
    """The upgraded net fails ``Net::Init`` in every phase, as the original does when Caffe
    reads it, for a reason the upgrade did not cause: reported, not refused (Caffe's tool
    writes it too)."""


class InputDropped(UpgradeError):
    """The upgraded net reads a legacy input Caffe's upgrade dropped (it had no shape)."""

    def __init__(self, message: str, blob_text: str, location: Location | None = None) -> None:
        super().__init__(message, location)
        #: the input's name as a quoted token, to find its ``input:`` field
        self.blob_text = blob_text


_UNKNOWN_BOTTOM = re.compile(r"Unknown bottom blob '([^']*)'")


def _cannot_build(what: str, refusal: str, inputs: tuple[str, ...]) -> UpgradeError:
    """Refuse when the net fails because the upgrade dropped a legacy input it reads: the
    original clearly meant that blob to exist (Caffe's UpgradeNetInput drops inputs without a
    shape). Any other failure is the net's own: a :class:`BuildWarning`."""
    refusal = refusal.replace("CaffeError: ", "", 1)
    # ``what`` is the path (said by the error's prefix) or "path (net_param)" for an embedded net
    which = what.rsplit(" (", 1)[1].rstrip(")") + " net" if what.endswith(")") else "net"
    m = _UNKNOWN_BOTTOM.search(refusal)
    if m is not None and m.group(1) in inputs:
        return InputDropped(
            f"the upgraded {which} would not build: Caffe's Net::Init refuses it in every phase "
            f"({refusal}): input '{m.group(1)}' has no shape, and Caffe's upgrade "
            f"(UpgradeNetInput) drops an input without one. Nothing is written; give it its shape "
            f"('input_dim: N' four times, or 'input_shape {{ dim: N ... }}') and upgrade again",
            encode_string(m.group(1)),
        )
    return BuildWarning(
        f"Caffe's Net::Init refuses the upgraded {which} in every phase ({refusal}), as it "
        "refuses the original: the upgrade did not cause it ('rewriter explain FILE' shows "
        "Net::Init's view)"
    )


def check_same_graph(original: Any, upgraded: Any, what: str = "net") -> None:
    """Caffe's ``Net::Init`` view of ``upgraded`` must equal that of ``original`` (read the old
    way: ``build_graph`` upgrades V0/V1 and legacy inputs in memory, as Caffe does)."""
    error = _graph_difference([original], lambda: upgraded, what)
    if error is not None and not isinstance(error, BuildWarning):
        raise error


def _first_difference(a: Any, b: Any) -> str:
    for name in ("layer", "layers"):
        la, lb = getattr(a, name, []), getattr(b, name, [])
        for i, (x, y) in enumerate(zip(la, lb, strict=False)):
            if x != y:
                return f"{name}[{i}] ({x.name!r}): {x} != {y}"
        if len(la) != len(lb):
            return f"{len(la)} != {len(lb)} '{name}' entries"
    return "net-level fields differ"


def _build_warnings(errors: Sequence[UpgradeError | None]) -> list[str]:
    """Raise the first real error of the graph checks; the rest are warnings to report."""
    for e in errors:
        if e is not None and not isinstance(e, BuildWarning):
            raise e
    return [e.message for e in errors if isinstance(e, BuildWarning)]
