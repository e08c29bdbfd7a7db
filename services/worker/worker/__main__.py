"""Background worker: polls a queue folder and runs the jobs it finds."""

import argparse
import tempfile
import time
from pathlib import Path

import structlog

from worker.jobs import drain, run_job

log = structlog.get_logger()


def main() -> int:
    parser = argparse.ArgumentParser(prog="worker")
    parser.add_argument("--queue", type=Path, default=Path("/tmp/queue"))
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--self-test", action="store_true", help="run one job and exit")
    args = parser.parse_args()
    if args.self_test:
        assert run_job({"kind": "wordcount", "data": "a b c"}) == {"words": 3}
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "1.json").write_text('{"kind": "checksum", "data": "x"}')
            assert drain(Path(tmp)) == 1
        log.info("self_test_passed")
        return 0
    args.queue.mkdir(parents=True, exist_ok=True)
    log.info("worker_started", queue=str(args.queue))
    while True:
        if n := drain(args.queue):
            log.info("jobs_done", count=n)
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
