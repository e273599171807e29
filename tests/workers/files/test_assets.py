"""The asset manager on a real ``stepsaga serve --app workers.actions.files:app
--config FILE``: uploads (a streamed multipart form, a PUT), downloads (whole and by
Range, with the content type), listing with pagination, deletion, each a work of the
file sagas, behind sign-in with a bearer token and under the policies; a tampered
file is refused, never sent; the GraphQL fields and the fileChanges subscription."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql import Client, GraphQLRequest, gql
from gql.transport.websockets import WebsocketsTransport

from tests.auth import bearer

from ...graphql_api.wire import ROOT, Served
from .helpers import SECRET_HEX, signer_pem

SIZE = 3 * 1024 * 1024 + 4321


def _config(tmp_path: Path, endpoint: str, bucket: str, extra: str = "") -> Path:
    config = tmp_path / "stepsaga.toml"
    config.write_text(extra + f"""
[files]
staging = "{tmp_path}/staging"
[files.keys.main]
key = "{SECRET_HEX}"
[files.keys.signer]
kind = "ed25519"
key_file = "{signer_pem(tmp_path)}"
[files.repositories.local]
kind = "directory"
path = "{tmp_path}/repo"
[files.repositories.cloud]
kind = "s3"
bucket = "{bucket}"
prefix = "assets/"
endpoint_url = "{endpoint}"
access_key_id = "test"
secret_access_key = "test"
[files.buckets.docs]
repository = "local"
encrypt_content = "main"
sign = "hmac-sha256"
sign_key = "main"
[files.buckets.media]
repository = "cloud"
encrypt_names = "main"
encrypt_content = "main"
sign = "ed25519"
sign_key = "signer"
""")
    return config


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str,
           s3_bucket: str) -> Iterator[dict[str, Any]]:
    store = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    extra = getattr(request, "param", "")  # more of the config (indirect parametrize)
    server = Served("serve", "--store", store, "--port", "0", "--app",
                    "workers.actions.files:app", "--config",
                    str(_config(tmp_path, s3_endpoint, s3_bucket, extra)))
    try:
        ready = server.ready()
        ready["origin"] = ready["url"].removesuffix("/graphql")
        ready["store"] = store
        yield ready
    finally:
        code, _, err = server.stop()
        assert code == 0, err


def _chunks(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at:at + size]


def _multipart(boundary: str, fields: dict[str, str], filename: str, data: bytes,
               content_type: str) -> Iterator[bytes]:
    """A multipart form, as a stream of chunks (the client streams it)."""
    for name, value in fields.items():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
               f"{value}\r\n").encode()
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
           f"filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n").encode()
    yield from _chunks(data)
    yield f"\r\n--{boundary}--\r\n".encode()


def test_the_asset_routes(served: dict[str, Any], tmp_path: Path) -> None:
    origin, token = served["origin"], served["token"]
    auth = bearer(token)
    data = os.urandom(SIZE)
    with httpx.Client(base_url=origin, timeout=60) as http:
        # sign-in first
        assert http.get("/files/docs").status_code == 401
        assert http.put("/files/docs/x.txt", content=b"x").status_code == 401
        for bucket in ("docs", "media"):
            # a multipart form, streamed
            boundary = "b0undary" + os.urandom(4).hex()
            made = http.post(f"/files/{bucket}", headers={
                **auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                content=_multipart(boundary, {"key": "reports/big.bin"}, "ignored.bin", data,
                                   "application/x-big"))
            assert made.status_code == 201, made.text
            assert made.json() == {"op": "upload", "bucket": bucket, "key": "reports/big.bin",
                                   "size": SIZE, "sha256": hashlib.sha256(data).hexdigest(),
                                   "content_type": "application/x-big", "replaced": False}
            # its filename is the key when no key field is given
            named = http.post(f"/files/{bucket}", headers={
                **auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                content=_multipart(boundary, {}, "notes.txt", b"some notes\n", "text/plain"))
            assert named.status_code == 201 and named.json()["key"] == "notes.txt"
            # a PUT of the bytes; again without replace is refused, with it replaces
            put = http.put(f"/files/{bucket}/reports/small.txt", content=_chunks(b"hello"),
                           headers={**auth, "Content-Type": "text/plain; charset=utf-8"})
            assert put.status_code == 201, put.text
            again = http.put(f"/files/{bucket}/reports/small.txt", content=b"bye",
                             headers=auth)
            assert again.status_code == 409
            assert "has a file 'reports/small.txt' already" in again.json()["error"]
            replaced = http.put(f"/files/{bucket}/reports/small.txt?replace=true",
                                content=b"hello again", headers={**auth,
                                                                 "Content-Type": "text/plain"})
            assert replaced.status_code == 201 and replaced.json()["replaced"] is True
            # download: whole, streamed, with its content type
            with http.stream("GET", f"/files/{bucket}/reports/big.bin", headers=auth) as got:
                assert got.status_code == 200
                assert got.headers["content-type"] == "application/x-big"
                assert got.headers["accept-ranges"] == "bytes"
                assert int(got.headers["content-length"]) == SIZE
                body = b"".join(got.iter_bytes())
            assert body == data
            # Range requests: a span across a signed segment's edge, a tail, an open end
            for asked, first, last in (("bytes=1048000-1049999", 1048000, 1049999),
                                       ("bytes=-1000", SIZE - 1000, SIZE - 1),
                                       (f"bytes={SIZE - 10}-", SIZE - 10, SIZE - 1)):
                part = http.get(f"/files/{bucket}/reports/big.bin",
                                headers={**auth, "Range": asked})
                assert part.status_code == 206, asked
                assert part.headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
                assert part.content == data[first:last + 1]
            outside = http.get(f"/files/{bucket}/reports/big.bin",
                               headers={**auth, "Range": f"bytes={SIZE}-"})
            assert outside.status_code == 416
            assert outside.headers["content-range"] == f"bytes */{SIZE}"
            small = http.get(f"/files/{bucket}/reports/small.txt", headers=auth)
            assert small.content == b"hello again"
            assert small.headers["content-type"].startswith("text/plain")
            # list: a prefix, pages of one
            listed = http.get(f"/files/{bucket}", params={"prefix": "reports/"},
                              headers=auth).json()
            assert sorted(f["key"] for f in listed["files"]) == ["reports/big.bin",
                                                                 "reports/small.txt"]
            keys, after = [], ""
            for _ in range(5):
                page = http.get(f"/files/{bucket}", params={"limit": "1", "after": after},
                                headers=auth).json()
                keys += [f["key"] for f in page["files"]]
                if page["next"] is None:
                    break
                after = page["next"]
            assert sorted(keys) == ["notes.txt", "reports/big.bin", "reports/small.txt"]
            # delete
            gone = http.delete(f"/files/{bucket}/notes.txt", headers=auth)
            assert gone.status_code == 200 and gone.json()["op"] == "delete"
            assert http.get(f"/files/{bucket}/notes.txt", headers=auth).status_code == 404
        # bad input: named, nothing written
        for path, status, text in (("/files/nope/a.txt", 400, "bucket: unknown bucket 'nope'"),
                                   ("/files/docs/a%1Bb.txt", 400, "control characters"),
                                   ("/files/docs/a/%2E%2E/%2E%2E/b", 400, "climbs out")):
            refused = http.put(path, content=b"x", headers=auth)
            assert refused.status_code == status, (path, refused.text)
            assert text in refused.json()["error"], refused.text
        boundary = "b0undary"
        refused = http.post("/files/nope", content=_multipart(boundary, {}, "a", b"x", "a/b"),
                            headers={**auth, "Content-Type": "multipart/form-data; "
                                                            f"boundary={boundary}"})
        assert refused.status_code == 400 and "unknown bucket 'nope'" in refused.text
        no_file = http.post("/files/docs", content=b"--b\r\n\r\n--b--\r\n", headers={
            **auth, "Content-Type": "multipart/form-data; boundary=b"})
        assert no_file.status_code == 400
        assert no_file.json()["error"] == "file: the form has no 'file' part"
        not_a_form = http.post("/files/docs", content=b"x", headers={
            **auth, "Content-Type": "text/plain"})
        assert not_a_form.status_code == 400
        assert "expected multipart/form-data" in not_a_form.json()["error"]
        assert not list((tmp_path / "staging").iterdir())  # nothing left staged
        # tampered: refused with a clear error, never sent
        (stored,) = [p for p in (tmp_path / "repo" / "docs" / "reports").iterdir()
                     if p.name == "big.bin"]
        raw = bytearray(stored.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        stored.write_bytes(bytes(raw))
        refused = http.get("/files/docs/reports/big.bin", headers=auth)
        assert refused.status_code == 422
        assert "does not verify at segment 1" in refused.json()["error"]
        assert data[2 * 1024 * 1024:2 * 1024 * 1024 + 64] not in refused.content
    # under the policies: a reader may list and download, not upload or delete
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps([{"subject": "group:readers", "actions": ["read"]}]))
    cli = [sys.executable, "-m", "graphql_api.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([*cli, "policy", "--store", served["store"], "set", str(policy)],
                          cwd=ROOT, env=env, timeout=60).returncode == 0
    viewer = subprocess.run([*cli, "token", "--store", served["store"], "create", "viewer",
                             "--group", "readers"], cwd=ROOT, env=env, timeout=60,
                            capture_output=True, text=True).stdout.strip()
    reader = bearer(viewer)
    with httpx.Client(base_url=origin, timeout=60) as http:
        assert http.get("/files/docs/reports/small.txt", headers=reader).content == \
            b"hello again"
        assert http.get("/files/docs", headers=reader).status_code == 200
        refused = http.put("/files/docs/new.txt", content=b"x", headers=reader)
        assert refused.status_code == 403
        assert "'viewer' may not write works of saga 'files.upload'" in refused.json()["error"]
        assert http.delete("/files/docs/reports/small.txt", headers=reader).status_code == 403
        boundary = "b0undary"
        form = http.post("/files/docs", content=_multipart(boundary, {}, "a.bin", data, "a/b"),
                         headers={**reader, "Content-Type": "multipart/form-data; "
                                                           f"boundary={boundary}"})
        assert form.status_code == 403 and "may not write" in form.json()["error"]
        assert not list((tmp_path / "staging").iterdir())  # refused before it was read
        assert http.get("/files/docs/reports/small.txt", headers=auth).status_code == 200


CHANGES = gql("""subscription($bucket: String, $after: String) {
  fileChanges(bucket: $bucket, after: $after) { cursor op bucket key record }
}""")


async def test_the_graphql_fields_and_the_change_subscription(
        served: dict[str, Any]) -> None:
    url, origin, auth = served["url"], served["origin"], bearer(served["token"])

    def ask(query: str, **variables: Any) -> dict[str, Any]:
        answer = httpx.post(url, json={"query": query, "variables": variables}, headers=auth,
                            timeout=60)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    async with httpx.AsyncClient(base_url=origin, timeout=60) as http:
        for key in ("a.txt", "b.txt"):
            made = await http.put(f"/files/media/{key}", content=key.encode(), headers=auth)
            assert made.status_code == 201
    page = ask('{ files(bucket: "media", first: 10) { files { key storedSize } next } }')
    assert sorted(f["key"] for f in page["data"]["files"]["files"]) == ["a.txt", "b.txt"]
    moved = ask('mutation { moveFile(bucket: "media", key: "a.txt", toBucket: "docs", '
                'toKey: "from-media.txt") { ... on FileOperation { status record error } } }'
                )["data"]["moveFile"]
    assert moved["status"] == "completed", moved
    assert moved["record"]["to_bucket"] == "docs" and moved["record"]["size"] == 5
    copied = ask('mutation { copyFile(bucket: "media", key: "b.txt", toKey: "c.txt") '
                 '{ ... on FileOperation { status record } } }')["data"]["copyFile"]
    assert copied["status"] == "completed"
    failed = ask('mutation { deleteFile(bucket: "media", key: "a.txt") '
                 '{ ... on FileOperation { status error } } }')
    assert failed["data"]["deleteFile"] == {
        "status": "failed", "error": "key: bucket 'media' has no file 'a.txt'"}
    deleted = ask('mutation { deleteFile(bucket: "media", key: "b.txt") '
                  '{ ... on FileOperation { status } } }')
    assert deleted["data"]["deleteFile"]["status"] == "completed"
    unknown = ask('mutation { deleteFile(bucket: "nope", key: "b.txt") '
                  '{ __typename ... on InvalidInput { message field } } }')["data"]["deleteFile"]
    assert unknown["__typename"] == "InvalidInput" and unknown["field"] == "input"
    assert "bucket: 'nope' is not one of" in unknown["message"]
    refused = ask('{ files(bucket: "media", prefix: "../") { next } }')
    assert "prefix: '..' climbs out" in refused["errors"][0]["message"]
    async with httpx.AsyncClient(base_url=origin, timeout=60) as http:
        assert (await http.get("/files/docs/from-media.txt", headers=auth)).content == b"a.txt"
    # the changes of bucket media from the start, through the subscription
    transport = WebsocketsTransport(url=url.replace("http://", "ws://"), headers=auth,
                                    subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL])
    seen: list[dict[str, Any]] = []
    async with Client(transport=transport) as session:
        async for found in session.subscribe(GraphQLRequest(CHANGES, variable_values={
                "bucket": "media", "after": "0"})):
            seen.append(found["fileChanges"])
            if len(seen) == 5:
                break
    assert [(c["op"], c["key"]) for c in seen] == [
        ("upload", "a.txt"), ("upload", "b.txt"), ("move", "a.txt"), ("copy", "b.txt"),
        ("delete", "b.txt")]
    assert seen[2]["record"]["to_key"] == "from-media.txt"
    assert [int(c["cursor"]) for c in seen] == sorted(int(c["cursor"]) for c in seen)


QUOTA = """
[[limits.quota]]
name = "uploads"
clients = ["*"]
sagas = ["files.upload"]
works = 2
period = 3600.0
"""


@pytest.mark.parametrize("served", [QUOTA], indirect=True)
def test_a_clients_quota_of_works_holds_for_the_routes(served: dict[str, Any],
                                                      tmp_path: Path) -> None:
    auth = bearer(served["token"])
    with httpx.Client(base_url=served["origin"], timeout=60) as http:
        for key in ("a.txt", "b.txt"):
            assert http.put(f"/files/docs/{key}", content=b"x", headers=auth).status_code == 201
        spent = http.put("/files/docs/c.txt", content=b"x", headers=auth)
        assert spent.status_code == 429, spent.text
        assert spent.json()["type"] == "quota_exceeded"
        assert "quota 'uploads'" in spent.json()["error"]
        assert "ratelimit" in spent.headers and "retry-after" in spent.headers
        assert http.get("/files/docs/a.txt", headers=auth).content == b"x"  # not counted
        assert http.get("/files/docs/c.txt", headers=auth).status_code == 404
    assert not list((tmp_path / "staging").iterdir())
