"""Files: a big file through the pack's upload and download, against plain file copies
of the same bytes, and the memory it takes.

The data: one file of ``--size-mib`` (1,024 by default) random bytes from a fixed seed.
The pack's run (in a child process of its own, so its memory is its own; a bucket on a
directory repository with content encrypted, AES-256-GCM, and signed, HMAC-SHA256, as
``--mode`` says): the file staged (what the upload route does with a request's body),
``files.upload`` (streamed, encrypted, signed, written), ``files.download`` (the whole
file read and checked) and the file read back, checked again as it streams, into an
output file. The baseline, in the same run on the same disk: the file copied in and
copied out again (``shutil.copyfile`` twice: what moving it up and down costs with no
pack at all).

- ``files.ratio_vs_copy``: the copies' time over the pack's (above 1: the pack is
  faster; 0.25: it takes four times as long).
- ``files.memory_growth_mib``: the child's peak resident memory (VmHWM) above what it
  held idle, ready, just before the upload.
- ``files.http``: the same file through the asset routes of a real ``stepsaga serve
  --app workers.actions.files:app`` (its own process, a bearer token): a streamed PUT,
  then a streamed GET into a file; ``ratio_vs_copy`` as above, and
  ``memory_growth_mib`` of the server process (above its idle memory once it serves).
  ``--no-http``: the pack's run alone.

``--quick``: 128 MiB (a smoke run of a few seconds).

    python benchmarks/files.py --quick
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY_HEX = "42" * 32
MODES = {"plain": {}, "encrypted": {"encrypt_content": "k"},
         "signed": {"sign": "hmac-sha256", "sign_key": "k"},
         "both": {"encrypt_content": "k", "sign": "hmac-sha256", "sign_key": "k"}}


def generate(path: Path, size: int, seed: int) -> str:
    """``size`` random bytes from ``seed`` into ``path``; their sha256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 1 << 20))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def child(settings_file: str) -> None:
    """Upload and download the file once; print the times and the memory taken."""
    import anyio

    from engine import Runtime
    from engine.store import SqlStore
    from workers.actions.files import files_app, open_bucket, parse, stage

    settings = json.loads(Path(settings_file).read_text())
    config = parse(settings["files"])
    app = files_app(config=config, api=False)
    open_bucket(config, "bench").storage.page("bench/", "", 1)  # loaded, ready

    def status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def chunks(path: str) -> Any:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    def read_back(out: str) -> str:
        digest = hashlib.sha256()
        _, body = open_bucket(config, "bench").open("big.bin")
        with open(out, "wb") as f:
            for chunk in body:
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        return digest.hexdigest()

    async def main() -> dict[str, Any]:
        async with SqlStore.open(settings["store"]) as store, \
                Runtime(app.sagas, store=store) as rt:
            idle = status("VmRSS")
            began = time.perf_counter()
            staged = await anyio.to_thread.run_sync(stage, config, chunks(settings["source"]))
            up = await rt.run("files.upload", {"bucket": "bench", "key": "big.bin",
                                               "content_type": "application/octet-stream",
                                               **staged})
            uploaded = time.perf_counter()
            down = await rt.run("files.download", {"bucket": "bench", "key": "big.bin"})
            sha = await anyio.to_thread.run_sync(read_back, settings["out"])
            ended = time.perf_counter()
            peak = status("VmHWM")
        for done in (up, down):
            if done.status != "completed":
                raise SystemExit(f"{done.saga} failed: {done.error}")
        return {"seconds": ended - began, "upload_seconds": uploaded - began,
                "download_seconds": ended - uploaded, "sha256": sha,
                "idle_rss": idle, "peak_rss": peak,
                "growth_mib": round((peak - idle) / 2**20, 1)}

    print(json.dumps(anyio.run(main)))


def copies(source: Path, work: Path) -> float:
    """The baseline: the file copied in, then out again, each synced."""
    began = time.perf_counter()
    for src, dst in ((source, work / "copy-in"), (work / "copy-in", work / "copy-out")):
        shutil.copyfile(src, dst)
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - began
    for name in ("copy-in", "copy-out"):
        (work / name).unlink()
    return seconds


def over_http(work: Path, settings: dict[str, Any], source: Path) -> dict[str, Any]:
    """The file PUT to and GET from a real stepsaga serve of the pack: seconds, sha256
    of what came back, the server's memory growth."""
    import httpx

    sys.path.insert(0, str(ROOT))
    from tests.auth import admin_token

    config = work / "http.toml"
    files = settings["files"]
    config.write_text(
        f'[files]\nstaging = "{files["staging"]}-http"\n'
        f'[files.keys.k]\nkey = "{KEY_HEX}"\n'
        f'[files.repositories.here]\nkind = "directory"\npath = "{work}/repo-http"\n'
        '[files.buckets.bench]\nrepository = "here"\n' + "".join(
            f'{key} = "{value}"\n' for key, value in files["buckets"]["bench"].items()
            if key != "repository"))
    store = f"sqlite+aiosqlite:///{work}/http.sqlite"
    log = open(work / "serve.log", "w+")
    server = subprocess.Popen(
        [sys.executable, "-m", "graphql_api.cli", "serve", "--store", store, "--port", "0",
         "--app", "workers.actions.files:app", "--config", str(config)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=log,
        text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line:
            log.seek(0)
            raise SystemExit(f"stepsaga serve did not start: {log.read()[-2000:]}")
        origin = json.loads(line)["url"].removesuffix("/graphql")
        auth = {"Authorization": f"Bearer {admin_token(store, 'bench')}"}

        def status(field: str) -> int:
            for found in Path(f"/proc/{server.pid}/status").read_text().splitlines():
                if found.startswith(field + ":"):
                    return int(found.split()[1]) * 1024
            raise KeyError(field)

        def chunks() -> Any:
            with open(source, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

        idle = status("VmRSS")
        digest = hashlib.sha256()
        with httpx.Client(base_url=origin, headers=auth, timeout=3600) as http:
            began = time.perf_counter()
            put = http.put("/files/bench/big.bin", content=chunks(),
                           headers={"Content-Type": "application/octet-stream"})
            if put.status_code != 201:
                raise SystemExit(f"the PUT failed: {put.status_code} {put.text}")
            uploaded = time.perf_counter()
            with http.stream("GET", "/files/bench/big.bin") as got, \
                    open(work / "out-http.bin", "wb") as out:
                for chunk in got.iter_bytes(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            ended = time.perf_counter()
        peak = status("VmHWM")
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    return {"seconds": ended - began, "upload_seconds": uploaded - began,
            "download_seconds": ended - uploaded, "sha256": digest.hexdigest(),
            "growth_mib": round((peak - idle) / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="128 MiB: a smoke run")
    parser.add_argument("--mode", choices=sorted(MODES), default="both")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", default=None, help="where to work (default: a temp dir)")
    parser.add_argument("--no-http", action="store_true",
                        help="skip the run through the asset routes of stepsaga serve")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    size = 128 if args.quick else args.size_mib
    work = Path(tempfile.mkdtemp(prefix="stepsaga-files-bench-", dir=args.dir))
    try:
        source = work / "source.bin"
        sha = generate(source, size << 20, args.seed)
        subprocess.run(["sync"], check=True)
        theirs = copies(source, work)
        settings = {"store": f"sqlite+aiosqlite:///{work}/store.sqlite",
                    "source": str(source), "out": str(work / "out.bin"),
                    "files": {"staging": str(work / "staging"),
                              "keys": {"k": {"key": KEY_HEX}},
                              "repositories": {"here": {"kind": "directory",
                                                        "path": str(work / "repo")}},
                              "buckets": {"bench": {"repository": "here",
                                                    **MODES[args.mode]}}}}
        (work / "settings.json").write_text(json.dumps(settings))
        done = subprocess.run([sys.executable, __file__, "--child",
                               str(work / "settings.json")], cwd=ROOT, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              check=False)
        if done.returncode != 0:
            raise SystemExit(f"the pack's run failed: {done.stderr[-2000:]}")
        ours = json.loads(done.stdout.strip().splitlines()[-1])
        if ours["sha256"] != sha:
            raise SystemExit("the file read back is not the file uploaded")
        results: dict[str, Any] = {
            "seconds": round(ours["seconds"], 2),
            "upload_seconds": round(ours["upload_seconds"], 2),
            "download_seconds": round(ours["download_seconds"], 2),
            "copy_seconds": round(theirs, 2),
            "mib_per_s": round(size / ours["seconds"], 1),
            "ratio_vs_copy": round(theirs / ours["seconds"], 3),
            "memory_growth_mib": ours["growth_mib"]}
        if not args.no_http:
            shutil.rmtree(work / "repo", ignore_errors=True)
            (work / "out.bin").unlink(missing_ok=True)
            http = over_http(work, settings, source)
            if http["sha256"] != sha:
                raise SystemExit("the file downloaded is not the file uploaded")
            results["http"] = {
                "seconds": round(http["seconds"], 2),
                "upload_seconds": round(http["upload_seconds"], 2),
                "download_seconds": round(http["download_seconds"], 2),
                "ratio_vs_copy": round(theirs / http["seconds"], 3),
                "memory_growth_mib": http["growth_mib"]}
        print(json.dumps({
            "parameters": {"size_mib": size, "mode": args.mode, "seed": args.seed,
                           "quick": args.quick, "cpus": os.cpu_count(),
                           "load": os.getloadavg()},
            "files": results}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
