"""Provenance: the git commit and dirty flag, versions and machine stored with results."""

import json
import shutil
import subprocess

import pytest

from xyoptics.core.provenance import SOURCE, git_state, provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
def test_git_state_names_the_commit_and_sees_uncommitted_changes(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("two\n")
    assert git_state(tmp_path) == {"commit": head, "dirty": True}


def test_outside_a_checkout_the_commit_is_none_with_a_reason(tmp_path):
    state = git_state(tmp_path)
    assert state["commit"] is None and state["why"]


@needs_git
def test_results_carry_this_checkout_s_commit_and_the_versions():
    p = provenance()
    if (SOURCE / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SOURCE, capture_output=True, text=True).stdout
        assert p["git"]["commit"] == head.strip() and isinstance(p["git"]["dirty"], bool)
    assert p["versions"]["numpy"] and p["versions"]["python"] and p["machine"]["cores"] >= 1
    json.dumps(p)  # storable as it is
