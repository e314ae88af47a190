"""The user docs point at things that exist, and the README stays a door.

Docs rot silently when a file, a module or a make target is renamed: every relative link (and
its #anchor), every path under one of the repository's top-level folders (in prose or code),
every `python -m` module of the project and every `make` target the README and the docs name
must resolve in this checkout (a gitignored path counts: it names a build output).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
READMES = ("README.md", "deploy/README.md", "load_tests/README.md")
DOCS = sorted([*(REPO / name for name in READMES), *(REPO / "docs").glob("*.md")])
TOP_LEVEL = "build|client|common|deploy|docs|load_tests|model_repository|serving|tests|tools"
# Where `python -m` finds the project's packages (pyproject's dev-mode-dirs, and the root).
MODULE_ROOTS = (".", "build", "client", "common", "serving")
PROJECT_MODULES = re.compile(r"^(ssd300_\w+|load_tests|tools|tests)(\.\w+)*$")

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A repository path anywhere, prose or code: a top-level folder, a slash, then path characters
# (a placeholder such as <model> ends it, and what follows the placeholder is not checked).
PATH = re.compile(rf"(?<![\w./$-])((?:{TOP_LEVEL})/[\w./*-]*)")


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose = FENCE.sub("", path.read_text())
    return {slug(m) for m in re.findall(r"^#+ (.+)$", prose, re.M)}


def ignored(path: str) -> bool:
    """Build outputs (model.pt, python_env.tar.gz, ...) are named in docs but gitignored."""
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0


def path_exists(token: str) -> bool:
    token = token.rstrip("/.,:;")
    if any(c in token for c in "*?["):
        return any(REPO.glob(token))
    return (REPO / token).exists() or ignored(token)


def module_exists(name: str) -> bool:
    relative = name.replace(".", "/")
    for root in MODULE_ROOTS:
        base = REPO / root / relative
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))


def problems(path: Path) -> list[str]:
    text = path.read_text()
    prose = FENCE.sub("", text)
    found = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z]+:", target):  # http(s):, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            found.append(f"link {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            found.append(f"link {target}: no such heading")
    for token in PATH.findall(text):
        if not path_exists(token):
            found.append(f"path {token}: not in the repository")
    for name in re.findall(r"`(test_\w+\.py)`", prose):  # test modules named without tests/
        if not (REPO / "tests" / name).is_file():
            found.append(f"test module {name}: not in tests/")
    for name in re.findall(r"python3? -m ([\w.]+)", text):
        if PROJECT_MODULES.match(name) and not module_exists(name):
            found.append(f"module {name}: not found")
    targets = make_targets()
    mentioned = re.findall(r"`make ([a-z][\w-]*)", prose) + re.findall(r"^\s*make ([a-z][\w-]*)", text, re.M)
    found += [f"make {name}: no such target" for name in sorted(set(mentioned) - targets)]
    return found


@pytest.mark.parametrize("path", DOCS, ids=ids(DOCS))
def test_links_paths_modules_and_make_targets_resolve(path):
    assert problems(path) == []


def test_the_checker_sees_a_broken_link_a_missing_path_module_and_target(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n[a](missing.md) [b](#title) [c](#nowhere) `tools/no_such.py` `make no-such`\n"
        "`test_no_such.py`\n"
        "```\npython -m tools.no_such\n```\n"
    )
    assert problems(page) == [
        "link missing.md: no such file",
        "link #nowhere: no such heading",
        "path tools/no_such.py: not in the repository",
        "test module test_no_such.py: not in tests/",
        "module tools.no_such: not found",
        "make no-such: no such target",
    ]


def test_the_readme_is_a_door():
    """Short, the two commands in its first screen, no block that code rewrites, every target."""
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 160
    first_screen = "\n".join(lines[:25])
    assert "make demo" in first_screen and "make test" in first_screen
    assert not any("<!--" in line for line in lines)
    readme = "\n".join(lines)
    missing = {t for t in make_targets() - {"help"} if f"`{t}`" not in readme}
    assert missing == set()
