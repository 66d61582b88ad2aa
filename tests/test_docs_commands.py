"""The docs stay true: every command they show composes or parses, every link resolves.

Commands are taken from README.md, docs/*.md and experiments/README.md: every line of a shell code block
and every inline code span that runs ``python <script>.py``. For each:
- ``train.py`` / ``synth.py``: the overrides compose with Hydra (one compose per value of each sweep
  under ``-m``) and the config resolves, so a misspelt group option (``model=pdmm``), an unknown key or
  a broken interpolation fails here;
- ``embed.py``, ``experiments/tables.py``, ``experiments/privacy_plot.py``: the arguments parse with
  the script's own parser (and ``tables.py`` metric names and ``--published`` files are checked);
- any other script (``benchmarks/*.py``, ``bash *.sh``): the file exists and takes the flags shown.

Placeholders in a command (``<run>``, ``...``, shell variables such as ``${run}``) are substituted: in a
group option (``experiment=privacy_market1501_<row>``) by every option they match, elsewhere by a
dummy value; what was substituted is printed (``pytest -s``). A few commands on the embedded data also
run for real with ``debug=fdr`` (slow test).
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import importlib.util
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "experiments" / "README.md"]
README_MAX_LINES = 200
HYDRA_SCRIPTS = {"train.py": "train", "synth.py": "synth"}
ARGPARSE_SCRIPTS = ("embed.py", "experiments/tables.py", "experiments/privacy_plot.py", "experiments/bundle.py")
# Flags a Hydra entry point takes besides overrides; -m makes the comma lists sweeps.
HYDRA_FLAGS = {"-m", "--multirun", "--help", "-h", "--hydra-help", "--info"}
SHELL_SEPARATORS = {"&&", "||", ";", "|", "&", "do", "then", "done", "fi"}
REDIRECTION = re.compile(r"^(\d?>>?|&>|<)(&\d)?\S*$")  # > out.txt, 2>&1, >>log: ends the arguments
PLACEHOLDER = re.compile(r"<[^<>\n`]+>|\$\([^)\n]*\)|\$\{[^}\n]*\}|\$[A-Za-z_]\w*|(?<![\w/.])\.\.\.(?![\w/])")
DUMMY = "1"  # what a placeholder outside a group option becomes (a path, a number or a name)


# ----------------------------------------------------------------------------- extraction
@dataclass
class DocCommand:
    doc: str  # "docs/privacy.md:42"
    text: str  # the command as the doc shows it (whitespace collapsed)
    script: str  # "train.py", "experiments/tables.py", "bash:experiments/dppp_sandbox.sh"
    args: list[str]  # its arguments, placeholders replaced by markers
    placeholders: dict[str, str] = field(default_factory=dict)  # marker -> original text

    def __str__(self) -> str:
        return f"{self.doc}: {self.text}"


def _shell_lines(block: str) -> list[str]:
    """Lines of a shell code block, ``\\``-continuations joined as the shell joins them."""
    return block.replace("\\\n", "").splitlines()


def _code_of(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]], str]:
    """(shell code lines, inline code spans, prose without code), each with its 1-based line number."""
    lines, spans, prose = [], [], []
    fence = re.compile(r"^\s*```(\w*)\s*$")
    block, lang, start = None, "", 0
    for n, line in enumerate(text.splitlines(), 1):
        m = fence.match(line)
        if block is None and m:
            block, lang, start = [], m.group(1), n
            prose.append("")
        elif block is not None and m:
            if lang in ("", "bash", "sh", "shell", "console"):
                body = "\n".join(block)
                for offset, code_line in enumerate(_shell_lines(body)):
                    lines.append((start + 1 + offset, code_line))
            block = None
            prose.append("")
        elif block is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    prose_text = "\n".join(prose)
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose_text):
        spans.append((prose_text.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split())))
    return lines, spans, re.sub(r"(?<!`)`[^`]+`(?!`)", "", prose_text)


def _commands_in(line: str, where: str) -> Iterator[DocCommand]:
    placeholders: dict[str, str] = {}

    def mark(m: re.Match) -> str:
        key = f"PLACEHOLDER{len(placeholders)}X"
        placeholders[key] = m.group(0)
        return key

    # placeholders outside single quotes ('${...}' in single quotes is a Hydra interpolation, kept)
    marked = "".join(
        part if part.startswith("'") else PLACEHOLDER.sub(mark, part) for part in re.split(r"('[^']*')", line)
    )
    try:
        tokens = shlex.split(marked, comments=True)
    except ValueError as err:  # unbalanced quotes: a shell would refuse the line too
        assert not re.search(r"\b(python3?\s+\S+\.py|bash\s+\S+\.sh)\b", line), f"{where}: {line}\n  {err}"
        return
    segment: list[str] = []
    redirected = False
    for tok in tokens + [";"]:
        if tok not in SHELL_SEPARATORS:
            redirected = redirected or bool(REDIRECTION.match(tok))
            if not redirected:
                segment.append(tok)
            continue
        redirected = False
        while segment and re.fullmatch(r"[A-Za-z_]\w*=\S*", segment[0]):  # VAR=value prefixes
            segment = segment[1:]
        if len(segment) >= 2 and segment[0] in ("python", "python3") and segment[1].endswith(".py"):
            script, args = segment[1], segment[2:]
        elif len(segment) >= 2 and segment[0] == "bash" and segment[1].endswith(".sh"):
            script, args = "bash:" + segment[1], segment[2:]
        else:
            script = None
        if script is not None:
            used = {k: v for k, v in placeholders.items() if any(k in a for a in args + [script])}
            yield DocCommand(where, " ".join(line.split()), script, list(args), used)
        segment = []


def doc_commands(paths: Sequence[Path] = DOCS) -> list[DocCommand]:
    found = []
    for path in paths:
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        lines, spans, _ = _code_of(path.read_text())
        for n, text in lines + spans:
            found.extend(_commands_in(text, f"{rel}:{n}"))
    return found


# ----------------------------------------------------------------------------- Hydra commands
def _group_options(group: str) -> list[str] | None:
    """Selectable options of ``group`` in conf/ (None when ``group`` is not a config group)."""
    folder = ROOT / "conf" / group.replace(".", "/")
    if not folder.is_dir():
        return None
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


def _expand(cmd: DocCommand, notes: list[str]) -> list[list[str]]:
    """The override lists one doc command stands for: placeholders filled, sweeps (-m) unrolled."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    multirun = any(a in ("-m", "--multirun") for a in cmd.args)
    unknown = [a for a in cmd.args if a.startswith("-") and a not in HYDRA_FLAGS]
    assert not unknown, f"{cmd}\n  unknown flag(s) {unknown} for {cmd.script}"
    choices: list[list[str]] = []
    for arg in (a for a in cmd.args if not a.startswith("-")):
        assert "=" in arg, f"{cmd}\n  '{arg}' is not a key=value override"
        key, value = arg.split("=", 1)
        marks = [k for k in cmd.placeholders if k in arg]
        if not marks:
            choices.append([arg])
            continue
        assert not any(k in key for k in marks), f"{cmd}\n  a placeholder in a key: {arg}"
        options = _group_options(key.lstrip("+~"))
        if options is not None:
            pattern = value
            for k in marks:
                pattern = pattern.replace(k, "*")
            matches = fnmatch.filter(options, pattern)
            assert matches, f"{cmd}\n  no option of group '{key}' matches '{pattern}' (options: {options})"
            notes.append(f"{cmd}\n    {arg_text(arg, cmd)} -> each of {matches}")
            choices.append([f"{key}={m}" for m in matches])
        else:
            filled = value
            for k in marks:
                filled = filled.replace(k, DUMMY)
            notes.append(f"{cmd}\n    {arg_text(arg, cmd)} -> {key}={filled}")
            choices.append([f"{key}={filled}"])
    if multirun:  # -m: a comma list is a sweep; unroll it like a group placeholder
        parser = OverridesParser.create()
        unrolled = []
        for c in choices:
            values: list[str] = []
            for text in c:
                ov = parser.parse_override(text)
                values += (
                    [f"{ov.get_key_element()}={v}" for v in ov.sweep_string_iterator()]
                    if ov.is_sweep_override()
                    else [text]
                )
            unrolled.append(values)
        choices = unrolled
    # every alternative of every override once, the others at their first alternative
    runs = [[c[0] for c in choices]]
    for i, values in enumerate(choices):
        for v in values[1:]:
            runs.append([v if j == i else c[0] for j, c in enumerate(choices)])
    return runs


def arg_text(arg: str, cmd: DocCommand) -> str:
    for k, v in cmd.placeholders.items():
        arg = arg.replace(k, v)
    return arg


def _is_group_override(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return "/" in key or _group_options(key) is not None


_COMPOSED: dict[tuple[str, tuple[str, ...]], object] = {}


def compose_and_resolve(config_name: str, overrides: Sequence[str]) -> None:
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` as the entry point would, and resolve it.

    Composition (the slow part) runs once per distinct set of group options; key overrides are then
    applied to a copy by Hydra's own override code, with the same rules (unknown key, ``+`` on an
    existing key, a sweep without ``-m``: all refused).
    """
    import copy

    from hydra import compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    groups = tuple(o for o in overrides if _is_group_override(o))
    keys = [o for o in overrides if not _is_group_override(o)]
    if (config_name, groups) not in _COMPOSED:
        if not GlobalHydra.instance().is_initialized():  # one initialization, shared by every command
            initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3")
        _COMPOSED[config_name, groups] = compose(
            config_name=config_name, overrides=list(groups), return_hydra_config=True
        )
    cfg = copy.deepcopy(_COMPOSED[config_name, groups])
    parsed = OverridesParser.create().parse_overrides(keys)
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeps:
        raise ValueError(f"Ambiguous value for argument(s) {sweeps}: a sweep needs -m")
    ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = "output_dir"  # the two keys that only exist inside a running Hydra app
        cfg.paths.work_dir = "work_dir"
    OmegaConf.to_container(cfg, resolve=True)


def check_hydra_command(cmd: DocCommand, notes: list[str]) -> int:
    config_name = HYDRA_SCRIPTS[cmd.script]
    runs = _expand(cmd, notes)
    for overrides in runs:
        try:
            compose_and_resolve(config_name, overrides)
        except Exception as err:  # noqa: BLE001 - the message is the finding
            raise AssertionError(
                f"{cmd}\n  python {cmd.script} {' '.join(overrides)}\n  {type(err).__name__}: {err}"
            ) from None
    return len(runs)


# ----------------------------------------------------------------------------- argparse commands
class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        self.namespace = namespace


@functools.cache
def _load_script(rel: str):
    """A script as a module, loaded once (its ``__main__`` block does not run)."""
    spec = importlib.util.spec_from_file_location("doc_script_" + rel.replace("/", "_")[:-3], ROOT / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_script_args(rel: str, args: Sequence[str]) -> argparse.Namespace:
    """Parse ``args`` with the script's own argparse parser (its ``main`` stops right after parsing)."""
    module = _load_script(rel)
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, argv=None, namespace=None):
        raise _Parsed(original(self, argv, namespace))

    argparse.ArgumentParser.parse_args = parse_and_stop
    try:
        module.main(list(args))
    except _Parsed as parsed:
        return parsed.namespace
    except SystemExit as err:
        raise AssertionError(
            f"python {rel} {' '.join(args)}: the script's parser refused it (exit {err.code})"
        ) from None
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"python {rel}: main() never parsed its arguments")


def check_argparse_command(cmd: DocCommand, notes: list[str]) -> None:
    args = []
    for a in cmd.args:
        filled = a
        for k in cmd.placeholders:
            filled = filled.replace(k, DUMMY)
        if filled != a:
            notes.append(f"{cmd}\n    {arg_text(a, cmd)} -> {filled}")
        args.append(filled)
    try:
        ns = parse_script_args(cmd.script, args)
    except AssertionError as err:
        raise AssertionError(f"{cmd}\n  {err}") from None
    if cmd.script == "experiments/tables.py":
        from ppreid.reports import tables  # the command line's library (experiments/tables.py calls its main)

        try:
            tables.check_metrics(ns.metrics or [])
            if ns.published:
                tables.load_published(ROOT / ns.published)
        except tables.TableInputError as err:
            raise AssertionError(f"{cmd}\n  {err}") from None


def check_other_script(cmd: DocCommand) -> None:
    rel = cmd.script.removeprefix("bash:")
    path = ROOT / rel
    assert path.is_file(), f"{cmd}\n  {rel} does not exist"
    source = path.read_text()
    for flag in (a.split("=", 1)[0] for a in cmd.args if a.startswith("--")):
        assert f'"{flag}"' in source, f"{cmd}\n  {rel} takes no {flag}"


# ----------------------------------------------------------------------------- tests
def test_docs_show_commands_of_every_kind():
    scripts = {c.script for c in doc_commands()}
    assert {"train.py", "synth.py", "embed.py", "experiments/tables.py"} <= scripts, scripts


def test_every_docs_command_composes_or_parses():
    notes: list[str] = []
    composed = parsed = other = 0
    for cmd in doc_commands():
        if cmd.script in HYDRA_SCRIPTS:
            composed += check_hydra_command(cmd, notes)
        elif cmd.script in ARGPARSE_SCRIPTS:
            check_argparse_command(cmd, notes)
            parsed += 1
        else:
            check_other_script(cmd)
            other += 1
    print(
        f"\ndocs commands: {composed} Hydra compositions, {parsed} parsed, {other} other scripts checked; "
        f"placeholders substituted ({len(notes)}):"
    )  # shown with pytest -s
    for note in notes:
        print("  " + note)


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("python train.py model=pdmm", "Could not find 'model/pdmm'"),
        ("python train.py model=pdm model.stage1.epoch=3", "model.stage1.epoch"),
        ("python train.py seed=1,2,3", "seed=1,2,3"),  # a sweep without -m
        ("python train.py 'data.root=${paths.nope}/x'", "paths.nope"),  # an interpolation that does not resolve
        ("python train.py -m experiment=pdm_without_<term> model.nope=1", "model.nope"),
        ("python train.py experiment=nothing_<row>", "no option of group 'experiment'"),
        ("python synth.py generator=difusion", "generator/difusion"),
        ("python experiments/tables.py logs --metrics R1 mAPP", "mAPP"),
        ("python embed.py ckpt folder --outt x.npz", "refused"),
        ("python benchmarks/bench_rerank.py --quik", "takes no --quik"),
    ],
)
def test_a_wrong_command_in_a_doc_fails(tmp_path, bad, reason):
    doc = tmp_path / "doc.md"
    doc.write_text(f"Text with `{bad}` inline.\n```bash\n{bad}   # a comment\n```\n")
    cmds = doc_commands([doc])
    assert len(cmds) == 2
    for cmd in cmds:
        with pytest.raises(AssertionError, match=re.escape(reason)):
            if cmd.script in HYDRA_SCRIPTS:
                check_hydra_command(cmd, [])
            elif cmd.script in ARGPARSE_SCRIPTS:
                check_argparse_command(cmd, [])
            else:
                check_other_script(cmd)


def test_extraction_joins_continuations_and_fills_placeholders(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```bash\npython train.py -m experiment=pdm_without_identity,\\\npdm_without_style \\\n"
        "  seed=1,2 hydra.sweep.dir=logs/x\nfor run in a/*/; do\n"
        "  python train.py model=attack model.extractor_ckpt=${run}last.ckpt\ndone\n```\n"
        "See `python train.py train=false model=<m>` and `CUDA_VISIBLE_DEVICES=0 python synth.py "
        "shard=0 num_shards=2`.\n"
    )
    cmds = doc_commands([doc])
    assert [c.script for c in cmds] == ["train.py", "train.py", "train.py", "synth.py"]
    redirected = doc_commands(
        [_write(tmp_path / "r.md", "```bash\npython train.py seed=1 2>&1 | tee log.txt &\n```\n")]
    )
    assert [(c.script, c.args) for c in redirected] == [("train.py", ["seed=1"])]
    notes: list[str] = []
    assert _expand(cmds[0], notes) == [
        ["experiment=pdm_without_identity", "seed=1", "hydra.sweep.dir=logs/x"],
        ["experiment=pdm_without_style", "seed=1", "hydra.sweep.dir=logs/x"],
        ["experiment=pdm_without_identity", "seed=2", "hydra.sweep.dir=logs/x"],
    ]
    assert _expand(cmds[1], notes) == [["model=attack", f"model.extractor_ckpt={DUMMY}last.ckpt"]]
    assert _expand(cmds[2], notes) == [["train=false", f"model={m}"] for m in _group_options("model")]
    assert _expand(cmds[3], notes) == [["shard=0", "num_shards=2"]]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set:
    seen: dict[str, int] = {}
    anchors = set()
    for line in _strip_fences(path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _strip_fences(text: str) -> str:
    out, inside = [], False
    for line in text.splitlines():
        if re.match(r"^\s*```", line):
            inside = not inside
            continue
        if not inside:
            out.append(line)
    return "\n".join(out)


def broken_links(paths: Sequence[Path] = DOCS) -> list[str]:
    broken = []
    for path in paths:
        _, _, prose = _code_of(path.read_text())
        for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose):
            target = m.group(1)
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.name}: ({target})"
            if not dest.exists():
                broken.append(f"{where}: {dest} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return broken


def test_every_relative_link_in_the_docs_resolves():
    assert not broken_links(), "\n".join(broken_links())


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n## Outputs of a run\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](other.md#outputs-of-a-run) [gone](missing.md) [bad anchor](other.md#outputs)\n"
        "`[not a link](in/code.md)`\n"
    )
    found = broken_links([doc])
    assert len(found) == 2 and "missing.md" in found[0] and "#outputs" in found[1], found


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines: move sections into docs/"
    for command in ("pip install -r requirements.txt", "python train.py", "pytest"):
        assert any(line.startswith(command) for line in lines[:40]), command


# ----------------------------------------------------------------------------- commands that run
# The main jobs on the embedded data, run as the docs write them plus debug=fdr (one batch of each
# stage), on a small GenePerson-mini written once for all of them.
FDR_COMMANDS = [
    "python train.py",
    "python train.py model=pdm",
    "python train.py model=clipreid",
    "python train.py model=privacy_gan",
]
SMALL_MINI = [
    "data.prepare.num_identities=20",
    "data.prepare.images_per_identity=4",
    "data.prepare.target_identities=4",
    "data.prepare.gallery_per_identity=2",
    "data.prepare.height=32",
    "data.prepare.width=16",
    "data.prepare.progress=false",
]


@pytest.fixture(scope="module")
def small_mini_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs_data")


@pytest.mark.slow
@pytest.mark.parametrize("command", FDR_COMMANDS)
def test_main_job_commands_run_with_fdr(command, small_mini_dir, tmp_path):
    from conftest import run_train

    shown = {c.text.split(" #")[0].strip() for c in doc_commands() if c.script == "train.py"}
    assert command in shown, f"'{command}' is no longer in the docs: update FDR_COMMANDS"
    overrides = shlex.split(command)[2:]
    res = run_train(
        overrides + ["debug=fdr", "trainer=cpu", "callbacks.progress_bar.refresh_rate=0"] + SMALL_MINI,
        tmp_path,
        small_mini_dir,
    )
    assert set(res["test"]) == {"night_cctv", "station_indoor", "far_high"}, res["test"]
    assert res["debug"] is True
