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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="128 MiB: a smoke run")
    parser.add_argument("--mode", choices=sorted(MODES), default="both")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", default=None, help="where to work (default: a temp dir)")
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
        print(json.dumps({
            "parameters": {"size_mib": size, "mode": args.mode, "seed": args.seed,
                           "quick": args.quick, "cpus": os.cpu_count(),
                           "load": os.getloadavg()},
            "files": {"seconds": round(ours["seconds"], 2),
                      "upload_seconds": round(ours["upload_seconds"], 2),
                      "download_seconds": round(ours["download_seconds"], 2),
                      "copy_seconds": round(theirs, 2),
                      "mib_per_s": round(size / ours["seconds"], 1),
                      "ratio_vs_copy": round(theirs / ours["seconds"], 3),
                      "memory_growth_mib": ours["growth_mib"]}}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
