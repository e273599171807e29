"""The explorer's bundle (ui/dist): built from the sources in the clone, referring to
nothing on another host, and shipped as the ``ui`` package's data."""

from __future__ import annotations

import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "ui" / "dist"
CDNS = ["esm.sh", "unpkg.com", "jsdelivr.net", "cdnjs.cloudflare.com", "googleapis.com",
        "gstatic.com", "skypack.dev", "jspm.io", "jspm.dev"]


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_ui", ROOT / "scripts" / "build_ui.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Refs(HTMLParser):
    """The URLs an HTML page loads or links: every src and href."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def page_refs() -> list[str]:
    refs = Refs()
    refs.feed((DIST / "index.html").read_text())
    return refs.urls


def test_the_bundle_is_built_from_the_sources_in_the_clone() -> None:
    build_ui = builder()
    assert build_ui.stamped_key() == build_ui.source_key(), (
        "ui/dist is missing or older than ui/'s sources or lockfile: "
        "python3 scripts/build_ui.py (or pip install -e .) builds it")


def test_the_page_loads_only_its_own_files() -> None:
    html = (DIST / "index.html").read_text()
    assert "http://" not in html and "https://" not in html and '"//' not in html
    refs = page_refs()
    assert any(ref.endswith(".js") for ref in refs) and any(r.endswith(".css") for r in refs)
    for ref in refs:
        if ref.startswith("data:"):
            continue
        assert ref.startswith("/ui/"), ref
        assert (DIST / ref.removeprefix("/ui/")).is_file(), ref


def test_no_file_of_the_bundle_names_a_cdn() -> None:
    files = [p for p in DIST.rglob("*") if p.suffix in (".js", ".css", ".html")]
    assert len(files) > 3
    for path in files:
        text = path.read_text(errors="replace")
        for cdn in CDNS:
            assert cdn not in text, f"{path.name} names {cdn}"
        if path.suffix == ".css":  # fonts and images: inlined or from the bundle
            for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", text):
                assert url.startswith(("data:", "/ui/", "./", "#")) or "/" not in url, url
        # scripts load others by relative or /ui/ paths, never by a full URL (a bare
        # scheme is no address: ajv's URI code checks a hostname as new URL(`http://`+h))
        assert not re.search(r"""(import\(|from\s*|new URL\()\s*["'`]https?://[^"'`]""",
                             text), path


def test_the_python_package_carries_the_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    # isort: off
    import setuptools  # noqa: F401 (first: distutils is then setuptools' own)
    from distutils.core import run_setup
    # isort: on

    monkeypatch.chdir(ROOT)
    # setup.py and pyproject.toml as a build reads them, stopped before building
    dist = run_setup("setup.py", stop_after="config")
    # the npm folders under ui/ (node_modules, src, dist) are no Python packages
    assert [p for p in dist.packages if p.startswith("ui")] == ["ui"]
    build_py = dist.get_command_obj("build_py")
    build_py.ensure_finalized()
    shipped = {name for package, _, _, names in build_py.data_files if package == "ui"
               for name in names}
    built = {p.relative_to(DIST.parent).as_posix() for p in DIST.rglob("*")
             if p.is_file() and not p.name.startswith(".")}
    assert "dist/index.html" in built and built <= shipped
