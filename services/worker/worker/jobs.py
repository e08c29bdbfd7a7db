"""Jobs the worker knows how to run."""

import hashlib
import json
from pathlib import Path


def run_job(job: dict) -> dict:
    kind = job.get("kind")
    if kind == "checksum":
        return {"sha256": hashlib.sha256(job["data"].encode()).hexdigest()}
    if kind == "wordcount":
        return {"words": len(job["data"].split())}
    raise ValueError(f"unknown job kind {kind!r}")


def drain(queue: Path) -> int:
    """Run every *.json job in ``queue``, writing *.result next to it. Returns the count."""
    done = 0
    for path in sorted(queue.glob("*.json")):
        result = run_job(json.loads(path.read_text()))
        path.with_suffix(".result").write_text(json.dumps(result))
        path.unlink()
        done += 1
    return done
