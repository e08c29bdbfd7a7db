"""A run spread over a pool of engines (PIPELINE_ENGINES): each tier's services on the engine
the tier hashes to, and an engine lost mid-run handing its unfinished services to the next one,
the run ending in one complete report."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.core import placement
from tests.conftest import copy_example, git, pool_engine_command

pytestmark = pytest.mark.engine
SLOW_SMOKE = 45  # seconds the smoke test of the service on the engine to lose takes


def _one_tier_per_engine(engines: list[placement.Engine]) -> dict[str, str]:
    """engine name -> a tier name the pool places on it."""
    names = [f"t{i}" for i in range(40)]
    where = placement.place({n: n for n in names}, engines)
    chosen: dict[str, str] = {}
    for name in names:
        chosen.setdefault(where[name].name, name)
    assert len(chosen) == len(engines), f"no tier name reaches every engine: {where}"
    return chosen


def _smoke_marker(engine: str, token: str) -> str:
    """The slow smoke test's code: ``token`` tells its process from one of any other run on
    this machine (the other engine generation's tests run beside these)."""
    return f"import time; time.sleep({SLOW_SMOKE}); print('{engine} {token}')"


def _pool_repo(dest: Path, tiers: dict[str, str], slow: str, token: str) -> Path:
    """A monorepo with one service per engine (``on-<engine>``), in a tier of its own that the
    pool places there; the smoke test of the one on ``slow`` takes SLOW_SMOKE seconds."""
    repo = copy_example(dest, services=("-",))
    toml = repo / "pipeline.toml"
    extra = "".join(f'\n[tiers.{t}]\nextends = "base"\n' for t in tiers.values())
    toml.write_text(toml.read_text() + extra)
    for engine, tier in tiers.items():
        folder = repo / "services" / f"on-{engine}"
        folder.mkdir(parents=True)
        code = _smoke_marker(engine, token) if engine == slow else f"print('{engine}')"
        smoke = ["python", "-c", code]
        (folder / "service.toml").write_text(
            f'tier = "{tier}"\ncommand = ["python", "-c", "import time; time.sleep(60)"]\n'
            f"smoke = {json.dumps(smoke)}\n"
        )
        (folder / "main.py").write_text(f"ENGINE = {engine!r}\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "pool")
    return repo


def _commands() -> list[str]:
    """The command line of every process of this machine."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue  # it ended meanwhile
    return found


def _wait_for_smoke(engine: str, token: str, run: subprocess.Popen[str]) -> None:
    """Until the slow smoke test of this run (``token``) runs on ``engine``: its process, in a
    container of the engine's, is one of this machine's."""
    marker = _smoke_marker(engine, token)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if run.poll() is not None:
            pytest.fail(f"the run ended before the smoke test started: {run.communicate()}")
        if any(marker in line for line in _commands()):
            return
        time.sleep(1)
    pytest.fail(f"the smoke test never started on {engine}")


def test_an_engine_lost_mid_run_hands_its_services_to_the_next(
    engine_pool: list[tuple[str, str]], tmp_path: Path, base_image: str
):
    """Each service starts on the engine its tier hashes to; the engine of one is stopped
    while that service is being checked; the service is built again on the next engine of
    its order, and the run ends with every service ok, each reported once, naming the engine
    that built it."""
    text = ",".join(f"{name}={url}" for name, url in engine_pool[:2])
    engines = placement.parse(text, "PIPELINE_TEST_ENGINES")
    tiers = _one_tier_per_engine(engines)
    victim = engines[1].name  # never the main engine: the other tests use it
    scope = f"pool-{uuid.uuid4().hex[:8]}"  # volumes and results no earlier run wrote
    repo = _pool_repo(tmp_path / "repo", tiers, slow=victim, token=scope)
    report = tmp_path / "report.json"
    argv = ["build", "--project-dir", str(repo), "--base-image", base_image]
    argv += ["--cache-scope", scope, "--report", str(report), "--engines", text]
    run = subprocess.Popen(  # the run, as a user starts it
        [sys.executable, "-m", "pipeline", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_smoke(victim, scope, run)
        pool_engine_command("stop", victim)
        out, err = run.communicate(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
        pool_engine_command("start", victim)
    assert run.returncode == 0, err[-4000:]
    data = json.loads(report.read_text())
    services = [s["service"] for s in data["services"]]
    assert sorted(services) == sorted(f"on-{e}" for e in tiers)  # each once
    assert all(s["status"] == "ok" for s in data["services"]), data["services"]
    pool = data["pool"]
    assert pool["lost"] == [victim]
    after = placement.place({"x": tiers[victim]}, engines, frozenset({victim}))["x"].name
    assert pool["moved"] == {f"on-{victim}": [victim, after]}
    assert pool["placed"] == {f"on-{e}": (after if e == victim else e) for e in tiers}
    for result in data["services"]:
        assert result["engine"].startswith(pool["placed"][result["service"]] + " ")
    assert f"engine {victim} was lost: on-{victim} moved to {after}" in out
    assert out.rstrip().splitlines()[-1].startswith("wall time")
