"""The Caffe-free NetSpec evaluator: pycaffe's net_spec semantics, and running scripts.

The strongest check is against real pycaffe output: shelhamer/fcn's voc-fcn32s train/val
prototxts in the corpus were written by pycaffe's NetSpec; a script rebuilding that net must
give equal messages. The unit tests pin the individual rules of BVLC's python/caffe/net_spec.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from rewriter.netspec.evaluator import ScriptError, Session, installed, run_script
from tests.conftest import CORPUS, REPO, need_shared

FIX = REPO / "tests" / "fixtures" / "netspec"


def _parse(text: str) -> Any:
    from google.protobuf import text_format

    from rewriter.schema.runtime import default_schema

    msg = default_schema().message_class("caffe.NetParameter")()
    text_format.Parse(text, msg)
    return msg


def test_reproduces_pycaffe_output_of_fcn32s() -> None:
    need_shared()
    run = run_script(FIX / "voc_fcn32s.py")
    assert [o.name for o in run.outputs] == ["train.prototxt", "val.prototxt"]
    for out in run.outputs:
        real = _parse(
            (CORPUS / "shelhamer-fcn.berkeleyvision.org/voc-fcn32s" / out.name).read_text()
        )
        assert out.kind == "net"
        assert out.message == real, out.name
        assert len(out.message.layer) == 42


def _net(build: Any) -> Any:
    session = Session()
    with installed(session):
        import caffe
        from caffe import layers as L
        from caffe import params as P

        return build(caffe, L, P)


def test_names_in_place_and_ntop() -> None:
    def build(caffe: Any, L: Any, P: Any) -> Any:
        n = caffe.NetSpec()
        n.data, n.label = L.DummyData(shape=[dict(dim=[1, 3, 8, 8]), dict(dim=[1])], ntop=2)
        n.conv = L.Convolution(n.data, kernel_size=3, num_output=4, name="conv_layer")
        n.relu = L.ReLU(n.conv, in_place=True)
        n.pool = L.Pooling(n.relu, pool=P.Pooling.AVE, kernel_size=2)
        n.silence = L.Silence(n.label, ntop=0)
        return n.to_proto()

    net = _net(build)
    assert [(lay.name, lay.type, list(lay.bottom), list(lay.top)) for lay in net.layer] == [
        ("data", "DummyData", [], ["data", "label"]),
        ("conv_layer", "Convolution", ["data"], ["conv"]),
        ("relu", "ReLU", ["conv"], ["conv"]),
        ("pool", "Pooling", ["conv"], ["pool"]),
        ("silence", "Silence", ["label"], []),
    ]
    assert net.layer[1].convolution_param.kernel_size == [3]  # a scalar for a repeated field
    assert net.layer[3].pooling_param.pool == 1  # AVE
    assert len(net.layer[0].dummy_data_param.shape) == 2  # list of dicts: repeated messages


def test_automatic_names_and_layer_order() -> None:
    def build(caffe: Any, L: Any, P: Any) -> Any:
        data = L.Input(shape=dict(dim=[1, 2]))
        a = L.InnerProduct(data, num_output=3)
        b = L.InnerProduct(data, num_output=3)
        return caffe.to_proto(L.Eltwise(a, b))

    net = _net(build)
    assert [(lay.name, list(lay.bottom), list(lay.top)) for lay in net.layer] == [
        ("Input1", [], ["Input1"]),
        ("InnerProduct1", ["Input1"], ["InnerProduct1"]),
        ("InnerProduct2", ["Input1"], ["InnerProduct2"]),
        ("Eltwise1", ["InnerProduct1", "InnerProduct2"], ["Eltwise1"]),
    ]


def test_keyword_routing() -> None:
    def build(caffe: Any, L: Any, P: Any) -> Any:
        n = caffe.NetSpec()
        n.data = L.Input(shape=dict(dim=[1, 3, 4, 4]))
        n.up = L.Deconvolution(
            n.data,
            convolution_param=dict(num_output=3, kernel_size=2, bias_term=False),
            param=[dict(lr_mult=0)],
        )
        n.loss = L.EuclideanLoss(n.up, n.data, loss_weight=0.5, include=dict(phase=caffe.TEST),
                                 propagate_down=[True, False])  # fmt: skip
        return n.to_proto()

    net = _net(build)
    up, loss = net.layer[1], net.layer[2]
    assert up.convolution_param.num_output == 3 and not up.convolution_param.bias_term
    assert [p.lr_mult for p in up.param] == [0]
    assert list(loss.loss_weight) == [0.5]
    assert loss.include[0].phase == 1
    assert list(loss.propagate_down) == [True, False]


def test_pycaffe_errors_are_kept() -> None:
    # Deconvolution has no deconvolution_param: a short keyword lands on the layer and fails
    with pytest.raises(AttributeError):
        _net(lambda caffe, L, P: caffe.to_proto(L.Deconvolution(L.Input(), num_output=3)))
    with pytest.raises(TypeError, match="Convolution input 0 is not a Top"):
        _net(lambda caffe, L, P: L.Convolution("data"))


def test_params_and_pb2() -> None:
    session = Session()
    with installed(session):
        import caffe
        from caffe import params as P
        from caffe.proto import caffe_pb2

        assert P.Pooling.MAX == 0 and P.Pooling.STOCHASTIC == 2
        assert P.Data.LMDB == 1
        assert caffe.TRAIN == caffe_pb2.TRAIN == 0 and caffe.TEST == 1
        assert caffe_pb2.NetParameter().DESCRIPTOR.full_name == "caffe.NetParameter"
        with pytest.raises(AttributeError, match="caffe.Net is not available"):
            _ = caffe.Net


def test_sys_modules_restored(tmp_path: Path) -> None:
    before = {k: sys.modules.get(k) for k in ("caffe", "caffe.proto")}
    run_script(FIX / "lenet.py")
    assert {k: sys.modules.get(k) for k in ("caffe", "caffe.proto")} == before


def test_run_script_outputs_and_sites() -> None:
    run = run_script(FIX / "lenet.py")
    assert [o.name for o in run.outputs] == [
        "lenet_auto_train.prototxt",
        "lenet_auto_test.prototxt",
    ]
    train = run.outputs[0].message
    assert [lay.name for lay in train.layer] == [
        "data", "conv1", "pool1", "conv2", "pool2", "fc1", "relu1", "score", "loss",
    ]  # fmt: skip
    assert train.layer[0].data_param.batch_size == 64
    assert run.outputs[1].message.layer[0].data_param.batch_size == 100
    record = run.outputs[0].record
    assert record is not None
    sites = [(e.function.site.line, e.function.site.col) for e in record.entries]
    assert sites[1] == (16, 14)  # n.conv1 = L.Convolution(... (0-based byte column)
    assert [e.name_source for e in record.entries] == ["key"] * 9
    assert record.entries[6].top_keys == (None,)  # in place: the top is the bottom's name


def test_run_script_function_and_errors(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "import caffe\nfrom caffe import layers as L\n"
        "def make_net():\n    n = caffe.NetSpec()\n    n.data = L.Input()\n    return n\n"
    )
    run = run_script(script, function="make_net")
    assert run.outputs[0].name == "make_net()"
    assert [lay.name for lay in run.outputs[0].message.layer] == ["data"]
    with pytest.raises(ScriptError, match="defines no function 'nope'"):
        run_script(script, function="nope")
    bad = tmp_path / "bad.py"
    bad.write_text("import caffe\n\nx = caffe.layers.ReLU(3)\n")
    with pytest.raises(ScriptError) as err:
        run_script(bad)
    assert f"{bad}:3: the NetSpec script failed: TypeError: ReLU input 0 is not a Top" in str(
        err.value
    )
    syn = tmp_path / "syn.py"
    syn.write_text("def f(:\n")
    with pytest.raises(ScriptError, match="syntax error"):
        run_script(syn)


def test_writes_into_folders_and_absolute_paths_are_captured(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "net.prototxt"
    script = tmp_path / "w.py"
    script.write_text(
        "import caffe\nfrom caffe import layers as L\nn = caffe.NetSpec()\nn.data = L.Input()\n"
        "with open('models/x/train.prototxt', 'w') as f:\n    f.write(str(n.to_proto()))\n"
        f"with open({str(outside)!r}, 'w') as f:\n    f.write('name: \"a\"')\n"
    )
    run = run_script(script)
    assert [o.name for o in run.outputs] == ["models/x/train.prototxt", str(outside)]
    assert not outside.exists()
    assert not (tmp_path / "models").exists()
