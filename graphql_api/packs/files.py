"""The asset manager: the files pack's part of the API (a
:class:`graphql_api.extensions.ApiPart`), loaded only by ``stepsaga serve`` through
:func:`.app.files_app` (the sagas never import this module, nor HTTP or GraphQL).

HTTP routes beside ``/graphql``, behind the server's sign-in (a bearer token or a
session), each running a file saga (the request's principal needs ``write`` on
``files.upload``, ``files.delete``; ``read`` on ``files.download``, ``files.list``):

- ``POST /files/{bucket}``: a multipart form, streamed to the staging directory as it
  comes (no bound on its size): a ``file`` part (its filename is the key unless a
  ``key`` field is given; its Content-Type the file's unless ``content_type`` is) and
  optionally ``replace=true``. 201 with the upload's record.
- ``PUT /files/{bucket}/{key}``: the body is the file (its Content-Type the file's),
  ``?replace=true`` to replace one. 201.
- ``GET /files/{bucket}/{key}``: the file, streamed, every segment checked as it goes
  (after ``files.download`` checked it whole: a tampered file is refused before its
  first byte is sent), with its Content-Type; a ``Range: bytes=A-B`` (or ``A-``,
  ``-N``) gets 206 and those bytes: only the segments holding them are read and
  checked, first by ``files.download`` then as they stream (another Range, several
  ranges: the whole file).
- ``DELETE /files/{bucket}/{key}``: 200 with the record.
- ``GET /files/{bucket}?prefix=&after=&limit=``: a page of names, ``next`` the
  cursor of the next page (null at the end).

Errors are JSON ``{"error", "type"}``: 400 bad input (naming the field), 403 not
allowed, 404 no such file, 409 the file exists (no replace), 416 a range outside the
file, 422 the stored file fails its checks (it is never sent), 429 the client's quota
of works is spent (graphql_api.limits: each route's work is charged to it, with its
RateLimit headers), 503 the repository. The server's request rate limits hold for
these routes as for ``/graphql``.

GraphQL: ``files(bucket, prefix, after, first)`` (read), ``deleteFile``, ``copyFile``
and ``moveFile`` (write) running the sagas, each answering a ``FileOperation`` (the
work's id, status, record and error) or a typed error (``InvalidInput`` for a bad
bucket or name, ``QuotaExceeded``...), and the ``fileChanges(bucket, after)``
subscription (:mod:`.changes`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from fnmatch import fnmatchcase
from typing import Annotated, Any, cast

import anyio
import strawberry
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from strawberry.scalars import JSON
from strawberry.types import Info

from graphql_api.access import may_read, require
from graphql_api.auth import principal_of
from graphql_api.context import service_of
from graphql_api.extensions import ApiPart, run_saga
from graphql_api.results import (
    Conflict,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    WrongState,
    error_result,
    quota_exceeded,
)
from graphql_api.service import ApiError
from workers.actions.files.buckets import is_byte_range, open_bucket
from workers.actions.files.changes import CHANGES, change_of
from workers.actions.files.config import FilesConfig
from workers.actions.files.errors import FilesError
from workers.actions.files.names import check_key
from workers.actions.files.staging import Staged, discard

__all__ = ["files_part"]

_LONG = 3600.0  # seconds a route waits for a saga moving a big file
# seconds a GraphQL field waits for its work, under the server's serve.query_timeout (30 s
# by default); after it, WrongState: the work goes on (its id in the message)
_FIELD_WAIT = 25.0
_FIELD_BYTES = 4096  # the bound on a form's fields other than the file
_STATUS = {"FilesConfigError": 400, "MissingFileError": 404, "ExistingFileError": 409,
           "TamperedError": 422, "WrongKeyError": 422, "RepositoryError": 503,
           "InputSchemaError": 400}


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": message, "type": kind}, status_code=status)


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def _run(service: Any, request: Request, action: str, saga: str, input: Any,
               wait: float = 60.0) -> dict[str, Any]:
    """Run ``saga`` for the request's principal (which needs ``action`` on it): the
    work's output, or :class:`_Refused` with the response telling why not."""
    who = principal_of(request.scope)
    if not (await service.policies()).allows(who, action, {"saga": saga, "input": input}):
        name = getattr(who, "name", None)
        raise _Refused(_error(403, f"forbidden: {name!r} may not {action} works of saga "
                                   f"{saga!r}", "forbidden"))
    client = None if who is None else (who, request.client.host if request.client else None)
    try:
        row = await service.run_work(saga, input, wait=wait, client=client)
    except ApiError as exc:  # the work's quota (429, with its headers) or a bad input
        status = {"invalid_input": 400, "quota_exceeded": 429}.get(exc.kind, 503)
        response = _error(status, exc.message, exc.kind)
        response.headers.update(exc.headers)
        raise _Refused(response) from None
    if row["status"] != "completed":
        error = row.get("error") or {}
        kind = str(error.get("type", "")).rpartition(".")[2]
        raise _Refused(_error(_STATUS.get(kind, 500), str(error.get("message", row["status"])),
                              kind or row["status"]))
    output: dict[str, Any] = row["output"]
    return output


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


def _routes(config: FilesConfig, service: Any) -> list[Route]:
    async def early(request: Request, key: str | None = None) -> Response | None:
        """An upload naming an unknown bucket or a bad key, or by a principal who may
        not write works of files.upload at all, is refused before its body is read
        (the saga and its policy check with the whole input again)."""
        try:
            spec = config.bucket(request.path_params["bucket"])
            if key is not None:
                check_key(key, encrypted=bool(spec.encrypt_names))
        except FilesError as exc:
            return _error(400, str(exc), type(exc).__name__)
        who = principal_of(request.scope)
        globs = (await service.policies()).sagas(who, "write")
        if globs is not None and not any(fnmatchcase("files.upload", g) for g in globs):
            return _error(403, f"forbidden: {getattr(who, 'name', None)!r} may not write "
                               "works of saga 'files.upload'", "forbidden")
        return None

    async def upload_form(request: Request) -> Response:
        bucket = request.path_params["bucket"]
        refused = await early(request)
        if refused is not None:
            return refused
        try:
            fields, staged = await _parse_form(request, config)
        except FilesError as exc:
            return _error(400, str(exc), type(exc).__name__)
        if staged is None:
            return _error(400, "file: the form has no 'file' part", "FilesConfigError")
        done = staged.pop("meta")
        key = fields.get("key") or done.get("filename")
        input = {"bucket": bucket, "key": key, "staged": staged["staged"],
                 "content_type": fields.get("content_type") or done.get("content_type")
                 or "application/octet-stream", "replace": _flag(fields.get("replace"))}
        return await _upload(request, input)

    async def upload_body(request: Request) -> Response:
        refused = await early(request, request.path_params["key"])
        if refused is not None:
            return refused
        staged = Staged(config)
        try:
            async for batch in _batched(request):
                await anyio.to_thread.run_sync(staged.write, batch)
        except BaseException:
            staged.abort()
            raise
        made = staged.done()
        input = {"bucket": request.path_params["bucket"], "key": request.path_params["key"],
                 "staged": made["staged"],
                 "content_type": request.headers.get("content-type")
                 or "application/octet-stream",
                 "replace": _flag(request.query_params.get("replace"))}
        return await _upload(request, input)

    async def _upload(request: Request, input: dict[str, Any]) -> Response:
        try:
            done = await _run(service, request, "write", "files.upload", input, _LONG)
        except _Refused as refused:
            return refused.response
        finally:
            discard(config, input["staged"])  # taken already, unless the upload failed
        return JSONResponse(done, status_code=201)

    async def download(request: Request) -> Response:
        bucket, key = request.path_params["bucket"], request.path_params["key"]
        asked = request.headers.get("range")
        input = {"bucket": bucket, "key": key}
        if asked and is_byte_range(asked):  # else (several ranges...) the whole file
            input["range"] = asked.strip()
        try:
            found = await _run(service, request, "read", "files.download", input, _LONG)
        except _Refused as refused:
            return refused.response
        size = int(found["size"])
        headers = {"Accept-Ranges": "bytes"}
        if "range" not in input:
            first, last, status = 0, size - 1, 200
            headers["X-Content-SHA256"] = found["sha256"]
        elif found["range"] is None:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        else:
            (first, last), status = found["range"], 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        headers["Content-Length"] = str(max(0, last - first + 1))
        return StreamingResponse(_stream(config, bucket, key, first, last + 1),
                                 status_code=status, headers=headers,
                                 media_type=found["content_type"])

    async def delete(request: Request) -> Response:
        try:
            done = await _run(service, request, "write", "files.delete",
                              {"bucket": request.path_params["bucket"],
                               "key": request.path_params["key"]})
        except _Refused as refused:
            return refused.response
        return JSONResponse(done)

    async def listing(request: Request) -> Response:
        query = request.query_params
        input: dict[str, Any] = {"bucket": request.path_params["bucket"],
                                 "prefix": query.get("prefix", ""),
                                 "after": query.get("after", "")}
        if "limit" in query:
            if not query["limit"].isdigit():
                return _error(400, f"limit: expected a whole number, got {query['limit']!r}",
                              "FilesConfigError")
            input["limit"] = int(query["limit"])
        try:
            done = await _run(service, request, "read", "files.list", input)
        except _Refused as refused:
            return refused.response
        return JSONResponse({"files": done["files"], "next": done["next"]})

    return [Route("/files/{bucket}", upload_form, methods=["POST"]),
            Route("/files/{bucket}", listing, methods=["GET"]),
            Route("/files/{bucket}/{key:path}", upload_body, methods=["PUT"]),
            Route("/files/{bucket}/{key:path}", download, methods=["GET"]),
            Route("/files/{bucket}/{key:path}", delete, methods=["DELETE"])]


async def _stream(config: FilesConfig, bucket: str, key: str, first: int, stop: int
                  ) -> AsyncIterator[bytes]:
    """The bytes [first, stop) of a file, read in a thread, checked as they come."""
    def opened() -> Iterator[bytes]:
        _, body = open_bucket(config, bucket).open_part(key, first, stop)
        return body

    body = await anyio.to_thread.run_sync(opened)
    try:
        while (chunk := await anyio.to_thread.run_sync(next, body, None)) is not None:
            yield chunk
    finally:
        await anyio.to_thread.run_sync(getattr(body, "close", lambda: None))


async def _batched(request: Request, size: int = 1 << 20) -> AsyncIterator[bytes]:
    """A request's body in pieces of about ``size`` bytes (the server gives it in small
    ones; each piece goes to a thread to be written, a hand-off per piece)."""
    batch = bytearray()
    async for chunk in request.stream():
        batch += chunk
        if len(batch) >= size:
            yield bytes(batch)
            batch.clear()
    if batch:
        yield bytes(batch)


async def _parse_form(request: Request, config: FilesConfig
                      ) -> tuple[dict[str, str], dict[str, Any] | None]:
    """A multipart form's fields, its ``file`` part streamed to a staged file."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    from workers.actions.files.errors import FilesConfigError

    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise FilesConfigError("content-type: expected multipart/form-data with a boundary "
                               "(or PUT the file's bytes to /files/{bucket}/{key})")
    fields: dict[str, str] = {}
    staged: list[Staged] = []
    meta: dict[str, Any] = {}
    part: dict[str, Any] = {}

    def on_part_begin() -> None:
        part.clear()
        part.update(headers={}, field=b"", value=b"", data=bytearray(), staged=None)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def on_header_end() -> None:
        part["headers"][part["field"].lower()] = part["value"]
        part["field"] = part["value"] = b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        part["name"] = disposition.get(b"name", b"").decode()
        if part["name"] == "file":
            if staged:
                raise FilesConfigError("file: give one 'file' part per upload")
            filename = disposition.get(b"filename", b"").decode()
            meta.update(filename=filename.rpartition("/")[2] if filename else None,
                        content_type=part["headers"].get(b"content-type", b"").decode()
                        or None)
            part["staged"] = Staged(config)
            staged.append(part["staged"])

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part["staged"] is not None:
            part["staged"].write(data[start:end])
            return
        part["data"] += data[start:end]
        if len(part["data"]) > _FIELD_BYTES:
            raise FilesConfigError(f"{part['name']}: a form field is at most {_FIELD_BYTES} "
                                   "bytes")

    def on_part_end() -> None:
        if part["staged"] is None and part.get("name"):
            try:
                fields[part["name"]] = part["data"].decode()
            except UnicodeDecodeError:
                raise FilesConfigError(f"{part['name']}: not UTF-8 text") from None

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        async for batch in _batched(request):
            await anyio.to_thread.run_sync(parser.write, batch)
        parser.finalize()
    except BaseException as exc:
        for one in staged:
            one.abort()
        if isinstance(exc, ValueError) and not isinstance(exc, FilesError):
            raise FilesConfigError(f"the multipart form is malformed: {exc}") from None
        raise
    if not staged:
        return fields, None
    made = staged[0].done()
    return fields, {**made, "meta": meta}


# ------------------------------------------------------------------ GraphQL


@strawberry.type
class FileEntry:
    key: str
    stored_size: float


@strawberry.type
class FilePage:
    files: list[FileEntry]
    next: str | None


@strawberry.type
class FileOperation:
    """A file saga's work once it ended: ``record`` is its output (the change), or
    ``error`` says why it failed."""

    work_id: str
    status: str
    record: JSON | None
    error: str | None


@strawberry.type
class FileChange:
    """A completed operation on a bucket; ``cursor`` resumes after it."""

    cursor: str
    work_id: str
    op: str
    bucket: str
    key: str | None
    record: JSON


def _operation(row: dict[str, Any]) -> FileOperation:
    error = row.get("error") or None
    return FileOperation(work_id=row["work_id"], status=row["status"], record=row.get("output"),
                         error=error.get("message") if isinstance(error, dict) else error)


FileOperationResult = Annotated[
    FileOperation | NotFound | InvalidInput | WrongState | Conflict | QuotaExceeded,
    strawberry.union("FileOperationResult")]


async def _saga(info: Info, saga: str, input: dict[str, Any]
                ) -> FileOperation | NotFound | InvalidInput | WrongState | Conflict | \
        QuotaExceeded:
    """The work of ``saga`` run to its end, or the typed error it was refused with."""
    try:
        return _operation(await run_saga(info, saga, input, wait=_FIELD_WAIT))
    except ApiError as exc:
        if exc.kind == "quota_exceeded":
            return quota_exceeded(exc, info)
        return error_result(exc)


@strawberry.type
class FilesQuery:
    @strawberry.field
    async def files(self, info: Info, bucket: str, prefix: str = "", after: str = "",
                    first: int = 100) -> FilePage:
        """A page of a bucket's files (runs ``files.list``); ``next``: the ``after`` of
        the next page."""
        input = {"bucket": bucket, "prefix": prefix, "after": after, "limit": first}
        await require(info, "read", {"saga": "files.list", "input": input})
        try:
            row = await run_saga(info, "files.list", input, check=False, wait=_FIELD_WAIT)
        except ApiError as exc:
            raise ValueError(exc.message) from None
        if row["status"] != "completed":
            raise ValueError((row.get("error") or {}).get("message", row["status"]))
        out = row["output"]
        return FilePage(files=[FileEntry(key=f["key"], stored_size=f["stored_size"])
                               for f in out["files"]], next=out["next"])


@strawberry.type
class FilesMutation:
    @strawberry.mutation
    async def delete_file(self, info: Info, bucket: str, key: str) -> FileOperationResult:
        """Delete a file (runs ``files.delete``)."""
        return await _saga(info, "files.delete", {"bucket": bucket, "key": key})

    @strawberry.mutation
    async def copy_file(self, info: Info, bucket: str, key: str, to_key: str,
                        to_bucket: str | None = None, replace: bool = False
                        ) -> FileOperationResult:
        """Copy a file (runs ``files.copy``; ``to_bucket`` defaults to ``bucket``)."""
        return await _saga(info, "files.copy", {
            "bucket": bucket, "key": key, "to_bucket": to_bucket or bucket, "to_key": to_key,
            "replace": replace})

    @strawberry.mutation
    async def move_file(self, info: Info, bucket: str, key: str, to_key: str,
                        to_bucket: str | None = None, replace: bool = False
                        ) -> FileOperationResult:
        """Move a file (runs ``files.move``): a move that fails leaves the source."""
        return await _saga(info, "files.move", {
            "bucket": bucket, "key": key, "to_bucket": to_bucket or bucket, "to_key": to_key,
            "replace": replace})


@strawberry.type
class FilesSubscription:
    @strawberry.subscription
    async def file_changes(self, info: Info, bucket: str | None = None,
                           after: str | None = None) -> AsyncGenerator[FileChange, None]:
        """Uploads, deletions, copies and moves as they complete (of works the
        request may read), touching ``bucket`` (or any), after cursor ``after``."""
        from engine.events import WORK_COMPLETED

        if after is not None and not after.isdigit():
            raise ValueError(f"after must be a change's cursor, got {after!r:.40}")
        service = service_of(info)
        async with service.feed.subscribe(after=None if after is None else int(after),
                                          types=(WORK_COMPLETED,)) as events:
            async for recorded in events:
                row = await service.store.work(recorded.work_id)
                if row is None:
                    continue
                found = change_of(recorded, row["saga"])
                if found is None or found.op not in CHANGES or \
                        (bucket is not None and not found.touches(bucket)) or \
                        not await may_read(info.context, row):
                    continue
                yield FileChange(cursor=str(found.cursor), work_id=found.work_id,
                                 op=found.op, bucket=found.bucket, key=found.key,
                                 record=cast(JSON, found.record))


def files_part(config: FilesConfig) -> ApiPart:
    """The pack's part of the API over ``config``."""
    return ApiPart(name="files", query=FilesQuery, mutation=FilesMutation,
                   subscription=FilesSubscription,
                   actions={"files": "read", "deleteFile": "write", "copyFile": "write",
                            "moveFile": "write", "fileChanges": "read"},
                   routes=lambda service: _routes(config, service),
                   bodies={"/files": None})
