"""The hashed lock files (requirements/*.txt, made by scripts/lock.sh) against what
pyproject.toml declares, without the network: a dependency added, removed or re-bounded in
pyproject.toml without running scripts/lock.sh fails here."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCKS = {"daemon.txt": [], "daemon-pg.txt": ["pg"], "test.txt": ["pg", "test"]}
AGAIN = "pyproject.toml and the lock disagree: run scripts/lock.sh"


@dataclass
class Pinned:
    version: str
    hashes: int = 0
    via: list[str] = field(default_factory=list)


def read_lock(name: str) -> dict[str, Pinned]:
    pinned: dict[str, Pinned] = {}
    current = None
    for line in (REPO / "requirements" / name).read_text().splitlines():
        found = re.match(r"([A-Za-z0-9_.-]+)==([^ ;\\]+)", line)
        if found:
            current = pinned.setdefault(canonicalize_name(found[1]), Pinned(found[2]))
        elif current is not None and "--hash=sha256:" in line:
            current.hashes += 1
        elif current is not None and line.strip().startswith("#"):
            current.via.append(line.strip("# ").removeprefix("via").strip())
    return pinned


def declared(extras: list[str]) -> list[Requirement]:
    wanted = list(PROJECT["project"]["dependencies"])
    for extra in extras:
        wanted += PROJECT["project"]["optional-dependencies"][extra]
    return [Requirement(r) for r in wanted]


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_each_lock_pins_exactly_what_pyproject_declares_with_hashes(name):
    lock = read_lock(name)
    wanted = declared(LOCKS[name])
    direct = {p for p, pin in lock.items() if "pamfr (pyproject.toml)" in pin.via}
    assert direct == {canonicalize_name(r.name) for r in wanted}, AGAIN
    for requirement in wanted:
        pin = lock[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{requirement} but the lock pins {pin.version}: {AGAIN}"
        )
    for build in PROJECT["build-system"]["requires"]:  # setup.sh builds pamfr without network
        requirement = Requirement(build)
        pin = lock[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pin.version), AGAIN
    assert all(pin.hashes >= 1 for pin in lock.values())  # pip then installs with hashes only


def test_the_daemon_locks_hold_no_test_tool():
    for name in ("daemon.txt", "daemon-pg.txt"):
        lock = read_lock(name)
        assert not {"pytest", "hypothesis", "ruff", "atheris"} & set(lock), name
    assert "psycopg" not in read_lock("daemon.txt") and "psycopg" in read_lock("daemon-pg.txt")


def test_starlette_is_past_its_published_cves():
    # CVE-2025-54121, CVE-2025-62727, CVE-2026-48710, CVE-2026-48818, CVE-2026-54283 and the
    # Range limit of 1.5.1
    (starlette,) = [r for r in declared([]) if r.name == "starlette"]
    assert not starlette.specifier.contains("1.5.0") and starlette.specifier.contains("1.5.1")
