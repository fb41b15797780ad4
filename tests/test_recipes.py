"""Recipe files: TOML loading, validation with file:line, typed options, includes, catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewriter.recipes.recipe import (
    Option,
    Recipe,
    RecipeError,
    Step,
    builtin_names,
    coerce_option,
    key_positions,
    parse_step_spec,
)

BUILTINS = [
    "freeze",
    "unfreeze",
    "stop-gradient",
    "zero-decay-frozen",
    "set-lr",
    "bn-frozen",
    "finetune-head",
    "seed-freeze",
]


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def error_of(path: Path) -> str:
    with pytest.raises(RecipeError) as e:
        Recipe.load(path)
    return str(e.value)


# --------------------------------------------------------------------------- catalogue


def test_builtin_catalogue_is_complete_and_loads() -> None:
    assert set(BUILTINS) <= set(builtin_names())
    for name in builtin_names():
        r = Recipe.builtin(name)
        assert r.name == name and r.description and r.all_steps()
        assert r.text is not None and r.path is not None


def test_unknown_builtin_suggests() -> None:
    with pytest.raises(RecipeError, match="did you mean 'freeze'"):
        Recipe.builtin("freez")


def test_seed_freeze_includes_and_defaults() -> None:
    r = Recipe.builtin("seed-freeze")
    assert [i.name for i in r.includes] == ["freeze", "stop-gradient", "zero-decay-frozen"]
    steps = r.resolve()
    assert [s.kind for s in steps] == ["freeze", "stop-gradient", "zero-decay-frozen"]
    assert steps[0].params["upto"] == ["pool2/3x3_s2"]
    assert steps[0].params["layers"] == [] and steps[0].params["zero_decay"] is False
    assert steps[1].params == {"from": "test/pool", "to": "test/pool_proj"}
    assert r.resolve(upto="conv2/3x3")[0].params["upto"] == ["conv2/3x3"]


# --------------------------------------------------------------------------- errors with lines


def test_toml_syntax_error_has_line_and_col(tmp_path: Path) -> None:
    p = write(tmp_path, "bad.toml", 'name = "x"\n[[steps]]\nstep = "freeze\n')
    msg = error_of(p)
    assert msg.startswith(f"{p}:3:") and "not valid TOML" in msg


def test_unknown_top_level_key_is_located(tmp_path: Path) -> None:
    p = write(tmp_path, "r.toml", 'name = "x"\n\ndescripton = "typo"\n[[steps]]\nstep = "freeze"\n')
    msg = error_of(p)
    assert msg.startswith(f"{p}:3:1: error:") and "did you mean 'description'" in msg


def test_unknown_step_and_key_are_located(tmp_path: Path) -> None:
    p = write(
        tmp_path, "a.toml", '[[steps]]\nstep = "freeze"\nupto = "a"\n\n[[steps]]\nstep = "frezee"\n'
    )
    msg = error_of(p)
    assert msg.startswith(f"{p}:5:1:") and "unknown step" in msg and "'freeze'" in msg
    p = write(tmp_path, "b.toml", '[[steps]]\nstep = "freeze"\n  upt = "a"\n')
    msg = error_of(p)
    assert msg.startswith(f"{p}:3:3:") and "unknown key 'upt'" in msg and "'upto'" in msg
    p = write(
        tmp_path, "c.toml", '[[steps]]\nstep = "rename-layer"\nfrom = "a"\nto = "b"\nupto = "c"\n'
    )
    assert "takes no selector" in error_of(p)


def test_wrong_value_types_are_located(tmp_path: Path) -> None:
    p = write(tmp_path, "a.toml", '[[steps]]\nstep = "freeze"\nupto = "a"\nzero_decay = "yes"\n')
    msg = error_of(p)
    assert msg.startswith(f"{p}:4:1:") and "true or false" in msg
    p = write(tmp_path, "b.toml", '[[steps]]\nstep = "freeze"\nupto = "a"\nshared = "all"\n')
    assert "one of unit, reject" in error_of(p)
    p = write(
        tmp_path, "c.toml", '[[steps]]\nstep = "set-lr"\nlayers = ["a"]\nvalue = 1\nscale = 2\n'
    )
    assert "exactly one of 'value'" in error_of(p)
    p = write(tmp_path, "d.toml", '[[steps]]\nstep = "stop-gradient"\nfrom = "a"\n')
    assert "missing required key 'to'" in error_of(p)


def test_option_errors_are_located(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "a.toml",
        '[options.n]\ntype = "int"\ndefault = "three"\n\n[[steps]]\nstep = "freeze"\nupto = "a"\n',
    )
    msg = error_of(p)
    assert msg.startswith(f"{p}:3:1:") and "takes a int" in msg
    p = write(
        tmp_path,
        "b.toml",
        '[options.n]\ntype = "integer"\n[[steps]]\nstep = "freeze"\nupto = "a"\n',
    )
    assert error_of(p).startswith(f"{p}:2:1:")
    p = write(tmp_path, "c.toml", '[[steps]]\nstep = "freeze"\n\nupto = "{uptoo}"\n')
    msg = error_of(p)
    assert msg.startswith(f"{p}:4:1:") and "'{uptoo}' names no option" in msg


def test_key_positions_handles_multiline_values() -> None:
    text = (
        'name = "x"  # a = b\n'
        'description = """\nline = not a key\n"""\n'
        "[[steps]]\n"
        'step = "freeze"\n'
        'layers = [\n  "a",\n  "b = c",\n]\n'
        "[[steps]]\n"
        'step = "rename-layer"\n'
        '"from" = "a"\n'
        "[options.up]\n"
        "type = 'string'\n"
    )
    pos = key_positions(text)
    assert pos[("name",)] == (1, 1)
    assert pos[("description",)] == (2, 1)
    assert ("line",) not in pos and ("b = c",) not in pos
    assert pos[("steps", 0, "layers")] == (7, 1)
    assert pos[("steps", 1)] == (11, 1)
    assert pos[("steps", 1, "from")] == (13, 1)
    assert pos[("options", "up", "type")] == (15, 1)


# --------------------------------------------------------------------------- options


def test_option_values_typed_and_required() -> None:
    r = Recipe.builtin("finetune-head")
    with pytest.raises(RecipeError, match="needs option 'layer'"):
        r.resolve()
    steps = r.resolve(layer="fc8", num_output=20)
    assert steps[0].params == {"from": "fc8", "to": "fc8_ft"}
    assert steps[1].params["value"] == 20 and isinstance(steps[1].params["value"], int)
    assert steps[1].params["field"] == "inner_product_param.num_output"
    assert steps[2].params["value"] == 10.0
    with pytest.raises(RecipeError, match="not a valid int"):
        r.resolve(layer="fc8", num_output="many")
    with pytest.raises(RecipeError, match="takes a int"):
        r.resolve(layer="fc8", num_output=2.5)
    with pytest.raises(RecipeError, match="has no option 'num_outputs'"):
        r.resolve(layer="fc8", num_outputs=3)
    # strings from --set are coerced by type
    assert r.resolve(layer="fc8", num_output="7")[1].params["value"] == 7


def test_coerce_option() -> None:
    assert coerce_option(Option("a", "int", 1), "0x10") == 16
    assert coerce_option(Option("a", "float", 1.0), "1e-3") == 0.001
    assert coerce_option(Option("a", "bool", False), "yes") is True
    assert coerce_option(Option("a", "list", []), "a, b,c") == ["a", "b", "c"]
    assert coerce_option(Option("a", "list", []), '["x, y", "z"]') == ["x, y", "z"]
    with pytest.raises(RecipeError, match="not a valid bool"):
        coerce_option(Option("a", "bool", False), "maybe")


def test_placeholders_keep_types_and_concatenate(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "r.toml",
        """
[options.names]
type = "list"
default = ["a", "b"]
[options.n]
type = "int"
default = 3
[options.pre]
type = "string"
default = "conv"
[[steps]]
step = "freeze"
layers = ["{names}", "{pre}{n}", "{{literal}}"]
[[steps]]
step = "set-field"
layers = "{names}"
field = "convolution_param.num_output"
value = "{n}"
""",
    )
    steps = Recipe.load(p).resolve()
    assert steps[0].params["layers"] == ["a", "b", "conv3", "{literal}"]
    assert steps[1].params["layers"] == ["a", "b"] and steps[1].params["value"] == 3


def test_recipe_values_are_data_not_code(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "r.toml",
        "[[steps]]\nstep = \"freeze\"\nlayers = [\"__import__('os').system('false')\"]\n",
    )
    steps = Recipe.load(p).resolve()
    assert steps[0].params["layers"] == ["__import__('os').system('false')"]
    p = write(tmp_path, "s.toml", '[[steps]]\nstep = "freeze"\nupto = "{__class__}"\n')
    assert "names no option" in error_of(p)


# --------------------------------------------------------------------------- includes


def test_include_by_path_and_name(tmp_path: Path) -> None:
    write(
        tmp_path,
        "sub/base.toml",
        '[options.x]\ntype = "string"\ndefault = "a"\n[[steps]]\nstep = "freeze"\nupto = "{x}"\n',
    )
    p = write(
        tmp_path,
        "sub/top.toml",
        'include = ["./base.toml", "zero-decay-frozen"]\n'
        '[options.x]\ntype = "string"\ndefault = "b"\n',
    )
    r = Recipe.load(p)
    steps = r.resolve()
    assert [s.kind for s in steps] == ["freeze", "zero-decay-frozen"]
    assert steps[0].params["upto"] == ["b"]  # the including recipe's default wins


def test_include_cycle_is_named(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", 'include = ["b.toml"]\n')
    write(tmp_path, "b.toml", 'include = ["c.toml"]\n')
    write(tmp_path, "c.toml", '\ninclude = ["a.toml"]\n')
    msg = error_of(tmp_path / "a.toml")
    assert "include cycle: a.toml -> b.toml -> c.toml -> a.toml" in msg
    assert f"{tmp_path / 'c.toml'}:2:" in msg


def test_missing_and_escaping_includes(tmp_path: Path) -> None:
    p = write(tmp_path, "in/a.toml", 'include = [\n  "nothere.toml",\n]\n')
    msg = error_of(p)
    assert "not found" in msg and msg.startswith(f"{p}:1:")
    write(tmp_path, "secret.toml", '[[steps]]\nstep = "zero-decay-frozen"\n')
    p = write(tmp_path, "in/b.toml", 'include = ["../secret.toml"]\n')
    assert "outside the recipe's folder" in error_of(p)
    p = write(tmp_path, "in/c.toml", 'include = ["no-such-builtin"]\n')
    assert "no built-in recipe named 'no-such-builtin'" in error_of(p)


def test_option_type_conflict_between_includes(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.toml",
        '[options.v]\ntype = "int"\ndefault = 1\n[[steps]]\nstep = "zero-decay-frozen"\n',
    )
    write(
        tmp_path,
        "b.toml",
        '[options.v]\ntype = "string"\ndefault = "x"\n[[steps]]\nstep = "zero-decay-frozen"\n',
    )
    p = write(tmp_path, "c.toml", 'include = ["a.toml", "b.toml"]\n')
    with pytest.raises(RecipeError, match="option 'v' is a string here but a int"):
        Recipe.load(p).resolve()


# --------------------------------------------------------------------------- Python API


def test_recipe_built_in_python() -> None:
    r = Recipe(
        name="mine", steps=[Step("freeze", upto="conv3"), Step("stop-gradient", from_="a", to="b")]
    )
    steps = r.resolve()
    assert steps[0].params["upto"] == ["conv3"]
    assert steps[1].params == {"from": "a", "to": "b"}
    with pytest.raises(RecipeError, match="unknown step"):
        Recipe(steps=[Step("freezz", upto="a")])
    loaded = Recipe.from_text(r.to_toml(), "x.toml")
    assert [s.kind for s in loaded.steps] == ["freeze", "stop-gradient"]
    assert loaded.steps[1].params == {"from": "a", "to": "b"}


def test_parse_step_spec() -> None:
    s = parse_step_spec("freeze upto=pool2/3x3_s2 zero_decay=true layers=a,b")
    assert s.kind == "freeze"
    assert s.params == {"upto": ["pool2/3x3_s2"], "zero_decay": True, "layers": ["a", "b"]}
    s = parse_step_spec("set-field layers=fc field=inner_product_param.num_output value=10")
    assert s.params["value"] == 10
    s = parse_step_spec("set-lr 'layers=conv 1' params=0,1 scale=0.1")
    assert s.params == {"layers": ["conv 1"], "params": [0, 1], "scale": 0.1}
    with pytest.raises(RecipeError, match="unknown step 'frezze'"):
        parse_step_spec("frezze upto=a")
    with pytest.raises(RecipeError, match="has no key 'upt'"):
        parse_step_spec("freeze upt=a")
    with pytest.raises(RecipeError, match="takes a bool"):
        parse_step_spec("freeze upto=a zero_decay=perhaps")
    with pytest.raises(RecipeError, match="key=value"):
        parse_step_spec("freeze upto")


# --------------------------------------------------------------------------- preconditions


def test_preconditions(tmp_path: Path) -> None:
    from rewriter.errors import RewriterError
    from rewriter.recipes.engine import apply
    from rewriter.text.cst import parse

    net = parse(
        'layer { name: "data" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 2 } } }\n"
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        "inner_product_param { num_output: 2 } }\n"
    )
    body = '[[steps]]\nstep = "freeze"\nlayers = ["fc"]\n'
    p = write(tmp_path, "a.toml", '[preconditions]\nhas_layer = ["fc", "conv9"]\n' + body)
    with pytest.raises(RewriterError, match="precondition not met: no layer named 'conv9'"):
        apply(net, Recipe.load(p))
    p = write(tmp_path, "b.toml", '[preconditions]\nhas_layer = "conv9"\non_fail = "skip"\n' + body)
    result = apply(net, Recipe.load(p))
    assert result.skipped == "no layer named 'conv9'" and not result.changed
    p = write(tmp_path, "c.toml", '[preconditions]\nformat = "V1"\n' + body)
    with pytest.raises(RewriterError, match="format is V2, the recipe needs V1"):
        apply(net, Recipe.load(p))
    p = write(tmp_path, "d.toml", '[preconditions]\nformat = "V3"\n' + body)
    assert error_of(p).startswith(f"{p}:2:1:")
    p = write(tmp_path, "e.toml", '[preconditions]\nformat = "current"\nhas_layer = "fc"\n' + body)
    assert apply(net, Recipe.load(p)).changed
