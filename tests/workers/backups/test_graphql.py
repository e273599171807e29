"""The pack's GraphQL fields on a real ``stepsaga serve --app workers.actions.backups:app
--config FILE``, over HTTP with tokens: jobs with their schedules' next fire times,
manifests with sizes and checksums read back from the target, a backup triggered,
verified (and a corrupted one failing its check), a restore refused into an existing
database then done with replace and rolled back; clients whose policies lack write or
admin are refused the mutations that need them. On a SQLite store and a real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from engine.store import SqlStore
from tests.auth import admin_token, bearer
from workers.locks import LockService
from workers.schedules import next_tick

from ...graphql_api.wire import ROOT, Served
from .helpers import add_rows, make_sqlite, sqlite_rows, write_config

JOBS = """{ backupJobs { name source { name kind } target { name kind } steps schedule
  timezone scheduleName nextAt schedulePaused retention } }"""
MANIFESTS = """query($job: String, $target: String) {
  backupManifests(job: $job, target: $target) {
    id job target createdAt completedAt size sha256 md5 verified error
    steps { step kind contentType size sha256 md5 } } }"""
RUN = """__typename ... on BackupRun { workId saga status output error stage }
  ... on InvalidInput { message field } ... on NotFound { message field }
  ... on WrongState { message state: status } ... on Conflict { message field }"""
TRIGGER = f"mutation($job: String!) {{ triggerBackup(job: $job) {{ {RUN} }} }}"
VERIFY = f"""mutation($job: String!, $backup: String!) {{
  verifyBackup(job: $job, backup: $backup) {{ {RUN} }} }}"""
RESTORE = f"""mutation($job: String!, $backup: String!, $replace: Boolean!) {{
  restoreBackup(job: $job, backup: $backup, replace: $replace) {{ {RUN} }} }}"""
ROLLBACK = f"mutation($id: String!) {{ rollbackRestore(workId: $id) {{ {RUN} }} }}"
WORK = "query($id: String!) { work(workId: $id) { status output } }"


@pytest.fixture
def served(tmp_path: Path, store_url: str) -> Iterator[dict[str, Any]]:
    """The server on a SQLite store, then on a real PostgreSQL (the schedules and
    policies live there)."""
    make_sqlite(tmp_path / "app.sqlite", rows=400)
    store = store_url
    server = Served("serve", "--store", store, "--port", "0", "--app",
                    "workers.actions.backups:app", "--config", str(write_config(tmp_path)))
    try:
        ready = server.ready()
        ready["store"] = store
        yield ready
    finally:
        code, _, err = server.stop()
        assert code == 0, err


def post(url: str, query: str, token: str, **variables: Any) -> dict[str, Any]:
    answer = httpx.post(url, json={"query": query, "variables": variables},
                        headers=bearer(token), timeout=60)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def data(url: str, query: str, token: str, **variables: Any) -> dict[str, Any]:
    found = post(url, query, token, **variables)
    assert "errors" not in found, found["errors"]
    return dict(found["data"])


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graphql_api.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_jobs_manifests_trigger_verify_restore_and_rollback_over_the_wire(
        served: dict[str, Any], tmp_path: Path) -> None:
    url, admin = served["url"], served["token"]
    jobs = {j["name"]: j for j in data(url, JOBS, admin)["backupJobs"]}
    assert sorted(jobs) == ["nightly", "plain"]
    nightly = jobs["nightly"]
    assert nightly["source"] == {"name": "db", "kind": "sqlite"}
    assert nightly["target"] == {"name": "here", "kind": "directory"}
    assert [s["kind"] for s in nightly["steps"]] == ["zstd", "aes-gcm"]
    assert (nightly["schedule"], nightly["timezone"], nightly["scheduleName"]) == (
        "0 3 * * *", "Europe/Paris", "backups.nightly")
    # the node made the schedule when it started: its next tick is 03:00 in Paris
    assert nightly["nextAt"] == next_tick("0 3 * * *", "Europe/Paris",
                                          nightly["nextAt"] - 86400)
    assert nightly["schedulePaused"] is False and nightly["retention"]["keep_last"] == 5
    assert jobs["plain"]["schedule"] is None and jobs["plain"]["nextAt"] is None
    assert data(url, MANIFESTS, admin, job="nightly")["backupManifests"] == []

    # a backup triggered answers with its work; its manifest is listed as the target holds it
    made = data(url, TRIGGER, admin, job="nightly")["triggerBackup"]
    assert (made["__typename"], made["saga"], made["status"]) == (
        "BackupRun", "backups.backup", "completed"), made
    backup_id = made["output"]["id"]
    listed = data(url, MANIFESTS, admin, job="nightly")["backupManifests"]
    assert [m["id"] for m in listed] == [backup_id]
    manifest = listed[0]
    blob = (tmp_path / "backups" / "nightly" / backup_id / "data").read_bytes()
    assert (manifest["size"], manifest["sha256"], manifest["md5"]) == (
        len(blob), hashlib.sha256(blob).hexdigest(), hashlib.md5(blob).hexdigest())
    assert manifest["verified"] is True and manifest["error"] is None
    assert manifest["completedAt"] >= manifest["createdAt"] > 0
    assert [s["step"] for s in manifest["steps"]] == ["source", "zstd", "aes-gcm"]
    assert manifest["steps"][-1]["sha256"] == manifest["sha256"]
    assert manifest["steps"][0]["size"] > manifest["steps"][1]["size"]  # zstd compressed
    # by target: this job's, not the other target's
    assert [m["id"] for m in data(url, MANIFESTS, admin, target="here")["backupManifests"]
            ] == [backup_id]
    assert data(url, MANIFESTS, admin, target="there")["backupManifests"] == []
    unknown = post(url, MANIFESTS, admin, job="weekly")
    assert "job: unknown backup job 'weekly' (the jobs are: nightly, plain)" in \
        unknown["errors"][0]["message"]
    bad = data(url, TRIGGER, admin, job="weekly")["triggerBackup"]
    assert bad["__typename"] == "InvalidInput" and "'weekly'" in bad["message"], bad

    # the integrity check recomputes the checksums from the target
    checked = data(url, VERIFY, admin, job="nightly", backup=backup_id)["verifyBackup"]
    assert checked["status"] == "completed", checked
    assert (checked["output"]["sha256"], checked["output"]["ok"]) == (manifest["sha256"], True)

    # a restore into the existing source is refused unless asked; with replace, rolled back
    add_rows(tmp_path / "app.sqlite", "after the backup")
    changed = sqlite_rows(tmp_path / "app.sqlite")
    refused = data(url, RESTORE, admin, job="nightly", backup=backup_id,
                   replace=False)["restoreBackup"]
    assert (refused["status"], refused["stage"]) == ("failed", "load"), refused
    assert "replace" in refused["error"]
    assert sqlite_rows(tmp_path / "app.sqlite") == changed
    restored = data(url, RESTORE, admin, job="nightly", backup=backup_id,
                    replace=True)["restoreBackup"]
    assert restored["status"] == "completed", restored
    assert len(sqlite_rows(tmp_path / "app.sqlite")) == 400
    back = data(url, ROLLBACK, admin, id=restored["workId"])["rollbackRestore"]
    assert (back["saga"], back["status"]) == ("backups.rollback", "completed"), back
    assert sqlite_rows(tmp_path / "app.sqlite") == changed
    wrong = data(url, ROLLBACK, admin, id=made["workId"])["rollbackRestore"]
    assert (wrong["__typename"], wrong["field"]) == ("NotFound", "workId")
    failed_restore = data(url, ROLLBACK, admin, id=refused["workId"])["rollbackRestore"]
    assert (failed_restore["__typename"], failed_restore["state"]) == ("WrongState", "failed")

    # a corrupted object fails the check, naming what differs
    second = data(url, TRIGGER, admin, job="nightly")["triggerBackup"]["output"]["id"]
    data_file = tmp_path / "backups" / "nightly" / second / "data"
    altered = bytearray(data_file.read_bytes())
    altered[len(altered) // 2] ^= 0x01
    data_file.write_bytes(bytes(altered))
    broken = data(url, VERIFY, admin, job="nightly", backup=second)["verifyBackup"]
    assert (broken["status"], broken["stage"]) == ("failed", "check"), broken
    assert "the object's sha256 is" in broken["error"]
    # one truncated is no longer verified in the list (what retention counts)
    data_file.write_bytes(bytes(altered[:100]))
    listed = {m["id"]: m for m in data(url, MANIFESTS, admin, job="nightly")["backupManifests"]}
    assert (listed[second]["verified"], listed[backup_id]["verified"]) == (False, True)


def test_clients_without_write_or_admin_are_refused_the_mutations(
        served: dict[str, Any], tmp_path: Path) -> None:
    url, admin, store = served["url"], served["token"], served["store"]
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps([
        {"subject": "group:readers", "actions": ["read"]},
        {"subject": "group:others", "actions": ["read", "write"], "sagas": ["demo*"]},
        {"subject": "group:operators", "actions": ["read", "write"],
         "sagas": ["backups.*"]}]))
    done = cli("policy", "--store", store, "set", str(policy))
    assert done.returncode == 0, done.stderr
    tokens = {}
    for name, group in (("viewer", "readers"), ("operator", "operators"),
                        ("outsider", "others")):
        made = cli("token", "--store", store, "create", name, "--group", group)
        assert made.returncode == 0, made.stderr
        tokens[name] = made.stdout.strip()
    viewer, operator, outsider = tokens["viewer"], tokens["operator"], tokens["outsider"]
    assert admin_token(store, "another") != viewer
    # reading is allowed; no mutation is, and nothing runs
    assert [j["name"] for j in data(url, JOBS, viewer)["backupJobs"]] == ["nightly", "plain"]
    for query, variables in ((TRIGGER, {"job": "nightly"}),
                             (VERIFY, {"job": "nightly", "backup": "latest"}),
                             (RESTORE, {"job": "nightly", "backup": "latest",
                                        "replace": True}),
                             (ROLLBACK, {"id": "x"})):
        refused = post(url, query, viewer, **variables)
        assert refused["data"] is None, refused
        assert refused["errors"][0]["extensions"]["code"] == "forbidden", refused
    assert not (tmp_path / "backups").exists()
    # write on the pack's sagas: a backup and a check, but a restore needs admin
    made = data(url, TRIGGER, operator, job="nightly")["triggerBackup"]
    assert made["status"] == "completed", made
    checked = data(url, VERIFY, operator, job="nightly", backup="latest")["verifyBackup"]
    assert checked["status"] == "completed", checked
    for query, variables in ((RESTORE, {"job": "nightly", "backup": "latest",
                                        "replace": True}),
                             (ROLLBACK, {"id": made["workId"]})):
        refused = post(url, query, operator, **variables)
        assert refused["errors"][0]["extensions"] == {"code": "forbidden",
                                                      "action": "admin"}, refused
    counted = data(url, '{ allWorks(saga: "backups.restore") { totalCount } }', admin)
    assert counted["allWorks"]["totalCount"] == 0
    # a client whose policies name none of the pack's sagas sees no job and no backup,
    # and may not start one (write on other sagas is not write on these)
    assert data(url, JOBS, outsider)["backupJobs"] == []
    assert data(url, MANIFESTS, outsider)["backupManifests"] == []
    assert len(data(url, MANIFESTS, operator)["backupManifests"]) == 1
    refused = post(url, TRIGGER, outsider, job="nightly")
    assert refused["errors"][0]["extensions"]["code"] == "forbidden", refused


def test_a_backup_outliving_its_wait_answers_as_it_is_and_goes_on(
        served: dict[str, Any], tmp_path: Path) -> None:
    """The source's lock held elsewhere: the backup waits for it past the mutation's
    wait, which answers the work as it is then; the same request id answers the same
    work; once the lock is let go the backup completes."""
    url, admin, store = served["url"], served["token"], served["store"]

    async def lock(release: bool) -> None:
        async with SqlStore.open(store) as opened:
            locks = LockService(opened)
            if release:
                assert await locks.release("backups.source:db", "test/holder")
            else:
                await locks.acquire("backups.source:db", "test/holder", ttl=120)

    anyio.run(lock, False)
    query = f"""mutation($rid: String) {{ triggerBackup(job: "nightly", wait: 1,
      requestId: $rid) {{ {RUN} }} }}"""
    going = data(url, query, admin, rid="r-1")["triggerBackup"]
    assert going["__typename"] == "BackupRun", going
    assert going["status"] in ("pending", "running", "waiting"), going
    again = data(url, query, admin, rid="r-1")["triggerBackup"]
    assert again["workId"] == going["workId"]
    anyio.run(lock, True)
    for _ in range(300):
        work = data(url, WORK, admin, id=going["workId"])["work"]
        if work["status"] == "completed":
            break
        anyio.run(anyio.sleep, 0.1)
    assert work["status"] == "completed", work
    listed = data(url, MANIFESTS, admin, job="nightly")["backupManifests"]
    assert [m["id"] for m in listed] == [work["output"]["id"]]
    bad = data(url, 'mutation { triggerBackup(job: "nightly", wait: 0) { __typename '
               '... on InvalidInput { field } } }', admin)["triggerBackup"]
    assert bad == {"__typename": "InvalidInput", "field": "wait"}
