"""Config: YAML -> defaults, CLI wins, --help lists everything, every error is one line."""
import glob
import os
import re

import pytest
import yaml

from conftest import REPO, run_script
from src.config import BASE_KEY, EVAL, OPTIONS, SCHEMA, SCRIPTS, SUMMARY, TRAIN, load_yaml, parse_args, script_keys

CONFIGS = sorted(glob.glob(os.path.join(REPO, "src", "configs", "*.yaml")))
TINY = os.path.join(REPO, "src", "configs", "conformer_tiny.yaml")


def _write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_shipped_configs_carry_every_key_in_schema_order_and_variants_only_what_differs(path):
    with open(path) as f:
        raw = yaml.safe_load(f)
    cfg = load_yaml(path)
    assert list(cfg) == list(OPTIONS)  # with its base recipe's keys, in the base's order
    if BASE_KEY in raw:  # a variant: its base first, its arch, then only the keys whose value it changes
        assert list(raw)[0] == BASE_KEY and "arch" in raw
        base = load_yaml(os.path.join(os.path.dirname(path), raw[BASE_KEY]))
        assert [key for key in raw if key not in (BASE_KEY, "arch") and raw[key] == base[key]] == []
    else:
        assert list(raw) == list(OPTIONS)
    # the shipped configs give the official numerics, not the ModelZoo's approximations
    assert cfg["disable_approximate_gelu"] is True and cfg["use_pytorch_maxpool"] is True


@pytest.mark.parametrize("path", [p for p in CONFIGS if os.path.basename(p).startswith("conformer_")],
                         ids=os.path.basename)
def test_schema_defaults_are_the_shipped_imagenet_recipe(path):
    cfg = load_yaml(path)
    differ = {key: (opt.default, cfg[key]) for key, opt in OPTIONS.items() if key != "arch" and cfg[key] != opt.default}
    assert differ == {}
    assert OPTIONS["disable_approximate_gelu"].default is True and OPTIONS["use_pytorch_maxpool"].default is True


def test_schema_covers_the_user_interface_contract():
    contract = os.path.join(REPO, "..", "shared", "interface.md")
    if not os.path.exists(contract):
        pytest.skip("shared/interface.md is not beside this checkout")
    text = open(contract).read()
    block = text.split("```yaml", 1)[1].split("```", 1)[0]
    contract_keys = re.findall(r"^([a-z_]+):", block, flags=re.M)
    assert len(contract_keys) > 60
    assert [k for k in contract_keys if k not in OPTIONS] == []


def test_precedence_cli_over_yaml_over_schema(tmp_path):
    path = _write(tmp_path, "batch_size: 32\nbase_lr: 0.5\nbeta: [0.8, 0.9]\n")
    args = parse_args(["--config", path, "--base_lr", "0.25", "--with_ema", "true"])
    assert args.batch_size == 32  # YAML
    assert args.base_lr == 0.25  # CLI beats YAML
    assert args.with_ema is True  # CLI, parsed as a boolean
    assert args.beta == [0.8, 0.9]
    assert args.epochs == SCHEMA["Network training config"]["epochs"].default  # schema default
    assert parse_args(["--config", path, "--beta", "0.5", "0.6"]).beta == [0.5, 0.6]


def test_a_base_recipe_is_overridden_by_its_variant_and_the_cli(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "base.yaml").write_text("batch_size: 32\nbase_lr: 0.5\nepochs: 7\n")
    (tmp_path / "recipes" / "mid.yaml").write_text("base: base.yaml\nepochs: 9\nseed: 3\n")  # a base of its own
    variant = tmp_path / "variant.yaml"
    variant.write_text("base: recipes/mid.yaml\nbase_lr: 0.25\n")  # relative to the variant's folder
    args = parse_args(["--config", str(variant), "--seed", "4"])
    assert (args.batch_size, args.base_lr, args.epochs, args.seed) == (32, 0.25, 9, 4)  # base, variant, mid, CLI
    assert args.warmup_length == OPTIONS["warmup_length"].default  # set nowhere: the schema default


@pytest.mark.parametrize("files,message", [
    ({"v.yaml": "base: missing.yaml\n"}, "v.yaml: base: file not found: "),
    ({"v.yaml": "base: b.yaml\n", "b.yaml": "batch_sise: 3\n"}, "b.yaml: unknown key 'batch_sise'"),
    ({"v.yaml": "base: b.yaml\n", "b.yaml": "base: v.yaml\n"}, "b.yaml: base: v.yaml is already in the chain"),
    ({"v.yaml": "base: [b.yaml]\n"}, "v.yaml: base: expected the path of a YAML file, got ['b.yaml']"),
])
def test_base_errors_name_the_file_in_one_line(tmp_path, capsys, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--config", str(tmp_path / "v.yaml")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and "\n" not in err


def test_yaml_int_accepted_for_float_and_empty_string_for_none(tmp_path):
    args = parse_args(["--config", _write(tmp_path, "base_lr: 1\npretrained:\n")])
    assert args.base_lr == 1.0 and isinstance(args.base_lr, float) and args.pretrained == ""


@pytest.mark.e2e  # trains or compiles a full-size variant: long to compile
def test_help_lists_the_script_options_with_their_defaults():
    result = run_script("summary.py", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps long lines
    for key in script_keys(SUMMARY):
        assert f"--{key}" in text, key
    assert "(default: conformer_tiny_patch16)" in text and "Model arguments:" in text
    assert "--base_lr" not in text and "Optimizer:" not in text  # training keys are train.py's
    assert "--batch" in result.stdout  # the script's own options too


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_offers_exactly_the_keys_it_reads(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"], script=script)
    assert exit_info.value.code == 0
    offered = set(re.findall(r"^  --([a-z_]+)", capsys.readouterr().out, flags=re.M)) - {"config"}
    assert offered == {key for key, opt in OPTIONS.items() if script in opt.read_by}
    assert offered and (offered < set(OPTIONS) or script == TRAIN)


def test_a_key_another_script_reads_is_accepted_in_the_yaml_but_not_as_a_flag(tmp_path, capsys):
    path = _write(tmp_path, "base_lr: 0.5\nbatch_size: 32\n")
    args = parse_args(["--config", path], script=EVAL)
    assert args.batch_size == 32 and not hasattr(args, "base_lr")
    with pytest.raises(SystemExit):
        parse_args(["--config", path, "--base_lr", "0.25"], script=EVAL)
    assert "unrecognized arguments: --base_lr 0.25" in capsys.readouterr().err
    assert parse_args(["--config", path, "--base_lr", "0.25"], script=TRAIN).base_lr == 0.25
    with pytest.raises(ValueError, match="unknown script 'nope.py'"):
        parse_args([], script="nope.py")


def _python_sources():
    paths = glob.glob(os.path.join(REPO, "*.py")) + glob.glob(os.path.join(REPO, "tools", "*.py"))
    paths += glob.glob(os.path.join(REPO, "src", "**", "*.py"), recursive=True)
    return {os.path.relpath(p, REPO): open(p).read() for p in paths if not p.endswith(os.path.join("src", "config.py"))}


def test_every_key_is_read_somewhere_and_each_script_reads_only_its_keys():
    sources = _python_sources()
    code = "\n".join(sources.values())
    dead = [key for key in OPTIONS if not re.search(rf"\.{key}\b|[\"']{key}[\"']", code)]
    assert dead == []
    for script in SCRIPTS:  # what the entry point itself reads (the modules it calls are audited in SCHEMA)
        read = set(re.findall(r"\bcfg\.([a-z_]+)", sources[script])) & set(OPTIONS)
        assert read <= set(script_keys(script)), (script, read - set(script_keys(script)))


def test_the_dataset_key_names_a_known_layout():
    from src.data.labels import LAYOUTS
    assert set(LAYOUTS) == set(OPTIONS["dataset"].choices)


@pytest.mark.parametrize("yaml_text,cli,message", [
    ("batch_sise: 4\n", [], "unknown key 'batch_sise'"),
    ("batch_size: four\n", [], "batch_size: must be an integer, got 'four'"),
    ("with_ema: 1\n", [], "with_ema: must be a boolean, got 1"),
    ("arch: conformer_huge\n", [], "arch: 'conformer_huge' is not one of"),
    ("device_target: TPU\n", [], "device_target: 'TPU' is not one of GPU, CPU, Ascend"),
    ("amp_level: O4\n", [], "amp_level: 'O4' is not one of O0, O1, O2, O3"),
    ("file_format: PB\n", [], "file_format: 'PB' is not one of MINDIR, ONNX, AIR"),
    ("beta: [0.9]\n", [], "beta: must be a list of 2 numbers"),
    ("base_lr: -0.1\n", [], "base_lr: -0.1 must be > 0"),
    ("a: [1\n", [], "is not valid YAML"),
    ("", ["--batch_size", "0"], "--batch_size: 0 must be > 0"),
    ("", ["--batch_size", "x"], "argument --batch_size: invalid int value: 'x'"),
    ("", ["--image_size", "31"], "--image_size: 31 must be >= 32"),
    ("", ["--optimizer", "lamb"], "--optimizer: 'lamb' is not one of adamw, momentum, sgd"),
    ("", ["--no_such_option", "1"], "unrecognized arguments: --no_such_option 1"),
    ("", ["--pynative_mode", "maybe"], "expected true or false, got 'maybe'"),
])
def test_errors_exit_2_with_one_line(tmp_path, capsys, yaml_text, cli, message):
    path = _write(tmp_path, yaml_text)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--config", path, *cli])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


def test_missing_config_file_is_one_line(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--config", "/nonexistent/cfg.yaml"])
    err = capsys.readouterr().err.strip()
    assert err.endswith("config file not found: /nonexistent/cfg.yaml") and "\n" not in err


@pytest.mark.e2e  # trains or compiles a full-size variant: long to compile
def test_unavailable_device_is_one_line():
    result = run_script("summary.py", "--device_target", "GPU")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if "device_target GPU is not available" in line]


def test_docs_key_table_is_generated_from_the_schema():
    from src.config import markdown_table
    with open(os.path.join(REPO, "docs", "configuration.md")) as f:
        page = f.read()
    assert markdown_table() in page, ("the key table of docs/configuration.md is stale: regenerate it with "
                                      "python -m src.config --markdown")


def test_python_m_src_config_prints_the_resolved_configuration_as_a_config_file(tmp_path):
    demo = os.path.join(REPO, "src", "configs", "demo_cpu.yaml")
    result = run_script("-m", "src.config", "--config", demo, "--batch_size", "7", "--seed", "3")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert list(printed) == list(OPTIONS)  # every key, in schema order, the base's keys resolved
    expected = vars(parse_args(["--config", demo, "--batch_size", "7", "--seed", "3"]))
    assert printed == {key: expected[key] for key in OPTIONS}
    assert (printed["batch_size"], printed["seed"], printed["image_size"]) == (7, 3, 32)
    again = tmp_path / "printed.yaml"
    again.write_text(result.stdout)
    assert load_yaml(str(again)) == printed  # a file --config takes, giving the same run
