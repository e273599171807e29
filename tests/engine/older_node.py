"""An older stepsaga for tests/engine/test_upgrades.py: this code, knowing only the
migrations in a given directory (a copy of this one without the newest: what the release
before it shipped), run as the ``stepsaga`` command line.

Usage: python -m tests.engine.older_node <migrations directory> <stepsaga arguments>
"""

from __future__ import annotations

import sys
from pathlib import Path

from engine.store import migrate


def main() -> int:
    # the migrations an installed release knows are the scripts it ships: point this
    # process at the older set (the module reads the location each time it looks)
    migrate._SCRIPTS = Path(sys.argv[1])
    migrate._known.cache_clear()
    from graphql_api.cli import main as stepsaga

    return stepsaga(sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
