"""Builds the web UI's bundle, ``ui/dist``, when its sources changed.

The bundle is keyed by a hash of what it is built from: everything under ``ui/`` (the
sources, ``package.json``, ``package-lock.json``, the Vite config) but npm's and Vite's
output and the notes (``SKIPPED``). It is rebuilt only when that key differs from the
one stamped in ``ui/dist/.stamp``: ``npm ci`` (only when the lockfile changed since
``node_modules`` was installed), then ``npm run build``. Each build is also kept outside
the clone, in ``~/.cache/stepsaga/ui/<key>`` (or ``$STEPSAGA_UI_CACHE/<key>``), so a
fresh clone of the same sources copies its bundle in instead of installing and building.

Run by ``setup.py`` on ``pip install`` (where a missing npm is a warning: the package
is then built without the explorer) and by ``scripts/test.sh`` (where it is an error).
Standard library only: it runs before any virtualenv exists.

    python3 scripts/build_ui.py          # prints what it did: fresh, cached or built
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

UI = Path(__file__).resolve().parents[1] / "ui"
# what the bundle does not depend on: npm's and Vite's output, Python's, the notes
SKIPPED = {"node_modules", "dist", "__pycache__", "__init__.py", "README.md", ".gitignore"}
STAMP = ".stamp"
LOCK_STAMP = ".stepsaga-lock"  # in node_modules: the lockfile hash it was installed from


class BuildError(RuntimeError):
    """The bundle is missing or stale and cannot be built here."""


def default_cache() -> Path:
    root = os.environ.get("STEPSAGA_UI_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "stepsaga" / "ui"


def _sources(ui: Path) -> Iterator[Path]:
    for path in sorted(ui.iterdir()):
        if path.name in SKIPPED:
            continue
        if path.is_dir():
            yield from (p for p in sorted(path.rglob("*"))
                        if p.is_file() and "__pycache__" not in p.parts)
        elif path.is_file():
            yield path


def source_key(ui: Path = UI) -> str:
    """The hash of the UI's sources and lockfile that a bundle built from them carries."""
    digest = hashlib.sha256()
    for path in _sources(ui):
        digest.update(path.relative_to(ui).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:20]


def stamped_key(ui: Path = UI) -> str | None:
    """The key stamped in the built bundle, or None when there is none."""
    stamp = ui / "dist" / STAMP
    return stamp.read_text().strip() if stamp.is_file() else None


def _run(ui: Path, *args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, cwd=ui, check=True)


def _npm_build(ui: Path, npm: str) -> None:
    lock = hashlib.sha256((ui / "package-lock.json").read_bytes()).hexdigest()
    installed = ui / "node_modules" / LOCK_STAMP
    if not installed.is_file() or installed.read_text() != lock:
        # npm's own download cache (~/.npm) lives outside the clone: a warm one
        # installs without the network
        _run(ui, npm, "ci", "--no-audit", "--no-fund", "--prefer-offline")
        installed.write_text(lock)
    _run(ui, npm, "run", "build")


def build(ui: Path = UI, *, cache: Path | None = None, require: bool = True) -> str:
    """Makes ``ui/dist`` match the sources; returns "fresh", "cached" or "built".

    Without npm, a stale or missing bundle raises :class:`BuildError` when ``require``,
    else is left as it is ("missing" or "stale" is returned).
    """
    cache = default_cache() if cache is None else cache
    dist = ui / "dist"
    key = source_key(ui)
    if stamped_key(ui) == key:
        return "fresh"
    cache.mkdir(parents=True, exist_ok=True)
    # one build at a time on this machine: two clones (or two runs in one) would
    # otherwise write one dist or one cache entry together
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamped_key(ui) == key:
            return "fresh"
        kept = cache / key
        if (kept / STAMP).is_file():
            shutil.rmtree(dist, ignore_errors=True)
            shutil.copytree(kept, dist)
            return "cached"
        npm = shutil.which("npm")
        if npm is None:
            state = "stale" if dist.exists() else "missing"
            message = (f"the UI bundle ({dist}) is {state} and npm is not on PATH: install "
                       f"Node.js >= 20.19 with npm, or run `npm ci && npm run build` in {ui}")
            if require:
                raise BuildError(message)
            print(f"warning: {message}", file=sys.stderr)
            return state
        _npm_build(ui, npm)
        (dist / STAMP).write_text(key + "\n")
        partial = cache / f"{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(dist, partial)
        shutil.rmtree(kept, ignore_errors=True)
        partial.rename(kept)  # whole or not at all
        return "built"


def main() -> int:
    try:
        print(f"ui bundle: {build()}")
    except (BuildError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
