"""Step 6, solvers: ``UpgradeSolverType`` as a text edit (``solver_type: NESTEROV`` ->
``type: "Nesterov"``), and the nets embedded in a solver (``net_param``, ``train_net_param``,
``test_net_param``) upgraded like a net file (:mod:`rewriter.upgrade.net`), which Caffe's
``upgrade_solver_proto_text`` does not do (a deliberate difference, reported per file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rewriter.caffe.upgrade_proto import Refusal, _copy, upgrade_solver_message_caffe
from rewriter.text.cst import Document, MessageBody, encode_string, parse
from rewriter.upgrade.net import _bind, _locate, _Target, _upgrade_net_body
from rewriter.upgrade.result import EMBEDDED_NETS, SOLVER, UpgradeError, UpgradeResult
from rewriter.upgrade.splice import _Ctx
from rewriter.upgrade.verify import _build_warnings

if TYPE_CHECKING:
    from rewriter.schema.runtime import Schema


def _upgrade_solver(ctx: _Ctx, doc: Document, schema: Schema) -> UpgradeResult:
    solver = _bind(doc, schema, SOLVER, internal=False, lenient=ctx.lenient)
    try:
        expected = upgrade_solver_message_caffe(solver, doc.path)
    except Refusal as r:
        raise UpgradeError(r.message, _locate(doc, doc.body, r)) from None
    messages = list(expected.log)
    want = _copy(expected.message)
    changed = expected.changed
    graph_errors: list[UpgradeError] = []
    for i, f in enumerate(doc.fields):
        if f.name not in EMBEDDED_NETS or not isinstance(f.body, MessageBody):
            continue
        label = f"{doc.path} ({f.name})"
        run = _upgrade_net_body(ctx, [doc], schema, SOLVER, _Target(i), label)
        doc, net_up = run.doc, run.expected
        if not net_up.changed:
            continue
        run.message()
        changed = True
        messages.extend(net_up.log)
        occurrence = sum(1 for g in doc.fields[:i] if g.name == f.name)
        if f.name == "test_net_param":
            want.test_net_param[occurrence].CopyFrom(net_up.message)
        else:
            getattr(want, f.name).CopyFrom(net_up.message)
        if run.graph_error is not None:
            graph_errors.append(run.graph_error)
        which = f"{f.name}[{occurrence}]" if f.name == "test_net_param" else f.name
        ctx.differences.append(
            f"{which}: the embedded net was upgraded too; Caffe's upgrade_solver_proto_text "
            "leaves it as it is (and current Caffe then builds that net with no layers)"
        )
    if not changed:
        return UpgradeResult(doc, False, [], [], "solver")
    if expected.changed:
        from rewriter.text.edit import Editor

        ed = Editor(doc)
        new_type = encode_string(str(expected.message.type))
        for j, f in enumerate(doc.fields):
            if f.name == "solver_type":
                ed.rename((j,), "type")
                ed.set_value((j,), new_type)
        doc = parse(ctx.finish(ed.apply().code), doc.path)
    final = _bind(doc, schema, SOLVER, internal=True, lenient=ctx.lenient)
    if final != want:
        raise UpgradeError("internal error: the upgraded solver differs from Caffe's upgrade")
    # Checked against Caffe's upgrade of each net, which ``final`` was just held to.
    warnings = _build_warnings(graph_errors)
    return UpgradeResult(doc, True, messages, ctx.differences, "solver", warnings)
