"""Sweep specs: parsing, grid expansion, stable ids, and every documented error."""

from __future__ import annotations

import itertools
import json
import math
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.spec.parser import load_spec, parse_spec
from bench.spec.sweep import CELL_DEFAULTS, DEFAULT_MAX_CELLS, SpecError, SweepSpec, spec_to_dict
from echo_tts.sampling import CFG_MODES, SamplerConfig

MODEL = '[model]\nmodel = "random:tiny"\n'


def parse(text: str, **kwargs: object) -> SweepSpec:
    return parse_spec(text, base_dir=Path("/tmp"), name="t", **kwargs)  # type: ignore[arg-type]


def spec_error(text: str, **kwargs: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text, **kwargs)
    assert "\n" not in str(info.value)
    return info.value


# --------------------------------------------------------------------------- shipped sweeps


def sweep_path(name: str) -> Path:
    return Path(str(resources.files("bench").joinpath("sweeps", name)))


def test_smoke_sweep_expands_to_16_cells() -> None:
    spec = load_spec(sweep_path("smoke.toml"))
    assert spec.name == "smoke"
    assert len(spec.cells) == 2 * 4 * 2
    assert spec.model.model == spec.model.codec == spec.model.pca == "random:tiny"
    assert (spec.model.device, spec.model.dtype) == ("cpu", "float32")
    assert {c.sampler.cfg_mode for c in spec.cells} == set(CFG_MODES)
    assert {c.dtype for c in spec.cells} == {"float32"}
    assert spec.measure.asr == "random:tiny"
    assert (spec.measure.sim, spec.measure.mos) == ("resemblyzer", ("dnsmos",))
    assert spec.prompts.is_builtin and spec.prompts.limit == 3
    assert spec.source == sweep_path("smoke.toml").resolve()


def test_weekly_sweep_fits_its_limit() -> None:
    spec = load_spec(sweep_path("weekly.toml"))
    assert len(spec.cells) == 5 * 4 * 3 * 5 == spec.limits.max_cells
    assert list(spec.cells_by_gpu()) == ["A10G", "L4", "L40S", "A100-80GB", "H100"]
    assert spec.measure.seeds == (0, 1)
    assert spec.prompts.ids is not None and len(spec.prompts.ids) == 40
    assert spec.modal.audio_sample == 0.05


def test_nightly_canary_is_the_production_config_and_its_neighbours() -> None:
    from bench.gate.sweep import load_gate_spec

    spec = load_spec(sweep_path("nightly.toml"))
    weekly = load_spec(sweep_path("weekly.toml"))
    groups = spec.cells_by_gpu()
    assert list(groups) == list(weekly.cells_by_gpu())
    production = SamplerConfig()  # the production defaults: 40 steps, independent, 640
    for cells in groups.values():
        configs = {(c.sampler.num_steps, c.sampler.cfg_mode) for c in cells}
        assert configs == {(30, "independent"), (40, "independent"), (50, "independent"),
                           (40, "alternating")}
        assert any(c.sampler == production for c in cells)
    # Every canary cell is a weekly cell (same id), so nights and weeks line up.
    assert {c.id for c in spec.cells} <= {c.id for c in weekly.cells}
    gate = load_gate_spec(sweep_path("gate.toml"))
    assert spec.prompts.ids is not None and len(spec.prompts.ids) >= gate.thresholds.min_prompts


def test_scheduled_and_gate_specs_score_sim_and_utmos_when_their_models_are_present() -> None:
    from bench.gate.sweep import load_gate_spec
    from bench.scoring.quality import MOS_IF_PRESENT, SIM_PREFERRED

    for name in ("nightly", "weekly"):
        measure = load_spec(sweep_path(f"{name}.toml")).measure
        assert (measure.sim, measure.mos) == (SIM_PREFERRED, ("dnsmos", MOS_IF_PRESENT)), name
    gate = load_gate_spec(sweep_path("gate.toml")).sweep["measure"]
    assert (gate["sim"], gate["mos"]) == (SIM_PREFERRED, ["dnsmos", MOS_IF_PRESENT])


def test_modal_smoke_sweep() -> None:
    spec = load_spec(sweep_path("modal-smoke.toml"))
    groups = spec.cells_by_gpu()
    assert list(groups) == ["L4", "A10G"]
    assert all(len(cells) == 2 for cells in groups.values())
    assert spec.model.model == "jordand/echo-tts-base"


# --------------------------------------------------------------------------- parsing


def test_defaults() -> None:
    spec = parse(MODEL)
    assert spec.name == "t" and spec.description == ""
    assert spec.model.codec == "jordand/fish-s1-dac-min"
    assert spec.model.dtype == "bfloat16" and spec.model.device == "auto"
    assert spec.prompts.source == "builtin" and spec.prompts.long_text == "chunk"
    assert spec.measure.seeds == (0,) and spec.measure.warmup == 1
    assert spec.limits.max_cells == DEFAULT_MAX_CELLS
    (cell,) = spec.cells  # no axes: one cell of production defaults
    assert cell.sampler == SamplerConfig()
    assert cell.gpu is None and cell.batch_size == 1 and not cell.compile
    assert cell.dtype == "bfloat16"
    assert cell.label == "steps=40 cfg=independent len=640"


def test_relative_paths_resolve_against_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    spec_file = tmp_path / "s.toml"
    spec_file.write_text(
        '[model]\nmodel = "weights"\ncodec = "./codec"\npca = "owner/pca"\n'
        '[prompts]\nset = "sets/meta.lst"\nspeaker = "voice.wav"\n'
    )
    spec = load_spec(spec_file)
    assert spec.model.model == str(tmp_path / "weights")
    assert spec.model.codec == str(tmp_path / "codec")
    assert spec.model.pca == "owner/pca"  # a Hub id is left alone
    assert spec.prompts.source == tmp_path / "sets" / "meta.lst"
    assert spec.prompts.speaker == tmp_path / "voice.wav"
    assert spec.name == "s"


def test_grid_cells_and_labels() -> None:
    spec = parse(MODEL + '[grid]\nnum_steps = [20, 40]\ngpu = ["a10g"]\n'
                 'cfg_scale_text = [2, 3.5]\n')
    assert len(spec.cells) == 4
    assert {c.gpu for c in spec.cells} == {"A10G"}  # GPU names are canonicalised
    first = spec.cells[0]
    assert first.sampler.num_steps == 20 and first.sampler.cfg_scale_text == 2.0
    assert first.label == "steps=20 cfg=independent len=640 gpu=A10G cfg_scale_text=2"
    assert first.settings == {"gpu": "A10G", "num_steps": 20, "cfg_scale_text": 2.0}


def test_execution_axes_follow_model_section() -> None:
    spec = parse('[model]\nmodel = "random:tiny"\ndtype = "float16"\ncompile = true\n'
                 "[grid]\nbatch_size = [1, 4]\ncuda_graphs = [false, true]\n")
    assert {(c.dtype, c.compile) for c in spec.cells} == {("float16", True)}
    assert {(c.batch_size, c.cuda_graphs) for c in spec.cells} == set(
        itertools.product([1, 4], [False, True]))


def test_unset_optional_sampler_field() -> None:
    spec = parse(MODEL + '[grid]\ntruncation_factor = ["unset", 0.8]\n')
    assert [c.sampler.truncation_factor for c in spec.cells] == [None, 0.8]
    assert spec.cells[0].id == parse(MODEL).cells[0].id


def test_ids_ignore_axis_order_formatting_and_int_floats() -> None:
    a = parse(MODEL + '[grid]\nnum_steps = [20, 40]\ncfg_mode = ["joint", "none"]\n'
              "cfg_scale_text = [2]\n")
    b = parse('[grid]\ncfg_scale_text = [ 2.0 ]\ncfg_mode = [ "joint","none" ]\n'
              "num_steps = [\n  20,\n  40,\n]\n\n" + MODEL)
    assert [c.id for c in a.cells] == [c.id for c in b.cells]
    assert len({c.id for c in a.cells}) == 4
    assert all(len(c.id) == 10 and int(c.id, 16) >= 0 for c in a.cells)


def test_id_depends_on_effective_settings_only() -> None:
    # An explicit default equals an absent axis; a different dtype is a different cell.
    explicit = parse(MODEL + "[grid]\nnum_steps = [40]\nsequence_length = [640]\n")
    assert explicit.cells[0].id == parse(MODEL).cells[0].id
    float32 = parse('[model]\nmodel = "random:tiny"\ndtype = "float32"\n')
    assert float32.cells[0].id != parse(MODEL).cells[0].id


def test_include_takes_first_grid_value_or_default() -> None:
    spec = parse(MODEL + '[grid]\nnum_steps = [20, 40]\ncfg_mode = ["joint", "none"]\n'
                 "[[include]]\nnum_steps = 30\n"
                 "[[include]]\ncfg_mode = \"independent\"\ntruncation_factor = 0.7\n")
    assert len(spec.cells) == 6
    added = spec.cells[4:]
    assert (added[0].sampler.num_steps, added[0].sampler.cfg_mode) == (30, "joint")
    assert added[1].sampler.num_steps == 20
    assert added[1].sampler.truncation_factor == 0.7
    assert added[1].sampler.sequence_length == 640  # not in the grid: the default


def test_include_of_existing_cell_is_deduplicated() -> None:
    spec = parse(MODEL + "[grid]\nnum_steps = [20, 40]\n[[include]]\nnum_steps = 40\n")
    assert [c.sampler.num_steps for c in spec.cells] == [20, 40]


def test_only_includes_without_axes() -> None:
    spec = parse(MODEL + "[[include]]\nnum_steps = 20\n[[include]]\nnum_steps = 30\n")
    assert [c.sampler.num_steps for c in spec.cells] == [20, 30]


def test_exclude_drops_matching_cells_and_include_adds_back() -> None:
    spec = parse(MODEL + '[grid]\nnum_steps = [20, 40]\ncfg_mode = ["joint", "none"]\n'
                 'gpu = ["L4", "H100"]\n'
                 '[[exclude]]\ncfg_mode = "none"\ngpu = "L4"\n'
                 '[[include]]\nnum_steps = 20\ncfg_mode = "none"\ngpu = "L4"\n')
    combos = [(c.sampler.num_steps, c.sampler.cfg_mode, c.gpu) for c in spec.cells]
    assert (40, "none", "L4") not in combos
    assert combos[-1] == (20, "none", "L4")
    assert len(combos) == 8 - 2 + 1


def test_cell_order_puts_reload_axes_outermost() -> None:
    spec = parse(MODEL + '[grid]\nnum_steps = [20, 40]\ngpu = ["L4", "H100"]\n')
    assert [c.gpu for c in spec.cells] == ["L4", "L4", "H100", "H100"]
    assert list(spec.cells_by_gpu()) == ["L4", "H100"]


def test_hash_and_manifest_dict() -> None:
    text = MODEL + "[grid]\nnum_steps = [20, 40]\n"
    a, b = parse(text), parse(text + "# comment\n")
    assert a.hash == b.hash and len(a.hash) == 64
    assert parse(MODEL + "[grid]\nnum_steps = [20]\n").hash != a.hash
    data = json.loads(json.dumps(spec_to_dict(a)))
    assert data["hash"] == a.hash
    assert [c["id"] for c in data["cells"]] == [c.id for c in a.cells]
    assert data["cells"][0]["num_steps"] == 20 and data["cells"][0]["label"]


def test_large_grid_needs_allow_large() -> None:
    text = MODEL + "[limits]\nmax_cells = 3\n[grid]\nnum_steps = [1, 2, 3, 4]\n"
    error = spec_error(text)
    assert "grid has 4 cells, above max_cells=3; pass --yes or raise [limits].max_cells" in str(error)
    assert error.line == 4
    assert len(parse(text, allow_large=True).cells) == 4


def test_default_max_cells() -> None:
    text = MODEL + f"[grid]\nnum_steps = {list(range(1, DEFAULT_MAX_CELLS + 2))}\n"
    assert "above max_cells=500" in str(spec_error(text))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "fragments", "line"),
    [
        ("nmae = 'x'\n" + MODEL, ["unknown key 'nmae'", "did you mean 'name'", "allowed:"], 1),
        (MODEL + "[grid]\nnum_step = [4]\n", ["unknown key 'num_step' in [grid]",
                                               "did you mean 'num_steps'", "cfg_mode"], 4),
        (MODEL + "[measure]\nwarmpu = 1\n", ["unknown key 'warmpu' in [measure]"], 4),
        ('[model]\nmodel = "random:tiny"\ncolour = 1\n', ["unknown key 'colour' in [model]"], 3),
        (MODEL + "[grid]\nnum_steps = 40\n",
         ["grid.num_steps must be a list, e.g. num_steps = [40]"], 4),
        (MODEL + '[grid]\ncfg_mode = "joint"\n', ['e.g. cfg_mode = ["joint"]'], 4),
        (MODEL + "[grid]\nnum_steps = []\n", ["grid.num_steps is empty", "an integer"], 4),
        (MODEL + '[grid]\ncfg_mode = ["indep"]\n',
         ["grid.cfg_mode[0] must be one of independent, alternating, joint, none",
          "'indep'"], 4),
        (MODEL + '[grid]\ngpu = ["A10G", "V100"]\n',
         ["grid.gpu[1] must be a Modal GPU", "A10G", "H100!", "'V100'"], 4),
        (MODEL + '[grid]\ngpu = ["H100:9"]\n', ["grid.gpu[0]", "1-8"], 4),
        (MODEL + "[grid]\nnum_steps = [4.5]\n", ["grid.num_steps[0] must be an integer"], 4),
        (MODEL + "[grid]\nnum_steps = [true]\n", ["grid.num_steps[0] must be an integer"], 4),
        (MODEL + '[grid]\ncfg_scale_text = ["big"]\n', ["grid.cfg_scale_text[0] must be a number"],
         4),
        (MODEL + "[grid]\nbatch_size = [0]\n", ["grid.batch_size[0] must be an integer >= 1"], 4),
        (MODEL + '[grid]\ndtype = ["fp8"]\n', ["one of float32, bfloat16, float16"], 4),
        (MODEL + "[grid]\nnum_steps = [4, 4]\n", ["grid.num_steps lists 4 twice"], 4),
        (MODEL + "[grid]\nnum_steps = [0]\n",
         ["grid cell (num_steps=0)", "num_steps must be an integer >= 1"], 4),
        (MODEL + "[grid]\nsequence_length = [64, 1000]\n",
         ["sequence_length=1000", "sequence_length must be an integer in [1, 640]"], 4),
        (MODEL + "[grid]\nrescale_k = [1.5]\n", ["rescale_k and rescale_sigma must be set together"],
         4),
        (MODEL + "[grid]\nnum_steps = [4]\n[[include]]\ncfg_min_t = 2.0\n",
         ["include[1]", "cfg_min_t must be in [0, 1]"], 6),
        (MODEL + "[grid]\nnum_steps = [4, 8]\n[[exclude]]\nnum_steps = 4\n"
         "[[exclude]]\nnum_steps = 8\n", ["empty after [[exclude]]"], 5),
        (MODEL + "[grid]\nnum_steps = [4, 8]\n[[exclude]]\nnum_steps = 16\n",
         ["exclude[1] (num_steps=16) matches no cell"], 5),
        (MODEL + "[grid]\nnum_steps = [4]\n[[include]]\nnum_steps = [8]\n",
         ["include[1].num_steps must be a single value"], 6),
        (MODEL + "[grid]\nnum_steps = [4]\n[[include]]\nsteps = 8\n",
         ["unknown key 'steps' in [include[1]]", "did you mean 'num_steps'"], 6),
        ("include = {num_steps = 8}\n" + MODEL, ["write [[include]]"], 1),
        ("grid = 3\n" + MODEL, ["grid must be a table"], 1),
        (MODEL + "[grid]\nnum_steps = [4]\n[[include]]\nnum_steps = 8\n[[include]]\n"
         "num_steps = 0\n", ["include[2] (num_steps=0)"], 8),
        (MODEL + "[grid]\nnum_steps = [4]\n[[include]]\ngpu = 'Z80'\n",
         ["include[1].gpu must be a Modal GPU"], 6),
        ("[model]\ndtype = 'float32'\n", ['[model] needs model = "..."'], 1),
        ('[model]\nmodel = "random:tiny"\ndevice = "gpu"\n',
         ["model.device must be one of auto, cpu, cuda, cuda:N"], 3),
        ('[model]\nmodel = "random:tiny"\ncompile = "yes"\n', ["model.compile must be true or false"],
         3),
        ('[model]\nmodel = "random:tiny"\ndtype = "fp16"\n', ["model.dtype must be one of"], 3),
        (MODEL + "[prompts]\nlimit = 0\n", ["prompts.limit must be an integer >= 1"], 4),
        (MODEL + "[prompts]\nids = 'en-001'\n", ["prompts.ids must be a list"], 4),
        (MODEL + "[prompts]\nlong_text = 'split'\n",
         ["prompts.long_text must be one of chunk, truncate, error"], 4),
        (MODEL + "[measure]\nseeds = 0\n", ["measure.seeds must be a list of integers"], 4),
        (MODEL + "[measure]\nseeds = [1, 1]\n", ["measure.seeds lists a seed twice"], 4),
        (MODEL + "[measure]\nrepeats = 0\n", ["measure.repeats must be an integer >= 1"], 4),
        (MODEL + "[measure]\nwarmup = -1\n", ["measure.warmup must be an integer >= 0"], 4),
        (MODEL + "[measure]\nsim = 'ecapa'\n",
         ["measure.sim must be one of none, resemblyzer, wavlm-ecapa"], 4),
        (MODEL + "[measure]\nmos = ['dnsmos', 'pesq']\n", ["measure.mos must list each of"], 4),
        (MODEL + "[measure]\nsim = 'wavlm-ecapa-or-ecapa'\n",
         ["measure.sim must be one of", "wavlm-ecapa-or-resemblyzer"], 4),
        (MODEL + "[measure]\nmos = ['utmos', 'utmos-if-present']\n",
         ["measure.mos must list each of", "with or without -if-present"], 4),
        (MODEL + "[measure]\nmos = ['dnsmos-if-present']\n", ["measure.mos must list each of"], 4),
        (MODEL + "[limits]\nmax_cells = 'many'\n", ["limits.max_cells must be an integer"], 4),
        ("name = 3\n" + MODEL, ["name must be a string"], 1),
        ('[model]\nmodel = "random:tiny"\ndevice = "cpu"\n[grid]\ncuda_graphs = [true]\n',
         ["cuda_graphs on a CPU device"], 3),
    ],
)
def test_errors_name_the_key(text: str, fragments: list[str], line: int) -> None:
    error = spec_error(text)
    for fragment in fragments:
        assert fragment in str(error), str(error)
    assert error.line == line, str(error)
    assert str(error).startswith(f"t:{line}: ")


def test_quality_metrics_default_off_and_faster_whisper_folders_resolve(tmp_path: Path) -> None:
    spec = parse(MODEL)
    assert (spec.measure.sim, spec.measure.mos) == ("none", ())
    spec = parse_spec(MODEL + "[measure]\nasr = 'faster-whisper:models/tiny-ct2'\n"
                      "sim = 'wavlm-ecapa'\nmos = ['utmos', 'dnsmos']\n", base_dir=tmp_path, name="t")
    assert spec.measure.asr == f"faster-whisper:{(tmp_path / 'models' / 'tiny-ct2').resolve()}"
    assert (spec.measure.sim, spec.measure.mos) == ("wavlm-ecapa", ("utmos", "dnsmos"))
    assert parse(MODEL + "[measure]\nasr = 'faster-whisper:large-v3'\n").measure.asr == (
        "faster-whisper:large-v3")


def test_toml_syntax_error_has_line_number() -> None:
    error = spec_error(MODEL + "[grid]\nnum_steps = [4, 8\ncfg_mode = []\n")
    assert "TOML syntax error" in str(error)
    assert error.line is not None and error.line >= 4
    assert f"t:{error.line}:" in str(error)


def test_load_spec_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[model]\nmodel = "random:tiny"\nname = "\xff"\n')
    with pytest.raises(SpecError, match=r"bad.toml:3: not valid UTF-8"):
        load_spec(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(MODEL + "[grid]\nnum_steps = 4\n")
    with pytest.raises(SpecError, match=r"wrong.toml:4: grid.num_steps must be a list"):
        load_spec(wrong)


# --------------------------------------------------------------------------- properties

AXIS_VALUES = {
    "num_steps": st.integers(1, 80),
    "cfg_mode": st.sampled_from(CFG_MODES),
    "sequence_length": st.integers(1, 640),
    "gpu": st.sampled_from(["T4", "L4", "A10G", "L40S", "A100-80GB", "H100", "H200:2"]),
    "batch_size": st.integers(1, 8),
    "cfg_scale_text": st.floats(0, 10, allow_nan=False).map(lambda x: round(x, 2)),
    "truncation_factor": st.floats(0.5, 1.5).map(lambda x: round(x, 2)),
    "compile": st.booleans(),
    "dtype": st.sampled_from(["float32", "bfloat16", "float16"]),
}


FLOAT_AXES = ("cfg_scale_text", "truncation_factor")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


@st.composite
def grids(draw: st.DrawFn) -> dict[str, list[object]]:
    keys = draw(st.lists(st.sampled_from(sorted(AXIS_VALUES)), unique=True, max_size=4))
    return {k: draw(st.lists(AXIS_VALUES[k], min_size=1, max_size=3, unique=True))
            for k in keys}


def grid_toml(grid: dict[str, list[object]], order: list[str]) -> str:
    lines = [MODEL, "[grid]"]
    lines += [f"{k} = [{', '.join(_toml_value(v) for v in grid[k])}]" for k in order]
    return "\n".join(lines) + "\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid=grids(), data=st.data())
def test_random_grids_expand_fully_with_stable_ids(grid: dict[str, list[object]],
                                                   data: st.DataObject) -> None:
    keys = list(grid)
    shuffled = data.draw(st.permutations(keys))
    a = parse(grid_toml(grid, keys))
    b = parse(grid_toml(grid, list(shuffled)))
    assert len(a.cells) == math.prod(len(v) for v in grid.values())
    assert [c.id for c in a.cells] == [c.id for c in b.cells]
    assert len({c.id for c in a.cells}) == len(a.cells)
    assert [c.id for c in parse(grid_toml(grid, keys)).cells] == [c.id for c in a.cells]
    for cell in a.cells:  # every cell takes its values from the axes
        values = cell.values()
        for key, options in grid.items():
            assert any(values[key] == o for o in options)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid=grids().filter(lambda g: len(g) >= 1), data=st.data())
def test_random_include_exclude_are_honoured(grid: dict[str, list[object]],
                                             data: st.DataObject) -> None:
    full = parse(grid_toml(grid, list(grid)))
    # Exclude on one axis value (always matches something); include one fresh cell.
    key = data.draw(st.sampled_from(sorted(grid)))
    value = data.draw(st.sampled_from(grid[key]))
    include = {k: data.draw(AXIS_VALUES[k]) for k in data.draw(
        st.lists(st.sampled_from(sorted(AXIS_VALUES)), min_size=1, max_size=3, unique=True))}
    text = grid_toml(grid, list(grid)) + f"[[exclude]]\n{key} = {_toml_value(value)}\n"
    text += "[[include]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in include.items())
    try:
        spec = parse(text)
    except SpecError as exc:
        assert "empty after" in str(exc) or "not a valid sampler" in str(exc)
        return
    ids = [c.id for c in spec.cells]
    assert len(set(ids)) == len(ids)
    expected_kept = [c for c in full.cells if c.values()[key] != value]
    # Every kept grid cell survives, in order; the include follows them unless it
    # duplicated a kept cell. Axes it leaves out take the grid's first value (else the
    # default).
    assert ids[:len(expected_kept)] == [c.id for c in expected_kept]
    expected = {k: options[0] for k, options in grid.items()}
    expected.update({k: float(v) if k in FLOAT_AXES else v for k, v in include.items()})
    matching = [c for c in spec.cells
                if all(c.values()[k] == v for k, v in expected.items())
                and all(c.values()[k] == CELL_DEFAULTS[k]
                        for k in set(AXIS_VALUES) - set(expected) - {"dtype", "compile"})]
    assert len(matching) == 1
    assert len(spec.cells) == len(expected_kept) + (matching[0].id not in
                                                    {c.id for c in expected_kept})


@pytest.mark.parametrize("path", sorted(Path(str(resources.files("bench").joinpath("sweeps")))
                                        .glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_sweep_expands(path: Path) -> None:
    spec = load_spec(path)
    assert spec.cells and len({c.id for c in spec.cells}) == len(spec.cells)
    assert len(spec.cells) <= spec.limits.max_cells


@pytest.mark.parametrize("table, key", [
    ('[model]\nmodel = "./w\\u0000x"\n', "model.model"),
    ('[model]\nmodel = "random:tiny"\n[prompts]\nset = "p\\u0000.jsonl"\n', "prompts.set"),
    ('[model]\nmodel = "random:tiny"\n[prompts]\nspeaker = "~no-such-user-echo/a.wav"\n',
     "prompts.speaker"),
])
def test_unusable_paths_are_spec_errors(table: str, key: str) -> None:
    with pytest.raises(SpecError, match=f"{key}: .* is not a usable path"):
        parse(table + "[grid]\nnum_steps = [4]\n")
