"""Credentials for the tests and benchmarks that talk to a real ``stepsaga serve``: an
administrator's API token made with the real ``stepsaga token create`` on the server's
store (auth is on by default; nothing here turns it off)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def admin_token(store_url: str, name: str = "tests") -> str:
    """A new token of ``name``, an administrator (made on first use) of that store."""
    done = subprocess.run(
        [sys.executable, "-m", "graphql_api.cli", "token", "--store", store_url, "create",
         name, "--group", "admins", "--label", "tests"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"stepsaga token create failed: {done.stderr}")
    return done.stdout.strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
