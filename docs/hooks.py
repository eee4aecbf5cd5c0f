"""MkDocs hooks: pages that live outside docs/ are added to the site when it is built.

- ``index.md`` is the project's README.md, its links rewritten to the site's pages (the README links
  ``docs/X.md``, ``benchmarks/RESULTS.md`` and ``notebooks/NN_*.ipynb`` from the project's root);
- ``results.md`` is benchmarks/RESULTS.md;
- ``notebooks/NN_*.ipynb`` are the notebooks of the folder named by ``LOCALMAMBA_DOCS_NOTEBOOKS``
  (``make docs``: build/notebooks, executed by ``make notebooks``, outputs and figures included; CI's
  strict build: notebooks/, the committed copies without outputs).

The files are added before mkdocs-jupyter sees the list (priority 100), so it renders the notebooks, and
before the nav is built, so that strict mode checks every link to them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent

# README (read from the root) -> the site (read from docs/): the same targets under their site names
_README_LINKS = [
    (re.compile(r"\]\(docs/"), "]("),
    (re.compile(r"\]\(benchmarks/RESULTS\.md"), "](results.md"),
]


def readme_as_index(text: str) -> str:
    """README.md with its links pointed at the site's pages (notebooks keep their paths)."""
    for pattern, repl in _README_LINKS:
        text = pattern.sub(repl, text)
    return text


def _notebook_dir() -> Path:
    d = Path(os.environ.get("LOCALMAMBA_DOCS_NOTEBOOKS", "build/notebooks"))
    d = d if d.is_absolute() else ROOT / d
    if d.name != "notebooks":  # the pages are notebooks/NN_*.ipynb, read from the folder's parent
        raise ValueError(f"LOCALMAMBA_DOCS_NOTEBOOKS must name a folder called notebooks, not {d}")
    if not sorted(d.glob("[0-9][0-9]_*.ipynb")):
        raise FileNotFoundError(f"no notebooks in {d}: run `make notebooks` first (or `make docs-check`, "
                                "which builds from the notebooks without outputs)")
    return d


@event_priority(100)
def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "index.md", content=readme_as_index((ROOT / "README.md").read_text())))
    files.append(File.generated(config, "results.md", content=(ROOT / "benchmarks" / "RESULTS.md").read_text()))
    nb_dir = _notebook_dir()
    for nb in sorted(nb_dir.glob("[0-9][0-9]_*.ipynb")):  # real files (mkdocs-jupyter reads them by path)
        files.append(File(f"notebooks/{nb.name}", src_dir=str(nb_dir.parent), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files
