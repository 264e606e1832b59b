"""Settings defined once (issue #16): FaroConfig's field metadata drives the CLI, the launcher and the dashboard;
every field is reachable, every default agrees, every range is enforced, old configs and run ids stay valid."""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import fields
from pathlib import Path

import pytest

from faro_core.cli import build_parser
from faro_core.cli import main as faro_main
from faro_core.cli.config_flags import config_fields, config_from_args
from faro_core.errors import FaroError
from faro_core.train.config import (
    CONFIG_VERSION,
    LEGACY_DEFAULTS,
    RUN_ID_FIELDS,
    UNHASHED_FIELDS,
    FaroConfig,
    default_of,
    flag_of,
    migrate_config,
    parse_values,
    setting_of,
)

ROOT = Path(__file__).resolve().parent.parent
# One valid, non-default CLI value per field. A new field needs a line here (the reachability test says so).
SAMPLES: dict[str, tuple[str, object]] = {
    "name": ("myrun", "myrun"), "data": ("some.csv", "some.csv"), "format": ("csv", "csv"),
    "attribute": ("role", "role"), "role_columns": ("c_role,r_role", ["c_role", "r_role"]),
    "group": ("gender", "gender"), "strata": ("a,b", ["a", "b"]), "dp_scope": ("all", "all"),
    "dp_partner": ("pool", False), "groups": ("F,M", ["F", "M"]), "skew": ("0.3", 0.3),
    "data_seed": ("3", 3), "split_by": ("column:conv", "column:conv"), "val_frac": ("0.2", 0.2),
    "test_frac": ("0.1", 0.1),
    "constraints": ("dp,cf", ["dp", "cf"]), "epsilon": ("inf", math.inf), "min_count": ("12", 12),
    "temperature": ("dp=0.3,cf=0.2", {"dp": 0.3, "cf": 0.2}), "method": ("expgrad", "expgrad"),
    "fixed_lambda": ("5", 5.0), "expgrad_base": ("head", "head"), "mode": ("full", "full"),
    "dro_eta": ("0.2", 0.2), "fair_alpha": ("3", 3.0), "fair_weight": ("0.5", 0.5),
    "backbone": ("/models/x", "/models/x"), "head_hidden": ("0", 0), "max_length": ("64", 64),
    "epochs": ("3", 3), "batch_size": ("16", 16), "constraint_batch_size": ("512", 512), "lr": ("1e-4", 1e-4),
    "weight_decay": ("0.01", 0.01), "dual_lr": ("0.02", 0.02), "ema": ("0.5", 0.5),
    "dual_signal": ("strict", "strict"), "lambda_max": ("none", None), "dual_every": ("7", 7),
    "dual_source": ("buffer", "buffer"), "eval_every": ("9", 9), "ckpt_every": ("0", 0),
    "select": ("last", "last"), "select_chance": ("0", 0.0), "select_metric": ("loss", "loss"),
    "average": ("0.9", 0.9), "seed": ("4", 4), "sweep": ("mysweep", "mysweep"),
}


def _parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_every_field_is_reachable_from_the_cli():
    missing = [f.name for f in fields(FaroConfig) if f.name not in SAMPLES]
    assert not missing, f"add a CLI sample for the new field(s) {missing} to SAMPLES"
    for name, (text, value) in SAMPLES.items():
        cfg = config_from_args(_parse("train", flag_of(name), text))
        assert getattr(cfg, name) == value, name
        assert setting_of(name).metadata["help"], f"{name} has no help text"
    # faro sweep takes every field its grid does not set, with the same flags
    sweep_flags = {f.name for f in config_fields(for_sweep=True)}
    assert sweep_flags == {f.name for f in fields(FaroConfig)} - {
        "name", "constraints", "epsilon", "method", "fixed_lambda", "expgrad_base", "seed", "sweep"}
    assert config_from_args(_parse("sweep", "--dual-lr", "0.02", "--select", "last")).select == "last"


def test_every_default_is_the_same_everywhere():
    """Config, CLI (train and sweep), the constructors the trainer calls, the data split and the dashboard."""
    from faro_core.data.splits import split_by_item
    from faro_core.evaluate.certify import certify
    from faro_core.evaluate.metrics import evaluate_frame
    from faro_core.fairness.chance import chance_violation
    from faro_core.fairness.constraint_set import CONSTRAINT_TYPES, ConstraintSet, all_constraints
    from faro_core.train.proxy_gda import ProxyGDA

    assert config_from_args(_parse("train")) == FaroConfig()
    assert config_from_args(_parse("sweep")) == FaroConfig()
    gda = inspect.signature(ProxyGDA).parameters
    for name in ("dual_lr", "ema", "dual_signal", "lambda_max"):
        assert gda[name].default == default_of(name), f"ProxyGDA.{name}"
    from faro_core.fairness.role import ROLE_CONSTRAINT_TYPES

    for fn in (ConstraintSet.parse, all_constraints, chance_violation, evaluate_frame, certify,
               *(c.__init__ for c in [*CONSTRAINT_TYPES.values(), *ROLE_CONSTRAINT_TYPES.values()])):
        assert inspect.signature(fn).parameters["min_count"].default == default_of("min_count"), fn
    for cls in CONSTRAINT_TYPES.values():
        assert inspect.signature(cls.__init__).parameters["epsilon"].default == default_of("epsilon"), cls
    split = inspect.signature(split_by_item).parameters
    assert (split["val_frac"].default, split["test_frac"].default) == (default_of("val_frac", split="item"),
                                                                       default_of("test_frac", split="item"))
    from faro_core.data.splits import DEFAULT_FRACTIONS

    for unit, fracs in DEFAULT_FRACTIONS.items():  # split_by's per-unit defaults are the config's
        unit = "column:x" if unit == "column" else unit
        assert fracs == (default_of("val_frac", split=unit), default_of("test_frac", split=unit))


def test_building_every_flag_does_not_import_torch():
    """faro --help and argument errors build every generated flag; that must stay fast (no torch)."""
    import subprocess
    import sys

    from faro_core.fairness.constraints import DEFAULT_MIN_COUNT

    assert DEFAULT_MIN_COUNT == default_of("min_count")
    code = "import sys; from faro_core.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_dashboard_train_form_defaults_come_from_the_config(tmp_path, monkeypatch):
    """The Train page's form shows the config's defaults and rejects an out-of-range ε with st.error."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from faro_core.studies.grid import SweepSpec

    monkeypatch.setenv("FARO_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(str(ROOT / "dashboard" / "pages" / "2_Train.py"), default_timeout=60).run()
    assert not at.exception
    assert at.number_input(key="w-epochs").value == default_of("epochs", "head")
    assert at.text_input(key="w-epsilons").value == ", ".join(f"{e:g}" for e in SweepSpec(FaroConfig()).epsilons)
    assert at.selectbox(key="w-mode").value == default_of("mode")
    at.text_input(key="w-epsilons").input("0.05, -1")
    at.button[0].click().run()
    assert any("epsilon must be >= 0 (--epsilon), got -1.0" in e.value for e in at.error), [e.value for e in at.error]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing launched


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "batch_size must be an integer >= 1 (--batch-size), got 0"),
    (["--lr", "-1"], "lr must be > 0 (--lr), got -1.0"),
    (["--epochs", "0"], "epochs must be an integer >= 1 (--epochs), got 0"),
    (["--epochs", "two"], "epochs must be an integer >= 1 (--epochs), got 'two'"),
    (["--skew", "1.5"], "skew must be in [0, 1] (--skew), got 1.5"),
    (["--constraint", "dp,xx"], "unknown constraint 'xx'; choose from none, dp, eo, cf"),
    (["--temperature", "dp=0"], "temperature must be kind=value pairs with each value > 0 (--temperature)"),
    (["--val-frac", "0.5", "--test-frac", "0.5"], "val_frac + test_frac must be < 1"),
])
def test_cli_rejects_values_out_of_range_with_one_line(argv, message, tmp_path, capsys):
    code = faro_main(["train", *argv, "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("faro: error: ") and message in err[0], err
    assert not (tmp_path / "runs").exists(), "nothing may be written for a rejected config"


@pytest.mark.parametrize("argv", [["--mode", "half"], ["--dp-partner", "maybe"], ["--select", "first"]])
def test_cli_rejects_a_word_outside_its_choices(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as bad:
        faro_main(["train", *argv, "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert bad.value.code == 2 and f"argument {argv[0]}: invalid choice: {argv[1]!r}" in err
    assert not (tmp_path / "runs").exists()


def test_python_callers_get_the_same_ranges():
    with pytest.raises(FaroError, match="unknown mode 'half'; choose from head, full"):
        FaroConfig(mode="half")
    with pytest.raises(FaroError, match=r"dp_partner must be true or false \(--dp-partner\), got 1"):
        FaroConfig(dp_partner=1)


def test_launcher_rejects_values_out_of_range_before_starting(tmp_path):
    from faro_core.store.runs import RunStore
    from faro_core.train import launch

    store = RunStore(tmp_path / "runs")
    for kw in ({"epochs": 0}, {"batch_size": 0}, {"lr": -1.0}, {"constraint": "xx"}):
        with pytest.raises(FaroError):
            launch.launch_train(store, **kw)
    bad = FaroConfig()
    bad.epochs = 0  # set after construction: validated again at launch
    with pytest.raises(FaroError, match="epochs"):
        launch.launch_train(store, config=bad)
    assert not store.root.exists()


def test_launcher_passes_the_config_as_a_file(tmp_path):
    """A launched run's settings travel as launch_config.json (no setting is rebuilt into flags) and reach the
    run's config.json unchanged."""
    from faro_core.store.runs import RunStore
    from faro_core.train import launch

    store = RunStore(tmp_path / "runs")
    cfg = FaroConfig(constraints=["cf"], epsilon=0.1, epochs=1, select="last", lambda_max=None, seed=1)
    rid = launch.launch_train(store, config=cfg)
    argv = launch.launch_info(store, rid)["argv"]
    assert argv[argv.index("--config") + 1] == str(store.path(rid) / launch.CONFIG_FILE)
    assert not {"--epsilon", "--constraint", "--epochs", "--seed"} & set(argv)
    assert launch.wait(store, rid, timeout_s=240) == "done", launch.log_tail(store, rid)
    stored = store.get(rid).config
    assert stored["config_version"] == CONFIG_VERSION
    assert FaroConfig.from_dict(stored) == cfg.resolved()


def test_a_launched_grid_passes_its_settings_as_a_file(tmp_path):
    """The dashboard's grid launch (one batched faro sweep of a SweepSpec): the shared settings go to
    base_config.json, the command line spells only the grid, and a bad grid is refused before anything is
    written."""
    from faro_core.studies.grid import SweepSpec, grid, run_id_for
    from faro_core.studies.sweep import sweep_argv

    spec = SweepSpec(base=FaroConfig(epochs=7, strata=["question_polarity"], dp_partner=False), kinds=["dp"],
                     epsilons=[0.05, 0.1], seeds=[0, 1], baselines=["bt"], name="ui")
    argv = sweep_argv(spec, tmp_path)
    path = argv[argv.index("--config") + 1]
    assert not {"--epochs", "--strata", "--dp-partner", "--mode"} & set(argv)
    base = FaroConfig.from_dict(json.loads(Path(path).read_text()))
    assert (base.epochs, base.strata, base.dp_partner) == (7, ["question_polarity"], False)
    ids = [run_id_for(c) for c in grid(spec)]
    assert len(ids) == 6 and all(i.split("-s")[0] in ("bt", "faro-dp-eps0.05", "faro-dp-eps0.1") for i in ids)
    with pytest.raises(FaroError, match="constraint kind"):
        sweep_argv(SweepSpec(base=FaroConfig(), kinds=["xx"], name="bad"), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_config_file_then_flags(tmp_path):
    """``--config FILE`` reads JSON (a stored config.json works, run_id and all); flags given override it."""
    stored = {**FaroConfig(constraints=["eo"], epsilon=0.1, seed=3, select="last").stored_dict(), "run_id": "x"}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(stored))
    cfg = config_from_args(_parse("train", "--config", str(path), "--seed", "5"))
    assert (cfg.constraints, cfg.epsilon, cfg.select, cfg.seed) == (["eo"], 0.1, "last", 5)
    path.write_text("{not json")
    with pytest.raises(FaroError, match="not valid JSON"):
        config_from_args(_parse("train", "--config", str(path)))
    path.write_text(json.dumps({"epochs": 0}))
    with pytest.raises(FaroError, match="epochs"):
        config_from_args(_parse("train", "--config", str(path)))
    with pytest.raises(FaroError, match="not found"):
        config_from_args(_parse("train", "--config", str(tmp_path / "missing.json")))


def test_migrate_config_reads_every_version():
    v1 = {k: v for k, v in FaroConfig().to_dict().items() if k not in LEGACY_DEFAULTS}
    v1["run_id"] = "old-run"
    old = FaroConfig.from_dict(v1)  # version 1: no config_version, fields added later absent
    assert all(getattr(old, k) == v for k, v in LEGACY_DEFAULTS.items())
    assert old.dp_partner is False and old.select_chance == 0.0  # how those runs behaved
    current = FaroConfig(constraints=["dp"], dp_partner=True)
    stored = current.stored_dict()
    assert stored["config_version"] == CONFIG_VERSION
    assert FaroConfig.from_dict(stored) == current
    with pytest.raises(FaroError, match="config_version"):
        migrate_config({**stored, "config_version": CONFIG_VERSION + 1})


def test_each_field_is_classified_once_for_run_ids():
    names = [f.name for f in fields(FaroConfig)]
    groups = [set(RUN_ID_FIELDS), set(LEGACY_DEFAULTS), set(UNHASHED_FIELDS)]
    assert sorted(n for g in groups for n in g) == sorted(names), \
        "a new field goes in exactly one of RUN_ID_FIELDS, LEGACY_DEFAULTS, UNHASHED_FIELDS"


# Computed on the base commit c20ae36 (before settings were defined once), not by the code under test.
DEMO_HASHED_IDS = {
    "demo-bt-s0": "bt-s0-c612115048", "demo-faro-dp-eps0.02-s0": "faro-dp-eps0.02-s0-e8930884c3",
    "demo-faro-dp-eps0.05-s0": "faro-dp-eps0.05-s0-fd5b03ad0b", "demo-faro-dp-eps0.1-s0": "faro-dp-eps0.1-s0-114ee41c95",
    "demo-faro-eo-eps0.02-s0": "faro-eo-eps0.02-s0-d6f4fe17db", "demo-faro-eo-eps0.05-s0": "faro-eo-eps0.05-s0-0f9a9ba2fe",
    "demo-faro-eo-eps0.1-s0": "faro-eo-eps0.1-s0-fe171f32f1", "demo-faro-cf-eps0.02-s0": "faro-cf-eps0.02-s0-057a29463a",
    "demo-faro-cf-eps0.05-s0": "faro-cf-eps0.05-s0-82ceba6eef", "demo-faro-cf-eps0.1-s0": "faro-cf-eps0.1-s0-a1525608f1",
}
# `faro sweep --constraints dp,eo --epsilons 0.1,0.05 --seeds 0,1 --baselines all`, computed on c20ae36.
SWEEP_IDS = [
    "faro-dp-eps0.1-s0-8ae6a3537e", "faro-dp-eps0.1-s1-87e57998c8", "faro-dp-eps0.05-s0-869363c448",
    "faro-dp-eps0.05-s1-43b5408024", "faro-eo-eps0.1-s0-6776d9f599", "faro-eo-eps0.1-s1-d1d76f74ee",
    "faro-eo-eps0.05-s0-08f11dc646", "faro-eo-eps0.05-s1-66150d08bd", "bt-s0-da99b08bac", "bt-s1-69fb922bb7",
    "reweight-s0-5a3694e213", "reweight-s1-3d40bbf58b", "posthoc-s0-c7b4d8e59e", "posthoc-s1-6f76c77d63",
    "fixed_lambda-dp-lam1-s0-686e988b12", "fixed_lambda-dp-lam5-s0-38ca692dea", "fixed_lambda-eo-lam1-s0-fad0e68b97",
    "fixed_lambda-eo-lam5-s0-78c9c176af", "fixed_lambda-dp-lam1-s1-412e43b814", "fixed_lambda-dp-lam5-s1-0bd47cfa82",
    "fixed_lambda-eo-lam1-s1-42f28ee9ff", "fixed_lambda-eo-lam5-s1-c03c5c4dee", "expgrad-dp-eps0.1-s0-f2a936523b",
    "expgrad-dp-eps0.05-s0-4d78c3869f", "expgrad-eo-eps0.1-s0-3fb01b642d", "expgrad-eo-eps0.05-s0-b8e4650a61",
    "expgrad-dp-eps0.1-s1-b7dd8aa356", "expgrad-dp-eps0.05-s1-5e1c4a8eaa", "expgrad-eo-eps0.1-s1-a5caf08d72",
    "expgrad-eo-eps0.05-s1-9284468d30", "expgrad_head-dp-eps0.1-s0-c53af16678", "expgrad_head-dp-eps0.05-s0-a1d628a4f0",
    "expgrad_head-eo-eps0.1-s0-cf5c0e65d2", "expgrad_head-eo-eps0.05-s0-c3ce980844",
    "expgrad_head-dp-eps0.1-s1-a5c6661ef5", "expgrad_head-dp-eps0.05-s1-dbaac7688a",
    "expgrad_head-eo-eps0.1-s1-e93c84f47e", "expgrad_head-eo-eps0.05-s1-eb286d0ae8",
]


def test_demo_and_sweep_run_ids_are_unchanged():
    from faro_core.studies.demo import demo_specs
    from faro_core.studies.grid import SweepSpec, grid, parse_baselines, run_id_for

    # The demo's fixed ids keep their names; its data and settings changed on purpose (issue #15: a BBQ subset,
    # the role attribute, a smaller grid), so what they hash to changed with them. The old demo configs,
    # with the group attribute, still hash to the recorded ids (the hashing is unchanged).
    specs = demo_specs()
    assert [s.run_id for s in specs] and {s.run_id for s in specs} <= set(DEMO_HASHED_IDS)
    # those runs split by item (stored configs without split_by read "item"), as the sweep ids below
    old_demo = {"data": "demo", "mode": "head", "epochs": 60, "sweep": "demo", "batch_size": 128, "min_count": 10,
                "strata": ["question_polarity"], "select": "last", "dp_partner": False, "split_by": "item"}
    old_bt = FaroConfig(**old_demo, method="bt", constraints=[], seed=0, name="bt")
    old_dp = FaroConfig(**old_demo, method="faro", constraints=["dp"], epsilon=0.05, seed=0, name="faro-dp-eps0.05",
                        attribute="group")
    assert run_id_for(FaroConfig(**{**old_bt.to_dict(), "attribute": "group"})) == DEMO_HASHED_IDS["demo-bt-s0"]
    assert run_id_for(old_dp) == DEMO_HASHED_IDS["demo-faro-dp-eps0.05-s0"]
    # the ids were recorded before role and template splits
    base = config_from_args(_parse("sweep", "--attribute", "group", "--split-by", "item"))
    # the baselines that existed when SWEEP_IDS were recorded keep their ids; later ones only add runs
    later = ("group_dro", "fair_reg", "select_only")
    spec = SweepSpec(base=base, kinds=["dp", "eo"], epsilons=[0.1, 0.05], seeds=[0, 1],
                     baselines=[b for b in parse_baselines("all") if b not in later], name="sweep")
    assert [run_id_for(c) for c in grid(spec)] == SWEEP_IDS
    full = SweepSpec(base=base, kinds=["dp", "eo"], epsilons=[0.1, 0.05], seeds=[0, 1],
                     baselines=parse_baselines("all"), name="sweep")
    ids = [run_id_for(c) for c in grid(full)]
    # group_dro and fair_reg: one run per seed; select_only: per (kind, epsilon, seed)
    assert set(SWEEP_IDS) <= set(ids) and len(ids) == len(SWEEP_IDS) + 2 * 2 + 2 * 2 * 2


def test_dashboard_grid_parser_is_the_configs():
    assert parse_values("epsilon", "0.02; 0.05, inf") == [0.02, 0.05, math.inf]
    for text in ("", "0.05, x", "-1"):
        with pytest.raises(FaroError, match="epsilon"):
            parse_values("epsilon", text)
