"""The README and the guides in docs/ stay usable: every Python example runs as written and prints something,
every relative link resolves, and the README stays short enough to read in five minutes."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [(page, i, block) for page in PAGES
            for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))]
GUIDES = ("training", "rig", "calibration", "sessions", "results", "architecture")


def test_readme_is_short_and_maps_the_guides():
    text = (ROOT / "README.md").read_text()
    assert len(text) <= 12_000, f"README.md has {len(text)} characters; move detail into docs/"
    for guide in GUIDES:
        assert f"(docs/{guide}.md)" in text, f"README.md does not link docs/{guide}.md"
    assert "make demo" in text and "make test" in text


def test_every_relative_link_resolves():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_there_are_examples_in_the_readme_and_guides():
    pages = {page.name for page, _, _ in EXAMPLES}
    assert {"README.md", "training.md", "sessions.md"} <= pages


@pytest.mark.parametrize("page, index, block", EXAMPLES, ids=[f"{p.name}-{i}" for p, i, _ in EXAMPLES])
def test_example_runs(page, index, block, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    exec(compile(block, f"{page.name}[python block {index}]", "exec"), {"__name__": f"example_{index}"})
    assert capsys.readouterr().out.strip()


def test_docstring_examples_run():
    """Docstrings with ``>>>`` examples are doctests of the modules that hold them."""
    import doctest
    import importlib

    holders = [p for pkg in ("xyoptics", "drivers", "calibration") for p in (ROOT / pkg).rglob("*.py")
               if ">>>" in p.read_text()]
    assert holders
    for path in holders:
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted and not result.failed, f"{path}: {result}"
