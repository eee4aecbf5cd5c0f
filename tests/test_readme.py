"""The README's claims hold for the tree: the paths it names exist, the command-line options it uses are
options of those commands, its models are registered, its imports import, its papermill parameters are
notebook parameters, and every measured figure in its prose is in benchmarks/RESULTS.md (where each has
its command, whose options are checked too).

The CLIs' ``--help`` runs in this process (runpy), so torch is imported once for all of them.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import runpy
import shlex
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
RESULTS = (ROOT / "benchmarks" / "RESULTS.md").read_text()

# folders a README may name that the user's own runs create (not in git)
GENERATED = ("runs/", "build/", "data/cifar", "data/coco128", "/data/imagenet", ".venv/", "~/")
# top-level entries of the project that README paths start from
TRACKED_TOP = ("localmamba/", "notebooks/", "tests/", "benchmarks/", "configs/", "docs/", "data/", "figures/")


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S)


def _prose(text: str) -> str:
    """The README without its fenced code blocks and its indented (layout) blocks."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.startswith("    "))


def _commands() -> list[list[str]]:
    """Shell commands of the README's code blocks, continuation lines joined, comments dropped."""
    cmds = []
    for block in _code_blocks(README):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("#") or not line:
                continue
            try:
                cmds.append(shlex.split(line))
            except ValueError:  # Python lines with quotes that shlex cannot split: not commands
                continue
    return cmds


def _named_paths(text: str = README) -> set[str]:
    """Paths a page names: link targets, inline code and command arguments under a tracked folder."""
    candidates = set(re.findall(r"\]\(([^)#\s]+)", text))
    candidates |= set(re.findall(r"`([^`\s]+)`", text))
    if text is README:
        for cmd in _commands():
            candidates |= set(cmd)
    else:  # inline commands: their arguments
        candidates |= {w for span in re.findall(r"`([^`]+)`", text) for w in span.split()}
    paths = set()
    for c in candidates:
        c = c.strip("'\",").removeprefix("../")  # papermill paths are relative to notebooks/
        if c.startswith(("http:", "https:")) or c.startswith(GENERATED) or any(ch in c for ch in "{[*<"):
            continue
        if c.startswith(TRACKED_TOP) or (c.count("/") == 0 and re.fullmatch(r"[\w.-]+\.(md|yml|toml|py)", c)):
            paths.add(c)
    return paths


def test_readme_paths_exist():
    paths = _named_paths()
    assert "benchmarks/RESULTS.md" in paths and "docs/img/scan_orders.png" in paths  # the parser finds them
    missing = [p for p in sorted(paths) if not (ROOT / p).exists()]
    assert not missing, f"README names paths that do not exist: {missing}"


def test_results_and_docs_paths_exist():
    """The paths RESULTS.md and the docs pages name (configs, scripts, modules) exist too: from the project's
    root, or beside the page (a site page links results.md and index.md, which docs/hooks.py makes)."""
    missing = []
    for page in [ROOT / "benchmarks" / "RESULTS.md", *sorted((ROOT / "docs").glob("*.md"))]:
        generated = {"results.md", "index.md"} if page.parent.name == "docs" else set()
        missing += [f"{page.name}: {p}" for p in sorted(_named_paths(page.read_text()))
                    if not ((ROOT / p).exists() or (page.parent / p).exists() or p in generated)]
    assert not missing, f"pages name paths that do not exist: {missing}"


def _layout_entries() -> list[str]:
    """Paths of the README's Layout section: the entries at 4 spaces (two columns allowed), the entries
    indented under one of them (``localmamba/`` -> ``ops/``), and the .py files an indented entry's
    description names (``layers/ ... reference.py: ...``)."""
    section = README.split("## Layout", 1)[1]
    entries, parent = [], ""
    for line in section.splitlines():
        if not line.startswith("    ") or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        first, *rest = line.split()
        if indent == 4:  # top level, maybe a second column: "notebooks/   01-07     tests/   mirrors ..."
            parent = first
            entries += [first] + [w for w in rest if re.fullmatch(r"[\w.-]+/", w)]
        else:
            entries.append(parent + first)
            if first.endswith("/"):
                entries += [parent + first + f for f in re.findall(r"\b(\w+\.py)\b", " ".join(rest))]
    return entries


def test_readme_layout_exists():
    entries = _layout_entries()
    assert "localmamba/" in entries and "localmamba/ops/" in entries and "tests/" in entries
    missing = [e for e in entries if not (ROOT / e).exists()]
    assert not missing, f"README's Layout names what the tree does not have: {missing}"


def _help_text(cmd: list[str]) -> str | None:
    """``--help`` of a README command (python -m M / python path.py / torchrun ... -m M), run in-process."""
    if cmd[0] == "torchrun":
        cmd = ["python"] + cmd[cmd.index("-m"):]
    if not cmd or Path(cmd[0]).name not in ("python", "python3"):
        return None
    if cmd[1] == "-m":
        return _run_help(cmd[2], module=True)
    if cmd[1].endswith(".py"):
        return _run_help(cmd[1], module=False)
    return None


@functools.cache
def _run_help(target: str, module: bool) -> str:
    out, argv = io.StringIO(), sys.argv
    sys.argv = [target, "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported by the package
            if module:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:  # as `python path.py` does, the script's folder first on the path (for its siblings)
                sys.path.insert(0, str((ROOT / target).parent))
                runpy.run_path(str(ROOT / target), run_name="__main__")
    finally:
        sys.argv = argv
        if not module and sys.path[0] == str((ROOT / target).parent):
            sys.path.pop(0)
    assert exit_info.value.code in (0, None), f"{target} --help failed"
    return out.getvalue()


def _results_commands() -> list[list[str]]:
    """The commands RESULTS.md gives in inline code (`python benchmarks/...`, `torchrun ... -m ...`)."""
    spans = re.findall(r"`((?:python|torchrun)\s[^`]+)`", RESULTS)
    return [shlex.split(" ".join(span.split())) for span in spans]


def _unknown_options(commands: list[list[str]]) -> tuple[set[str], list[str]]:
    checked, unknown = set(), []
    for cmd in commands:
        start = cmd.index("-m") if cmd[0] == "torchrun" else 0  # torchrun's own options come before -m
        options = [a.split("=")[0] for a in cmd[start:] if a.startswith("--")]
        if not options:
            continue
        helptext = _help_text(cmd)
        if helptext is None:
            continue
        checked.add(cmd[cmd.index("-m") + 1] if "-m" in cmd else cmd[1])
        words = set(re.findall(r"--[\w-]+", helptext))
        unknown += [f"{' '.join(cmd[:3])} ... {o}" for o in options if o not in words]
    return checked, unknown


def test_readme_command_options_exist():
    checked, unknown = _unknown_options(_commands())
    assert {"localmamba.train", "localmamba.evaluate"} <= checked, checked
    assert not unknown, f"README uses options its commands do not have: {unknown}"


def test_results_command_options_exist():
    """Every command RESULTS.md gives for a figure still takes the options it shows."""
    checked, unknown = _unknown_options(_results_commands())
    assert {"benchmarks/bench_models.py", "benchmarks/search_cifar.py", "benchmarks/detection_coco128.py",
            "localmamba.train"} <= checked, checked
    assert not unknown, f"RESULTS.md uses options its commands do not have: {unknown}"


def test_readme_prose_options_exist():
    """Options named in the prose (`--cuda-graph`) are options of the training, evaluation, search or
    detection CLI, or of another tool whose command the README shows with it (papermill's `--cwd`)."""
    words = {a.split("=")[0] for cmd in _commands() if cmd[0] not in ("python", "python3") for a in cmd}
    for module in ("localmamba.train", "localmamba.evaluate", "localmamba.search", "localmamba.detection.train"):
        words |= set(re.findall(r"--[\w-]+", _help_text(["python", "-m", module])))
    named = set(re.findall(r"`(--[\w-]+)", _prose(README)))
    assert named, "the parser found no option in the README's prose"
    assert not named - words, f"README's prose names options no CLI has: {sorted(named - words)}"


def _notebook_parameters(path: Path) -> set[str]:
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    return set(re.findall(r"^(\w+)\s*=", "".join(cell["source"]), re.M))


def test_readme_papermill_parameters_exist():
    runs = [c for c in _commands() if Path(c[0]).name == "papermill"]
    assert runs, "the README has no papermill example"
    for cmd in runs:
        assert "--cwd" in cmd and cmd[cmd.index("--cwd") + 1] == "notebooks", "papermill needs --cwd notebooks"
        notebook = next(a for a in cmd if a.endswith(".ipynb"))
        names = {cmd[i + 1] for i, a in enumerate(cmd) if a == "-p"}
        unknown = names - _notebook_parameters(ROOT / notebook)
        assert not unknown, f"{notebook} has no parameters {sorted(unknown)}"


def test_readme_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = set(re.findall(r"`make ([\w-]+)`", README)) | {c[1] for c in _commands() if c[0] == "make"}
    assert {"notebooks", "test", "docs"} <= named
    assert not named - targets, f"README names make targets the Makefile lacks: {sorted(named - targets)}"


def test_readme_models_are_registered():
    import timm

    import localmamba  # noqa: F401  (registers the models)

    registered = set(timm.list_models())
    named = {m for m in re.findall(r"`([a-z_]+)`", README) if m.startswith(("local_", "vim_", "vmamba_", "test_local"))}
    named |= set(re.findall(r'create_model\("([\w]+)"', README))
    assert "local_vim_tiny" in named
    assert not named - registered, f"README names models timm does not know: {sorted(named - registered)}"


def test_readme_imports_import():
    lines = [line.strip() for block in _code_blocks(README) for line in block.splitlines()
             if re.match(r"\s*(from [\w.]+ import [\w, ]+|import [\w., ]+)(\s*#.*)?$", line)]
    assert lines
    for line in lines:
        exec(compile(line.split("#")[0], "README.md", "exec"), {})


def test_readme_figures_are_in_results():
    """Every measured figure of the README's prose and tables (numbers of 3 or more digits) is in RESULTS."""
    recipe = {"1024", "5000", "2403", "09338"}  # the recipe's lr batch, held-out images, the paper's arXiv id
    numbers = set(re.findall(r"(?<![\w.,-])(\d{3,}|\d{1,3}(?:,\d{3})+)(?![\w,-]|\.\d)", _prose(README)))
    numbers = {n.replace(",", "") for n in numbers} - recipe
    assert "3298" in numbers, "the parser found no figure in the README"
    results = RESULTS.replace(",", "")
    missing = sorted(n for n in numbers if not re.search(rf"(?<!\d){n}(?!\d)", results))
    assert not missing, f"README figures without a command in benchmarks/RESULTS.md: {missing}"


def _header(path: Path) -> str:
    """A benchmark's header: a script's module docstring, a shell script's leading comments, one line."""
    if path.suffix == ".py":
        import ast

        text = ast.get_docstring(ast.parse(path.read_text())) or ""
    else:
        text = "\n".join(line.lstrip("# ") for line in path.read_text().splitlines()[1:] if line.startswith("#"))
    return " ".join(text.split())


def test_benchmarks_point_to_results_sections_that_exist():
    """The benchmarks' headers name RESULTS.md sections ("Model throughput on the GPU") that RESULTS has."""
    headings = re.findall(r"^#+ (.+)$", RESULTS, re.M)
    named = {}
    for f in sorted((ROOT / "benchmarks").glob("*.[ps][yh]")):
        for quoted in re.findall(r'benchmarks/RESULTS\.md,?\s*(?:\(|sections?\s*)((?:"[^"]+"(?:,| and)?\s*)+)',
                                 _header(f)):
            for name in re.findall(r'"([^"]+)"', quoted):
                named.setdefault(name, f.name)
    assert {"Parameters and FLOPs", "Selective scan, the op alone", "Direction search", "Detection"} <= set(named), named
    missing = {n: f for n, f in named.items() if not any(h.startswith(n) for h in headings)}
    assert not missing, f"benchmarks name RESULTS.md sections it lacks: {missing}"


def test_readme_modules_exist():
    """Every `python -m M` the README names (in code or prose) is a module that can run."""
    import importlib.util

    named = set(re.findall(r"python -m ([\w.]+)", README)) - {"pip"}
    assert {"localmamba.train", "localmamba.evaluate"} <= named
    def exists(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its package is missing
            return False

    missing = sorted(m for m in named if not exists(m))
    assert not missing, f"README names modules that do not exist: {missing}"
