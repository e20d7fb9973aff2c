"""CHANGELOG.md and `pamfr --version` tell the same version, and each release says how to
upgrade when it needs to."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version

from tests.conftest import REPO

CHANGELOG = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
RELEASE = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", re.M)


def test_the_newest_release_is_the_version_pamfr_prints():
    releases = RELEASE.findall(CHANGELOG)
    assert releases, "no release heading"
    newest = releases[0][0]
    printed = subprocess.run(
        [sys.executable, "-m", "pamfr", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert printed == f"pamfr {newest}" == f"pamfr {version('pamfr')}"
    assert [r[1] for r in releases] == sorted((r[1] for r in releases), reverse=True)


def test_every_release_has_keep_a_changelog_sections_and_upgrading_notes_come_first():
    parts = RELEASE.split(CHANGELOG)[1:]
    for number, _, body in zip(parts[::3], parts[1::3], parts[2::3], strict=True):
        headings = re.findall(r"^### (.+)$", body, re.M)
        assert headings, number
        assert set(headings) <= {"Upgrading", "Added", "Changed", "Fixed", "Removed", "Security"}
        if "Upgrading" in headings:
            assert headings[0] == "Upgrading", number
