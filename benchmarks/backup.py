"""Backups: the pack's throughput against a shell pipeline, and its memory.

The data: a directory generated from a fixed seed (``--size-mib``, 1,024 by default),
a few thousand files of text, JSON and random bytes, about 2:1 compressible.

- ``directory``: ``backups.backup`` of that directory (a tar stream, zstd level 3,
  AES-256-GCM, every step's sha256 and md5 in the manifest) to a directory target,
  against ``tar -c | tee >(sha256sum) >(md5sum) | zstd -3 | openssl enc -aes-256-ctr``
  writing to the same disk, in the same run. ``ratio_vs_pipeline``: the pipeline's
  time over the pack's (above 1: the pack is faster).
- ``s3``: the same backup to moto's S3 server (in a process of its own, on loopback),
  against the pipeline's output uploaded by boto3 (``upload_fileobj`` from the
  pipeline's stdout, multipart) to the same server.
- ``memory_growth_mib``: the backup process's peak resident memory (VmHWM) above what
  it held idle just before the backup, at ``--size-mib`` and at ``--large-mib`` (4,096):
  the larger of the two.

Each backup runs in a child process of its own (``--child``), so its memory is its
own. ``--quick``: 256 MiB and 1,024 MiB (under five minutes here).

    python benchmarks/backup.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY_HEX = "42" * 32
GOAL_RATIO = 0.8
GOAL_MEMORY_MIB = 64


def generate(root: Path, size: int, seed: int) -> dict[str, Any]:
    """A few thousand files: text and JSON (about 1/6 of their size once compressed) and
    random bytes (incompressible), mixed so the whole is about 2:1."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
             for _ in range(5000)]
    text_pool = " ".join(rng.choices(words, k=400_000)).encode()
    records = [json.dumps({"id": i, "name": rng.choice(words), "tags": rng.sample(words, 3),
                           "score": round(rng.random(), 4)}) for i in range(20_000)]
    json_pool = ("[" + ",\n".join(records) + "]").encode()
    made, files = 0, 0
    while made < size:
        kind = rng.random()
        length = min(size - made, rng.randint(16 << 10, 1 << 20))
        folder = root / f"d{files % 37:02d}" / f"e{files % 11}"
        folder.mkdir(parents=True, exist_ok=True)
        if kind < 0.36:
            data, name = rng.randbytes(length), f"f{files}.bin"
        else:
            pool = text_pool if kind < 0.75 else json_pool
            start = rng.randrange(0, len(pool) - 1)
            data = (pool[start:] + pool)[:length]
            while len(data) < length:
                data += pool[:length - len(data)]
            name = f"f{files}.txt" if pool is text_pool else f"f{files}.json"
        (folder / name).write_bytes(data)
        made += length
        files += 1
    return {"bytes": made, "files": files}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _settings(source: Path, target: dict[str, Any]) -> dict[str, Any]:
    return {"keys": {"k": {"key": KEY_HEX}},
            "sources": {"data": {"kind": "directory", "path": str(source)}},
            "targets": {"t": target},
            "jobs": {"bench": {"source": "data", "target": "t",
                               "steps": [{"kind": "zstd", "level": 3},
                                         {"kind": "aes-gcm", "key": "k"}]}}}


def child(settings_file: str) -> None:
    """Run one backup; print its time, its output and the memory it took."""
    import anyio

    from engine import Runtime
    from engine.store import SqlStore
    from workers.actions.backups import backups_app, parse
    from workers.actions.backups.targets import open_storage

    settings = json.loads(Path(settings_file).read_text())
    config = parse(settings["backups"])
    app = backups_app(config=config)
    # idle is a node ready to back up: boto3's client (about 30 MiB of service models)
    # and the codecs' libraries are loaded before the backup is measured
    open_storage(config.targets["t"]).keys("none/")

    def status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    async def main() -> dict[str, Any]:
        async with SqlStore.open(settings["store"]) as store, \
                Runtime(app.sagas, store=store) as rt:
            idle = status("VmRSS")
            began = time.perf_counter()
            done = await rt.run("backups.backup", {"job": "bench"})
            seconds = time.perf_counter() - began
            peak = status("VmHWM")
        if done.status != "completed":
            raise SystemExit(f"the backup failed: {done.error}")
        return {"seconds": seconds, "idle_rss": idle, "peak_rss": peak,
                "growth_mib": round((peak - idle) / 2**20, 1), "output": done.output}

    print(json.dumps(anyio.run(main)))


def run_child(work: Path, settings: dict[str, Any]) -> dict[str, Any]:
    path = work / f"settings-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(settings))
    done = subprocess.run([sys.executable, __file__, "--child", str(path)], cwd=ROOT,
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"the backup child failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.splitlines()[-1]))


PIPELINE = ("set -o pipefail; tar -cf - -C {src} . | tee >(sha256sum > {out}.sha256) "
            ">(md5sum > {out}.md5) | zstd -3 -q -c | openssl enc -aes-256-ctr -K {key} "
            "-iv 00000000000000000000000000000000")


def pipeline_to_file(source: Path, out: Path) -> float:
    command = PIPELINE.format(src=source, out=out, key=KEY_HEX) + f" > {out}"
    began = time.perf_counter()
    subprocess.run(["bash", "-c", command], check=True)
    return time.perf_counter() - began


def pipeline_to_s3(source: Path, out: Path, endpoint: str, bucket: str) -> float:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    command = PIPELINE.format(src=source, out=out, key=KEY_HEX)
    began = time.perf_counter()
    proc = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    client.upload_fileobj(proc.stdout, bucket, "pipeline/data")
    if proc.wait() != 0:
        raise SystemExit("the pipeline failed")
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--large-mib", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--quick", action="store_true",
                        help="256 MiB and 1,024 MiB instead")
    parser.add_argument("--workdir", default="/tmp", help="where the data is generated")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.quick:
        args.size_mib, args.large_mib = 256, 1024
    work = Path(tempfile.mkdtemp(prefix="backup-bench-", dir=args.workdir))
    moto = None
    try:
        port = _free_port()
        moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")
        for _ in range(100):
            try:
                client.create_bucket(Bucket="bench")
                break
            except Exception:  # the server is not up yet
                time.sleep(0.1)
        results: dict[str, Any] = {"parameters": {
            "size_mib": args.size_mib, "large_mib": args.large_mib, "seed": args.seed,
            "quick": args.quick, "cpus": os.cpu_count(), "load": os.getloadavg()}}
        memory: list[float] = []
        for size in (args.size_mib, args.large_mib):
            data = work / f"data-{size}"
            made = generate(data, size << 20, args.seed)
            subprocess.run(["sync"], check=True)
            store = f"sqlite+aiosqlite:///{work}/store-{size}.sqlite"
            ours = run_child(work, {"store": store, "backups": _settings(
                data, {"kind": "directory", "path": str(work / f"out-{size}")})})
            memory.append(ours["growth_mib"])
            entry: dict[str, Any] = {"data": made, "growth_mib": ours["growth_mib"]}
            if size == args.size_mib:
                theirs = pipeline_to_file(data, work / "pipeline.out")
                entry.update(
                    seconds=round(ours["seconds"], 2), pipeline_seconds=round(theirs, 2),
                    mib_per_s=round(made["bytes"] / 2**20 / ours["seconds"], 1),
                    pipeline_mib_per_s=round(made["bytes"] / 2**20 / theirs, 1),
                    ratio_vs_pipeline=round(theirs / ours["seconds"], 3),
                    compression=round(made["bytes"] / ours["output"]["size"], 2))
                results["directory"] = entry
                s3 = run_child(work, {"store": store, "backups": _settings(data, {
                    "kind": "s3", "bucket": "bench", "prefix": "pack/",
                    "endpoint_url": endpoint, "access_key_id": "bench",
                    "secret_access_key": "bench"})})
                theirs_s3 = pipeline_to_s3(data, work / "pipeline-s3", endpoint, "bench")
                results["s3"] = {
                    "seconds": round(s3["seconds"], 2),
                    "pipeline_seconds": round(theirs_s3, 2),
                    "ratio_vs_pipeline": round(theirs_s3 / s3["seconds"], 3),
                    "growth_mib": s3["growth_mib"]}
                memory.append(s3["growth_mib"])
                client.delete_object(Bucket="bench", Key="pipeline/data")
            else:
                results["large"] = entry
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(work / f"out-{size}", ignore_errors=True)
        results["memory_growth_mib"] = max(memory)
        for part in ("directory", "s3"):
            ratio = results[part]["ratio_vs_pipeline"]
            results[part].update(ratio_vs_pipeline_goal=GOAL_RATIO,
                                 ratio_vs_pipeline_goal_met=ratio >= GOAL_RATIO)
        results.update(memory_growth_mib_goal=GOAL_MEMORY_MIB,
                       memory_growth_mib_goal_met=results["memory_growth_mib"] <
                       GOAL_MEMORY_MIB)
        results["goals"] = {
            "directory.ratio_vs_pipeline": results["directory"]["ratio_vs_pipeline_goal_met"],
            "s3.ratio_vs_pipeline": results["s3"]["ratio_vs_pipeline_goal_met"],
            "memory_growth_mib": results["memory_growth_mib_goal_met"]}
        print(json.dumps(results, indent=1))
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
