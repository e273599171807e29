"""The backups page in a real Chromium against ``stepsaga serve --app
workers.actions.backups:app --config FILE``: linked from the index only when the server
has the pack; its jobs with their schedules; a backup triggered from the page whose
manifest appears with the size and checksums the API gives (and the target holds);
verified and restored from the page, the restore refused into the existing database
until asked to replace it, then rolled back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.workers.backups.helpers import add_rows, make_sqlite, sqlite_rows, write_config

from .conftest import TIMEOUT_MS, Server, ask, serving, shot

MANIFESTS = """query($job: String) { backupManifests(job: $job) { id size sha256 md5
  verified } }"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    found = tmp_path_factory.mktemp("backups")
    make_sqlite(found / "app.sqlite", rows=300)
    return found


@pytest.fixture(scope="module")
def server(folder: Path) -> Iterator[Server]:
    with serving(folder / "s.sqlite", app="workers.actions.backups:app",
                 config=write_config(folder)) as served:
        yield served


def test_a_backup_triggered_from_the_page_shows_its_manifest(page: Page, server: Server,
                                                             folder: Path) -> None:
    page.goto(f"{server.origin}/")
    link = page.get_by_role("link", name="backups")
    expect(link).to_be_visible(timeout=TIMEOUT_MS)
    link.click()
    page.wait_for_url(f"{server.origin}/?backups", timeout=TIMEOUT_MS)
    nightly = page.locator("table.jobs tr[data-job=nightly]")
    expect(nightly.locator("td.schedule")).to_have_text("0 3 * * * Europe/Paris",
                                                        timeout=TIMEOUT_MS)
    expect(nightly.locator("td.steps")).to_have_text("zstd, aes-gcm")
    expect(page.locator("table.jobs tr[data-job=plain] td.schedule")).to_have_text(
        "on demand")
    section = page.locator("section.manifests[data-job=nightly]")
    expect(section.locator(".empty")).to_be_visible()

    nightly.get_by_role("button", name="back up now").click()
    expect(nightly.get_by_role("status")).to_contain_text("backed up:", timeout=TIMEOUT_MS)
    rows = section.locator("tr[data-backup]")
    expect(rows).to_have_count(1, timeout=TIMEOUT_MS)
    (made,) = ask(server, MANIFESTS, job="nightly")["backupManifests"]
    row = section.locator(f"tr[data-backup='{made['id']}']")
    blob = (folder / "backups" / "nightly" / made["id"] / "data").read_bytes()
    assert made["sha256"] == hashlib.sha256(blob).hexdigest() and made["size"] == len(blob)
    expect(row.locator("td.size")).to_have_attribute("data-bytes", str(len(blob)))
    expect(row.locator("td.sha256 code")).to_have_attribute("title", made["sha256"])
    expect(row.locator("td.sha256 code")).to_have_text(made["sha256"][:12])
    expect(row.locator("td.md5 code")).to_have_attribute("title", made["md5"])
    expect(row.locator("td.verified")).to_have_text("yes")
    shot(page, "backups")

    # the integrity check from the page
    row.get_by_role("button", name="verify").click()
    expect(row.get_by_role("status")).to_contain_text(
        f"verified: sha256 {made['sha256'][:12]}", timeout=TIMEOUT_MS)

    # a restore into the existing database is refused until replace is ticked; rolled back
    backed_up = sqlite_rows(folder / "app.sqlite")
    add_rows(folder / "app.sqlite", "after the backup")
    changed = sqlite_rows(folder / "app.sqlite")
    row.get_by_role("button", name="restore").click()
    expect(row.get_by_role("alert")).to_contain_text("failed at load", timeout=TIMEOUT_MS)
    section.get_by_role("checkbox").check()
    row.get_by_role("button", name="restore").click()
    expect(row.get_by_role("status")).to_have_text("restored (work)", timeout=TIMEOUT_MS)
    assert sqlite_rows(folder / "app.sqlite") == backed_up
    section.get_by_role("button", name="roll back the restore").click()
    expect(section.locator(".restore-options").get_by_role("status")).to_contain_text(
        "rolled back", timeout=TIMEOUT_MS)
    assert sqlite_rows(folder / "app.sqlite") == changed


def test_a_server_without_the_pack_has_no_backups_link(browser: object,
                                                       tmp_path: Path) -> None:
    with serving(tmp_path / "plain.sqlite") as plain:
        context = plain.signed_in(browser)
        try:
            page = context.new_page()
            page.goto(f"{plain.origin}/")
            expect(page.locator("header .packs")).to_have_attribute("data-packs", "known",
                                                                    timeout=TIMEOUT_MS)
            expect(page.get_by_role("link", name="backups")).to_have_count(0)
            expect(page.get_by_role("link", name="locks")).to_be_visible()
        finally:
            context.close()
