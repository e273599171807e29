#!/usr/bin/env bash
# Installs what the tests need (Debian's PostgreSQL and Chromium when missing; the web
# UI's npm packages and bundle when ui/ changed; Python packages into a virtualenv
# outside the clone, keyed by a hash of pyproject.toml, so a warm run installs nothing)
# and runs lint, types and the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
fi
updated=""
apt_install() {  # apt_install [apt-get install options] PACKAGE...
    if [ -z "$updated" ]; then
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update
        updated=1
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}
# The store's contract tests start a throwaway PostgreSQL 15 (tests/pg.py); without
# its binaries they fail, so install Debian's package when they are missing.
if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
    apt_install postgresql
fi
# The backups pack's tests start a throwaway MariaDB server (tests/mariadb.py) and dump
# it with mariadb-dump; without recommends it is the server and client only.
if [ ! -x /usr/sbin/mariadbd ] || ! command -v mariadb-dump >/dev/null 2>&1; then
    apt_install --no-install-recommends mariadb-server mariadb-client
fi
# ... and encrypt to a GnuPG key made for the test (gpg, gpgconf, gpg-agent)
if ! command -v gpg-agent >/dev/null 2>&1; then
    apt_install --no-install-recommends gnupg
fi
# The rolling-restart test puts two API nodes behind Debian's haproxy
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
    apt_install --no-install-recommends haproxy
fi
# The UI's browser tests drive Debian's Chromium (Playwright cannot download its own
# browsers here); without recommends it is a few packages instead of 115.
if [ ! -x /usr/bin/chromium ]; then
    apt_install --no-install-recommends chromium
fi
# The explorer's bundle (ui/dist): npm ci and npm run build when ui/'s sources or
# lockfile changed, a copy from ~/.cache/stepsaga/ui when this build was made before,
# else nothing. pip install -e runs the same through setup.py; done first here, a
# failed build shows its output and leaves the virtualenv alone.
echo "== ui"; python3 scripts/build_ui.py
# the UI's own unit tests (vitest, the bundler's runner); a bundle copied from the cache
# came without npm's packages: install them first then
echo "== ui tests"; (cd ui && { [ -x node_modules/.bin/vitest ] || npm ci --no-audit --no-fund; } \
    && npm test --silent)
key=$(sha256sum pyproject.toml | cut -c1-16)
venv="${STEPSAGA_VENV:-$HOME/.cache/stepsaga/venv-$key}"
setup() {
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip setuptools wheel
    "$venv/bin/pip" install -q -e '.[test]'
    touch "$venv/.complete"
}
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    setup
elif ! "$venv/bin/pip" install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1; then
    # the package moved to another clone and could not be re-linked offline: start over
    setup
fi
echo "== ruff"; "$venv/bin/ruff" check .
echo "== mypy"; "$venv/bin/mypy"
echo "== pytest"; "$venv/bin/python" -m pytest "$@"
