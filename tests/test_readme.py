"""The documentation is not stale. In README.md and every docs/*.md: every command in a ```bash
fence (bash fences are runnable, other examples use ```text or ```console) and every inline command
in backticks that starts with `python`, `.venv/bin/python`, `bash scripts/` or `make` names a
Makefile target, a script that exists and options that script accepts, and config files that
exist; every repository path named in backticks or links exists; every relative link (and its
#anchor) resolves.

Python scripts' options come from their own `--help` (run once per script with this interpreter);
scripts/*.sh options from their `parse_options` spec (scripts/_common.sh), and what follows `--extra`
from the Python script the shell script runs."""
import ast
import functools
import glob
import importlib.util
import itertools
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

README = os.path.join(REPO, "README.md")
DOCS = [README] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
CONFIGURATION = os.path.join(REPO, "docs", "configuration.md")
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<"}
# programs a README command may run that are not this repository's (nothing of ours to check)
EXTERNAL = {"git", "pip", "apt-get", "head", "tensorboard"}
# an inline `span` that is a command: what it starts with
INLINE_COMMAND = re.compile(r"^((python[\d.]*|\.venv/bin/python|make) \S|bash scripts/\S)")
# folders of the repository whose paths a document may name
REPO_DIRS = ("src", "tools", "scripts", "tests", "docs", ".ci")


def runnable_blocks(markdown: str) -> list:
    """(first line number, text) of every ```bash / ```sh / ```shell fence."""
    blocks, language = [], None
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = re.match(r"^\s*```\s*(\S*)", line)
        if fence and language is None:
            language, start, lines = fence.group(1), number + 1, []
        elif fence:
            if language in ("bash", "sh", "shell"):
                blocks.append((start, "\n".join(lines)))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def _simple_command(tokens: list) -> list:
    """Without leading VAR=value assignments and without redirections."""
    while tokens and re.match(r"^[A-Za-z_]\w*=", tokens[0]):
        tokens = tokens[1:]
    kept, skip = [], False
    for token in tokens:
        if token in REDIRECTS:
            skip = True
        elif skip:
            skip = False
        else:
            kept.append(token)
    return kept


def commands(block: str) -> list:
    """Token lists of the block's commands: `\\` continuations joined, comments dropped, split at
    && || ; | &, leading VAR=value assignments and redirections removed."""
    found = []
    for line in re.sub(r"\\\n", " ", block).splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        command = []
        for token in list(lexer) + [";"]:
            if token in SEPARATORS:
                command = _simple_command(command)
                if command:
                    found.append(command)
                command = []
            else:
                command.append(token)
    return found


def _option_names(tokens) -> list:
    """`--opt` / `-o` tokens (a `--opt=value` counts as `--opt`); negative numbers are values."""
    return [t.split("=", 1)[0] for t in tokens if t.startswith("-") and not re.match(r"^-\d", t) and t != "-"]


def makefile_targets() -> set:
    with open(os.path.join(REPO, "Makefile")) as f:
        return {name for line in f for m in [re.match(r"^([^\s#:=][^:=]*):(?!=)", line)] if m
                for name in m.group(1).split()}


@functools.lru_cache(maxsize=None)
def script_help(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, script), "--help"], cwd=REPO,
                          env=dict(os.environ, GLOG_v="3"), capture_output=True, text=True, timeout=300)


@functools.lru_cache(maxsize=None)
def python_options(script: str) -> frozenset:
    """Option strings of `script`'s parser, from its --help. A script meant for another environment
    (its --help fails on a module this venv lacks, e.g. torch for the fixture generator) is read
    statically: the literal option strings of its add_argument calls."""
    path = os.path.join(REPO, script)
    result = script_help(script)
    if result.returncode == 0:
        return frozenset(option for line in result.stdout.splitlines()
                         for m in [re.match(r"^  (-\S.*?)(?:\s{2,}|$)", line)] if m
                         for option in re.findall(r"(?:^|, )(-[\w-]+)", m.group(1)))
    if "ModuleNotFoundError" not in result.stderr:
        raise AssertionError(f"{script} --help failed: {result.stderr.strip().splitlines()[-1:]}")
    with open(path) as f:
        tree = ast.parse(f.read())
    return frozenset(arg.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                     and getattr(node.func, "attr", None) == "add_argument"
                     for arg in node.args if isinstance(arg, ast.Constant) and str(arg.value).startswith("-"))


def shell_script_interface(script: str) -> tuple:
    """(options accepted, whether it takes a positional first argument, the Python script it runs)."""
    with open(os.path.join(REPO, script)) as f:
        source = f.read()
    spec = re.search(r'parse_options "\$USAGE" "([^"]*)"', source)
    options = {s.split("=", 1)[0] for s in spec.group(1).split()} if spec else set()
    runs = re.search(r'"\$REPO_DIR/([\w/]+\.py)"', source)
    return options | {"--extra", "-h", "--help"}, "take_data" in source, runs.group(1) if runs else None


def check_python(args: list) -> list:
    """Problems with `python [-m MODULE | SCRIPT] ARGS`."""
    if args[:1] == ["-m"]:
        module = args[1]
        return [] if importlib.util.find_spec(module) else [f"no module {module}"]
    script, rest = args[0], args[1:]
    if not os.path.isfile(os.path.join(REPO, script)):
        return [f"no script {script}"]
    return check_options(script, rest, python_options(script))


def check_options(script: str, args: list, accepted) -> list:
    return [f"{script} does not accept {option}" for option in _option_names(args) if option not in accepted]


def check_shell(args: list) -> list:
    script, rest = args[0], args[1:]
    if not os.path.isfile(os.path.join(REPO, script)):
        return [f"no script {script}"]
    accepted, positional, runs = shell_script_interface(script)
    problems = []
    if positional and (not rest or rest[0].startswith("-")):
        problems.append(f"{script} needs its positional argument first")
    extra = rest.index("--extra") if "--extra" in rest else len(rest)
    problems += check_options(script, rest[:extra], accepted)
    if runs and extra < len(rest):
        problems += check_options(runs, rest[extra + 1:], python_options(runs))
    return problems


def check_command(tokens: list) -> list:
    """Problems with one command (empty when it is current)."""
    program = os.path.basename(tokens[0])
    problems = [f"no config file {t}" for t in tokens if re.match(r"^src/configs/.*\.ya?ml$", t)
                and not os.path.isfile(os.path.join(REPO, t))]
    if program == "make":
        targets = [t for t in tokens[1:] if not t.startswith("-") and "=" not in t]
        problems += [f"no Makefile target {t}" for t in targets if t not in makefile_targets()]
    elif re.match(r"^python(\d+(\.\d+)?)?$", program):
        problems += check_python(tokens[1:])
    elif program == "bash":
        problems += check_shell(tokens[1:])
    elif program not in EXTERNAL:
        problems.append(f"unknown program {tokens[0]} (a non-runnable example goes in a ```text fence)")
    return problems


def _outside_fences(markdown: str) -> str:
    """`markdown` with every fenced block's lines blanked (line numbers kept)."""
    kept, fenced = [], False
    for line in markdown.splitlines():
        if re.match(r"^\s*```", line):
            fenced = not fenced
            kept.append("")
        else:
            kept.append("" if fenced else line)
    return "\n".join(kept)


def inline_spans(markdown: str) -> list:
    """(line number, text) of every `code span` outside fences; a span may wrap within a paragraph
    (its line breaks read as spaces)."""
    text = _outside_fences(markdown)
    spans = []
    for m in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", text, re.DOTALL):
        if "\n\n" not in m.group(2):
            spans.append((text.count("\n", 0, m.start()) + 1, " ".join(m.group(2).split())))
    return spans


def inline_commands(markdown: str) -> list:
    """(line, tokens) of each command of the inline spans that are commands."""
    return [(line, command) for line, span in inline_spans(markdown) if INLINE_COMMAND.match(span)
            for command in commands(span)]


def documented_commands(path: str) -> list:
    """(line, tokens) of every command of a markdown file: its bash fences and its inline commands."""
    with open(path) as f:
        markdown = f.read()
    return sorted([(line, command) for line, block in runnable_blocks(markdown) for command in commands(block)]
                  + inline_commands(markdown))


REPO_PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./*-]*|[\w-]+\.py\b|requirements[\w-]*\.txt\b|Makefile\b|README\.md\b)"
                       % "|".join(re.escape(d) for d in REPO_DIRS))


def named_paths(markdown: str) -> list:
    """(line, path) of every repository path named in an inline span: under one of REPO_DIRS, or a
    top-level file (a bare `name.py`, requirements*.txt, Makefile, README.md)."""
    return [(line, m.group(1).rstrip(".")) for line, span in inline_spans(markdown) for m in REPO_PATH.finditer(span)]


def path_problems(paths: list) -> list:
    problems = []
    for line, path in paths:
        found = glob.glob(os.path.join(REPO, path)) if "*" in path else os.path.exists(os.path.join(REPO, path))
        if not found:
            problems.append(f"line {line}: no such path in the repository: {path}")
    return problems


def heading_anchors(markdown: str) -> set:
    """GitHub's anchors of the headings outside fences."""
    anchors = set()
    for line in _outside_fences(markdown).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            anchors.add(re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-"))
    return anchors


def link_problems(markdown: str, folder: str) -> list:
    """Problems with the relative links `[text](target)` of a markdown file in `folder`: the target
    must exist and, when it names a #anchor of a markdown file, that heading too."""
    problems = []
    text = _outside_fences(markdown)
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        target = m.group(1)
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        line = text.count("\n", 0, m.start()) + 1
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(folder, path)) if path else None
        if full and not os.path.exists(full):
            problems.append(f"line {line}: link to a missing file: {target}")
            continue
        if anchor and (full is None or full.endswith(".md")):
            if full is None:
                headings = heading_anchors(markdown)
            else:
                with open(full) as f:
                    headings = heading_anchors(f.read())
            if anchor not in headings:
                problems.append(f"line {line}: link to a missing heading: {target}")
    return problems


def _name(path: str) -> str:
    return os.path.relpath(path, REPO)


@pytest.mark.parametrize("path", DOCS, ids=_name)
def test_every_documented_command_names_existing_scripts_targets_and_options(path):
    found = documented_commands(path)
    stale = [f"{_name(path)} line {line}: `{shlex.join(command)}`: {problem}"
             for line, command in found for problem in check_command(command)]
    assert not stale, "\n".join(stale)


def test_the_documents_run_the_three_kinds_of_command():
    programs = {os.path.basename(command[0]) for path in DOCS for _, command in documented_commands(path)}
    assert {"make", "python", "bash"} <= {re.sub(r"[\d.]+$", "", p) for p in programs}, programs


@pytest.mark.parametrize("path", DOCS, ids=_name)
def test_every_named_path_and_link_exists(path):
    with open(path) as f:
        markdown = f.read()
    problems = path_problems(named_paths(markdown)) + link_problems(markdown, os.path.dirname(path))
    assert not problems, "\n".join(f"{_name(path)} {p}" for p in problems)


def test_every_docs_page_is_linked_from_the_readme():
    with open(README) as f:
        readme = f.read()
    unlinked = [_name(page) for page in DOCS[1:] if f"]({_name(page)})" not in readme]
    assert unlinked == []


def test_the_checkers_catch_stale_inline_commands_paths_and_links(tmp_path):
    markdown = ("Run `python train.py --batch_sise 8`, then `make demo` and `bash scripts/run_eval_gpu.sh CFG`;\n"
                "the `make` word alone and `python` in prose are spans too. The code is in `src/conformer.py`\n"
                "and `src/no_such_module.py`, the tools in `tools/bench.py --parts data` and `tools/gone.py`,\n"
                "launchers `scripts/*.sh`, `scripts/*.nope`, `eval.py` and `evaluate_all.py`.\n"
                "A wrapped span: `python no_such_script.py\n--x 1`.\n\n"
                "```bash\nmake test\n```\n"
                "```text\n`tools/in_a_text_fence.py`\n```\n"
                "# A heading\n"
                "[ok](#a-heading) [bad anchor](#no-heading) [page](docs/x.md) [missing](docs/y.md)\n"
                "[page anchor](docs/x.md#usage) [bad page anchor](docs/x.md#nope) [web](https://example.com/z)\n")
    assert [command for _, command in inline_commands(markdown)] == [
        ["python", "train.py", "--batch_sise", "8"], ["make", "demo"], ["bash", "scripts/run_eval_gpu.sh", "CFG"],
        ["python", "no_such_script.py", "--x", "1"]]
    problems = [p for _, command in inline_commands(markdown) for p in check_command(command)]
    assert problems == ["train.py does not accept --batch_sise", "no script no_such_script.py"]
    assert path_problems(named_paths(markdown)) == [
        "line 3: no such path in the repository: src/no_such_module.py",
        "line 3: no such path in the repository: tools/gone.py",
        "line 4: no such path in the repository: scripts/*.nope",
        "line 4: no such path in the repository: evaluate_all.py",
        "line 5: no such path in the repository: no_such_script.py"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text("# X\n## Usage\n```bash\n# not a heading\n```\n")
    assert [p.rsplit(": ", 1)[1] for p in link_problems(markdown, str(tmp_path))] == [
        "#no-heading", "docs/y.md", "docs/x.md#nope"]
    assert heading_anchors("## Backbone features (`features_only`)\n## Faults: damaged files, full disks\n") == {
        "backbone-features-features_only", "faults-damaged-files-full-disks"}


def test_command_extraction_handles_continuations_chains_comments_and_env():
    block = ("# a comment line\n"
             "GLOG_v=3 .venv/bin/python train.py --config src/configs/conformer_tiny.yaml \\\n"
             "    --batch_size 8 > log.txt && make test   # trailing comment\n"
             "bash scripts/run_eval_gpu.sh $CONFIG --checkpoint \"$CKPT\"; echo done\n")
    assert commands(block) == [
        [".venv/bin/python", "train.py", "--config", "src/configs/conformer_tiny.yaml", "--batch_size", "8"],
        ["make", "test"],
        ["bash", "scripts/run_eval_gpu.sh", "$CONFIG", "--checkpoint", "$CKPT"],
        ["echo", "done"]]
    markdown = "```bash\nmake demo\n```\n```text\nmake nothing\n```\n```\nplain\n```\n"
    assert runnable_blocks(markdown) == [(2, "make demo")]


@pytest.mark.parametrize("line, problem", [
    ("make demo", None),
    ("make no_such_target", "no Makefile target no_such_target"),
    (".venv/bin/python train.py --config src/configs/conformer_tiny.yaml --batch_size 8", None),
    (".venv/bin/python train.py --batch_sise 8", "train.py does not accept --batch_sise"),
    ("python train.py --config src/configs/no_such.yaml", "no config file src/configs/no_such.yaml"),
    ("python no_such_script.py --x 1", "no script no_such_script.py"),
    ("python eval_onnx.py DATA --onnx_path m.onnx -m CPU", None),
    ("python -m no_such_module", "no module no_such_module"),
    ("bash scripts/run_eval_gpu.sh CFG --device 0 --extra --device_target CPU", None),
    ("bash scripts/run_eval_gpu.sh CFG --devices 0", "scripts/run_eval_gpu.sh does not accept --devices"),
    ("bash scripts/run_eval_gpu.sh CFG --extra --device_targte CPU", "eval.py does not accept --device_targte"),
    ("bash scripts/run_infer_gpu.sh --checkpoint C", "scripts/run_infer_gpu.sh needs its positional argument first"),
    ("bash scripts/run_eval_gpu.sh --checkpoint C --extra --device_target CPU", None),  # CONFIG optional
    ("bash scripts/no_such.sh X", "no script scripts/no_such.sh"),
    ("rm -rf build", "unknown program rm"),
])
def test_the_checker_catches_stale_commands(line, problem):
    (command,) = commands(line)
    problems = check_command(command)
    if problem is None:
        assert problems == []
    else:
        assert problem in problems[0], problems


def option_help(help_text: str, option: str) -> str:
    """The description argparse prints for `option` (one of the names of an entry), whitespace joined."""
    entries = re.split(r"\n(?=  -)", help_text)
    for entry in entries:
        names = re.findall(r"(?:^  |, )(-[\w-]+)", entry.split("\n")[0])
        if option in names:
            first, *rest = entry.split("\n")
            described = re.split(r"\s{2,}", first.strip(), maxsplit=1)[1:]  # on the option's line
            described += itertools.takewhile(lambda line: line.startswith("    "), rest)  # continuation lines
            return " ".join(" ".join(described).split())
    return ""


def vocabulary_rows() -> list:
    """(option, meaning, [script, ...]) of the Vocabulary table of docs/configuration.md."""
    with open(CONFIGURATION) as f:
        section = re.split(r"\n#+ Vocabulary\n", f.read(), maxsplit=1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`--"):
            rows.append((cells[0].strip("`").split()[0], cells[1], [s.strip() for s in cells[2].split(",")]))
    return rows


def test_every_vocabulary_word_means_the_same_in_every_script_that_takes_it():
    from src.config import VOCABULARY
    rows = vocabulary_rows()
    assert [option for option, _, _ in rows] == list(VOCABULARY)
    wrong = []
    for option, meaning, scripts in rows:
        assert meaning.startswith(VOCABULARY[option]), (option, meaning)
        for script in scripts:
            result = script_help(script)
            assert result.returncode == 0, (script, result.stderr[-500:])
            if not option_help(result.stdout, option).startswith(VOCABULARY[option]):
                wrong.append(f"{script} {option}: {option_help(result.stdout, option)!r}")
    assert wrong == []
    # the names users already type keep working (shared/interface.md, and the old names)
    for script, option in (("eval.py", "--pretrained"), ("export.py", "--pretrained"), ("convert.py", "--out"),
                           ("convert.py", "--src"), ("train.py", "--resume"), ("infer.py", "--batch"),
                           ("summary.py", "--batch"), ("tools/memory.py", "--batch"), ("eval_onnx.py", "-m")):
        assert option in python_options(script), (script, option)
    assert "--batch" not in python_options("train.py")  # an alias only where the old name existed


def test_option_help_reads_argparse_entries():
    text = ("options:\n  -h, --help            show this help\n  --src SRC, --checkpoint SRC\n"
            "                        the checkpoint this run\n                        starts from\n"
            "  --output OUTPUT       the file this run writes\n\nModel arguments:\n  --arch ARCH  variant\n")
    assert option_help(text, "--checkpoint") == "the checkpoint this run starts from"
    assert option_help(text, "--src") == "the checkpoint this run starts from"
    assert option_help(text, "--output") == "the file this run writes"
    assert option_help(text, "--arch") == "variant"
    assert option_help(text, "--nope") == ""
