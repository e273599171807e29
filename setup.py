"""Only a build hook; the project's metadata is in pyproject.toml.

Every build (``pip install .``, ``pip install -e .``, a wheel, an sdist) first brings the
web UI's bundle, ``ui/dist``, up to date with scripts/build_ui.py (npm ci and npm run
build, or a copy of a bundle built earlier from the same sources), so a fresh clone
gets it without a manual step. Building from an sdist, which carries the bundle but
not the npm sources, builds nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build import build
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent


class build_ui(Command):
    description = "build the web UI's bundle (ui/dist) when its sources changed"
    user_options: list[tuple[str, str | None, str]] = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        script = HERE / "scripts" / "build_ui.py"
        if not script.is_file() or not (HERE / "ui" / "package.json").is_file():
            return  # an sdist: the bundle came with it
        spec = importlib.util.spec_from_file_location("build_ui", script)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        # without npm the package is still installable, only without the explorer
        print(f"ui bundle: {module.build(require=False)}")


class build_with_ui(build):
    # first, so that build_py finds the bundle's files when it collects package data
    sub_commands = [("build_ui", None), *build.sub_commands]


class sdist_with_ui(sdist):
    def run(self) -> None:
        self.run_command("build_ui")
        super().run()


setup(
    cmdclass={"build_ui": build_ui, "build": build_with_ui, "sdist": sdist_with_ui},
    # the package data is exactly pyproject's package-data; with include_package_data
    # setuptools also takes ui/dist and ui/dist/assets for packages it was not told of
    # and warns on every build
    include_package_data=False,
)
