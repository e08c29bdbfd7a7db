"""The pipeline against a real BuildKit peer: hand-written multi-stage Dockerfiles
(benchmarks/buildkit/Dockerfile) built by dockerd's BuildKit, checked with `docker run`.

    eval "$(scripts/engine env)"
    .venv/bin/python benchmarks/peer.py [--runs N] [--out DIR] [--peer targets|bake]

    eval "$(PIPELINE_DAGGER_VERSION=v0.11.4 scripts/engine env)"
    .venv-dagger-v011/bin/python benchmarks/peer.py [--runs N] [--out DIR]

    python benchmarks/peer.py --compare A/peer.json B/peer.json   # side by side

The pipeline runs as `python -m pipeline` under the interpreter running this script (so under
its dagger-io) and on the engine the environment names; both versions are checked to be one
generation and recorded. Every run works on a fresh copy of the example monorepo (a git
repository in a temp dir) and times, pipeline and peer interleaved (A B, then B A on the next
run), whole commands with time.monotonic. The table shows medians and the ratio
pipeline / BuildKit (below 1: the pipeline is faster). Results go to
DIR/peer.{json,md,png}, DIR by default benchmarks/results/dagger-<engine version>/. See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, Protocol

import charts  # benchmarks/charts.py, beside this script
from machine import busy_cpu_seconds, compiled, idle_rate, settle  # benchmarks/machine.py

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "benchmarks" / "buildkit" / "Dockerfile"
EXAMPLE = ("pipeline.toml", "requirements", "services")
# The services benchmarks/buildkit/Dockerfile has targets for: both sides build these.
PEER_SERVICES = ("gateway", "inference", "reports", "users", "worker")
BUSTED_SUFFIXES = (".py", ".txt", ".toml")  # files a comment line can be appended to
CA_BUNDLE = os.environ.get("PIPELINE_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
HEALTH_TIMEOUT = 60.0
# The bake peer's buildx: built from source with the Go toolchain (the module proxy is all it
# needs) into a docker config of the benchmark's own, so nothing installed by hand counts.
BUILDX_MODULE = "github.com/docker/buildx"
BUILDX_VERSION = "v0.38.2"
BUILDX_CONFIG = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pipeline-peer" / "docker"
)
# `docker buildx bake --progress plain` says this once an image is in dockerd's store
NAMED = re.compile(r"naming to (?:docker\.io/)?pipeline-peer/([\w.-]+):bench\b.* done$")
HTTP_OK = 200
PEERS = ("targets", "bake")  # Peer (the default), BakePeer
LAST_BUILDX_LESS_MAJOR = 22  # Docker CLIs up to 22.x build with BuildKit without buildx
PEER_LABEL = "pipeline.benchmark=peer"  # on the peer's images, so only they are pruned
GZIP_LEVEL = 6  # what docker push and BuildKit compress layers with
CHUNK = 1 << 20
SCENARIOS = {
    "cold-nothing": "cold, BuildKit from nothing (`builder prune -af`), with checks",
    "cold": "cold: empty download caches, every input file changed, with checks",
    "warm": "warm, nothing changed, with checks",
    "warm-build": "warm, nothing changed, build only",
    "edit": "one-line edit in services/users/users/app.py, with checks",
    "add-package": "six==1.16.0 added to requirements/backend.txt, with checks",
    "help": "`pipeline --help` / `docker --help`",
    "plan": "`pipeline plan` / `docker version`",
    "cold-publish": (
        "cold again, then each image pushed to the loopback registry once its checks pass "
        "(`pipeline publish`: three tags, an SBOM and a provenance artifact each; BuildKit: "
        "`docker push`)"
    ),
}


@dataclass(frozen=True)
class Outcome:
    seconds: float
    ok: bool
    detail: str = ""  # the end of the output of a failed command
    cpu: float | None = None  # the machine's busy CPU-seconds while it ran (busy_cpu_seconds)


@dataclass(frozen=True)
class Sizes:
    images: dict[str, int]  # service -> compressed bytes (config + layers)
    distinct: int  # compressed bytes of each distinct layer, counted once
    pushed: int | None = None  # the engine's own layer blobs, counted once (pipeline only)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Tool(Protocol):
    name: str

    def build(self, *, checks: bool) -> Outcome: ...
    def help(self) -> Outcome: ...
    def plan(self) -> Outcome: ...
    def publish(self, registry: str) -> Outcome: ...


def output(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()


def run(cmd: Sequence[str], env: dict[str, str] | None = None) -> Outcome:
    """One whole subprocess, timed."""
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    seconds = time.monotonic() - started
    tail = "" if done.returncode == 0 else "\n".join((done.stdout + done.stderr).splitlines()[-25:])
    return Outcome(seconds, done.returncode == 0, tail)


# Run by the interpreter running this script: its dagger-io asks the engine the environment
# names for the engine's version (the CLI's `version` would give only its own).
ENGINE_PROBE = """
import anyio, dagger

async def main():
    async with dagger.Connection(dagger.Config(log_output=None)) as client:
        print(await client.version())

anyio.run(main)
"""


# The engine's whole local cache pruned (what the peer's `docker builder prune -af` does to
# BuildKit's), its size before printed; "unsupported" where the API has no local cache (v0.11).
PRUNE_ENGINE = """
import anyio, dagger
from dagger import dag

async def main():
    async with dagger.connection(dagger.Config(log_output=None)):
        engine = getattr(dag, "engine", None)
        if engine is None:
            print("unsupported")
            return
        cache = engine().local_cache()
        before = await cache.entry_set().disk_space_bytes()
        await cache.prune()
        print(before)

anyio.run(main)
"""


def sdk_said(program: str, timeout: int) -> tuple[str, str]:
    """The last word ``program`` (ENGINE_PROBE, PRUNE_ENGINE) prints, run by this interpreter
    (its dagger-io) from the project's root; "" and the tail of its errors when it fails or
    prints nothing."""
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=timeout,
    )
    words = done.stdout.split()
    if done.returncode != 0 or not words:
        return "", "\n".join(done.stderr.splitlines()[-10:])
    return words[-1], ""


def prune_engine() -> int | None:
    """Empty the engine's cache, as each run empties the peer's: bytes it held before, None
    where the engine's API cannot (v0.11)."""
    said, why = sdk_said(PRUNE_ENGINE, timeout=900)
    if not said:
        fail(f"the engine's cache could not be pruned:\n{why}")
    return None if said == "unsupported" else int(said)


def generation(version: str) -> tuple[int, int] | None:
    """v0.21.8 and 0.21.8 -> (0, 21); None for what is no release number (a dev build)."""
    parts = version.removeprefix("v").split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):  # noqa: PLR2004
        return None
    return int(parts[0]), int(parts[1])


def dagger_info() -> dict[str, Any]:
    """Which Dagger the pipeline side runs on: this interpreter's dagger-io, the engine the
    environment names (asked through that SDK), the CLI its sessions start, and the commit of
    the pipeline measured. Stops when the SDK and the engine are not one generation."""
    try:
        sdk = importlib.metadata.version("dagger-io")
    except importlib.metadata.PackageNotFoundError:
        fail(
            f"{sys.executable} has no dagger-io: run this script with the project's venv "
            "(.venv for dagger.json's engine, .venv-dagger-v011 for v0.11)"
        )
    runner = os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "")
    engine, why = sdk_said(ENGINE_PROBE, timeout=600)
    if not engine:
        fail(f"the engine at {runner} did not tell its version to dagger-io {sdk}:\n{why}")
    if None not in (generation(sdk), generation(engine)) and generation(sdk) != generation(engine):
        fail(
            f"{sys.executable} has dagger-io {sdk}, the engine at {runner} is {engine}: not one "
            "Dagger generation. Run the venv of the engine's generation (.venv-dagger-v011 for "
            "v0.11), or eval the other engine's `scripts/engine env`"
        )
    commit = output("git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD")
    dirty = bool(output("git", "-C", str(ROOT), "status", "--porcelain", "--", "pipeline"))
    return {
        "engine": engine,
        "sdk": sdk,
        "python": sys.executable,
        "cli": os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN", ""),
        "runner_host": runner,
        "pipeline_commit": commit + ("+changes" if dirty else ""),
    }


def fail(message: str) -> NoReturn:
    """A setup problem: said on one line (no traceback), exit status 2."""
    print(f"peer: {message}", file=sys.stderr)
    raise SystemExit(2)


def docker_clis(*fallbacks: str) -> list[str]:
    """$PEER_DOCKER, `docker` on PATH, then ``fallbacks``: those that exist, each once."""
    named = [os.environ.get("PEER_DOCKER"), shutil.which("docker"), *fallbacks]
    return [cli for cli in dict.fromkeys(named) if cli and Path(cli).is_file()]


def find_docker() -> tuple[str, str]:
    """A docker CLI whose `docker build` runs on BuildKit, and why it qualifies."""
    tried = []
    for cli in docker_clis("/usr/bin/docker", "/usr/local/bin/docker"):
        if run([cli, "buildx", "version"]).ok:
            return cli, "buildx plugin"
        version = output(cli, "version", "--format", "{{.Client.Version}}")
        major = int(version.split(".")[0]) if version[:1].isdigit() else 0
        if 0 < major <= LAST_BUILDX_LESS_MAJOR:
            return cli, f"client {version}: BuildKit built in (DOCKER_BUILDKIT=1)"
        tried.append(f"{cli} (client {version or '?'}, no buildx plugin)")
    fail(
        "no docker CLI here builds with BuildKit; tried: "
        + ("; ".join(tried) or "none found")
        + ". Install the buildx plugin (Debian trixie: docker-buildx) or use Debian bookworm's "
        "docker.io (its /usr/bin/docker 20.10 has BuildKit built in), or set PEER_DOCKER."
    )


def ensure_buildx() -> dict[str, str]:
    """The environment in which `docker buildx` is buildx BUILDX_VERSION: its CLI plugin in
    BUILDX_CONFIG (a DOCKER_CONFIG of the benchmark's own), built with `go install` from the Go
    module proxy when missing or of another version. No default attestations: dockerd's image
    store takes none."""
    env = {**os.environ, "DOCKER_CONFIG": str(BUILDX_CONFIG), "BUILDX_NO_DEFAULT_ATTESTATIONS": "1"}
    plugin = BUILDX_CONFIG / "cli-plugins" / "docker-buildx"
    if plugin.is_file() and output(str(plugin), "version").endswith(f" {BUILDX_VERSION}"):
        return env
    go = shutil.which("go") or next(
        (g for g in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if Path(g).is_file()), None
    )
    if go is None:
        fail(f"the bake peer needs buildx {BUILDX_VERSION}, built with Go: no `go` found")
    print(f"peer: building buildx {BUILDX_VERSION} into {plugin} (`go install`, minutes, once)")
    plugin.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="buildx-", dir=plugin.parent) as gobin:
        version = f"-X {BUILDX_MODULE}/version.Version={BUILDX_VERSION}"
        done = subprocess.run(
            [go, "install", "-ldflags", version, f"{BUILDX_MODULE}/cmd/buildx@{BUILDX_VERSION}"],
            capture_output=True,
            text=True,
            env={**os.environ, "GOBIN": gobin, "GOFLAGS": "-buildvcs=false"},
            check=False,
        )
        if done.returncode != 0:
            fail(
                f"`go install {BUILDX_MODULE}/cmd/buildx@{BUILDX_VERSION}` failed:\n"
                + "\n".join(done.stderr.splitlines()[-10:])
            )
        Path(gobin, "buildx").replace(plugin)
    return env


def find_bake_docker(env: dict[str, str]) -> tuple[str, str]:
    """A docker CLI that runs the buildx plugin of ``env`` (any CLI with plugin support)."""
    for cli in docker_clis("/usr/local/bin/docker", "/usr/bin/docker"):
        if run([cli, "buildx", "version"], env).ok:
            client = output(cli, "version", "--format", "{{.Client.Version}}")
            return cli, f"client {client}, buildx {BUILDX_VERSION} plugin, `buildx bake`"
    fail(f"no docker CLI here runs the buildx plugin in {BUILDX_CONFIG}; set PEER_DOCKER")


BUDGET = re.compile(r"^size_budget_mb = (\d+)$", re.MULTILINE)  # a service.toml's size budget


def copy_example(dest: Path, compression: str = "gzip") -> Path:
    """The example monorepo as a fresh git repository (as tests/conftest.py makes it), its
    images' layers compressed with ``compression`` (the config's setting)."""
    dest.mkdir(parents=True)
    for name in EXAMPLE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    for folder in (dest / "services").iterdir():
        if folder.name not in PEER_SERVICES:
            shutil.rmtree(folder)
    if compression != "gzip":
        config = dest / "pipeline.toml"
        config.write_text(f'compression = "{compression}"\n{config.read_text()}')
    if compression == "uncompressed":  # the budgets are of compressed layers: four times them
        for manifest in (dest / "services").glob("*/service.toml"):
            text = BUDGET.sub(lambda m: f"size_budget_mb = {4 * int(m[1])}", manifest.read_text())
            manifest.write_text(text)
    env = {**os.environ, "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z"}
    env["GIT_COMMITTER_DATE"] = env["GIT_AUTHOR_DATE"]
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "user.name=peer", "-c", "user.email=peer@example.com", "commit", "-qm", "example"],
    ):
        subprocess.run(["git", "-C", str(dest), *args], check=True, env=env, capture_output=True)
    return dest


def append_line(path: Path, line: str) -> None:
    path.write_text(path.read_text().rstrip("\n") + f"\n{line}\n")


def bust(repo: Path, nonce: str) -> None:
    """Change every input of every build: each requirements file and each service file."""
    files = [*(repo / "requirements").glob("*.txt"), *(repo / "services").rglob("*")]
    for path in sorted(files):
        if path.is_file() and path.suffix in BUSTED_SUFFIXES:
            append_line(path, f"# cold {nonce}")


def services_of(repo: Path) -> dict[str, dict[str, Any]]:
    """service.toml of every service: the peer's checks come from the same manifests."""
    return {
        p.parent.name: tomllib.loads(p.read_text())
        for p in sorted((repo / "services").glob("*/service.toml"))
    }


class Pipeline:
    name = "pipeline"

    def __init__(self, repo: Path, base: str, scope: str) -> None:
        self.repo, self.base, self.scope = repo, base, scope

    def _cmd(self, command: str, *extra: str) -> list[str]:
        project = ["--project-dir", str(self.repo)]
        engine = ["--base-image", self.base, "--cache-scope", self.scope]
        return [sys.executable, "-m", "pipeline", command, *project, *engine, *extra]

    def build(self, *, checks: bool) -> Outcome:
        return run(self._cmd("build", *([] if checks else ["--no-test"])))

    def publish(self, registry: str) -> Outcome:
        """Build, check, and push each image under its commit, branch and latest tags to
        ``registry`` (host/namespace), with its SBOM and provenance beside it."""
        return run(self._cmd("publish", "--registry", registry))

    def help(self) -> Outcome:
        return run([sys.executable, "-m", "pipeline", "--help"])

    def plan(self) -> Outcome:
        return run([sys.executable, "-m", "pipeline", "plan", "--project-dir", str(self.repo)])

    def sizes(self, out: Path) -> Sizes:
        """The OCI tarballs of ``export``; each layer decompressed and gzipped again the way
        the peer's are measured, so both sides are compared with one compressor (the engine's
        own blobs, what a push sends, are kept in ``pushed``)."""
        report = out / "report.json"
        done = run(self._cmd("export", "--out", str(out), "--report", str(report)))
        if not done.ok:
            raise RuntimeError(f"pipeline export failed:\n{done.detail}")
        blobs: dict[str, int] = {}
        gz: dict[str, int] = {}
        for tarball in out.glob("*.tar"):
            with tarfile.open(tarball) as tar:
                for member in tar.getmembers():
                    digest = "sha256:" + member.name.rsplit("/", 1)[-1]
                    if member.name.startswith("blobs/sha256/") and digest not in blobs:
                        blobs[digest] = member.size
                        gz[digest] = _regzipped(tar, member)
        images, layers = {}, set()
        for svc in json.loads(report.read_text())["services"]:
            own = svc["image"]["layers"]
            images[svc["service"]] = svc["image"]["size"] - sum(blobs[d] - gz[d] for d in own)
            layers.update(own)
        return Sizes(images, sum(gz[d] for d in layers), sum(blobs[d] for d in layers))


def overall(started: float, outcomes: Sequence[Outcome]) -> Outcome:
    """A whole build since ``started``: ok when every part was, with the failures' output."""
    failed = [o.detail for o in outcomes if not o.ok]
    return Outcome(time.monotonic() - started, not failed, "\n".join(failed)[-4000:])


class Peer:
    """One `docker build --target` process per target, all at once (`--peer targets`, the
    default: no slower than one bake, see benchmarks/README.md "Why this peer")."""

    name = "buildkit"

    def __init__(self, docker: str, repo: Path, base: str) -> None:
        self.docker, self.repo, self.base = docker, repo, base
        self.services = services_of(repo)
        self.env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        self.pushed: list[str] = []  # registry tags given by publish, until untag_pushed

    @staticmethod
    def image(service: str) -> str:
        return f"pipeline-peer/{service}:bench"

    def _build(self, target: str, tag: str | None = None) -> Outcome:
        cmd = [self.docker, "build", "--progress", "plain", "-f", str(DOCKERFILE)]
        cmd += ["--secret", f"id=ca,src={CA_BUNDLE}", "--build-arg", f"BASE={self.base}"]
        # every image labelled, -test targets too: dockerd keeps each of those as an untagged
        # image (0.5-1 GB apiece, tens of GB after a few runs) until prune_images removes it
        cmd += ["--target", target, "--label", PEER_LABEL, *(["-t", tag] if tag else [])]
        cmd.append(str(self.repo))
        return run(cmd, self.env)

    def _docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.docker, *args], capture_output=True, text=True, env=self.env, check=False
        )

    def _check_built(self, service: str, image: Future[Outcome]) -> Outcome:
        built = image.result()
        return self._check(service) if built.ok else built

    def _push(self, service: str, registry: str, verified: Sequence[Future[Outcome]]) -> Outcome:
        """The image tagged into ``registry`` and pushed, once every check of it passed
        (``verified``: its unit tests' target, its smoke and health checks)."""
        failed = [o for o in (job.result() for job in verified) if not o.ok]
        if failed:
            return failed[0]
        ref = f"{registry}/{service}:bench"
        self.pushed.append(ref)
        for args in (("tag", self.image(service), ref), ("push", "-q", ref)):
            done = self._docker(*args)
            if done.returncode != 0:
                return Outcome(0, ok=False, detail=f"{service} {args[0]}: {done.stderr[-2000:]}")
        return Outcome(0, ok=True)

    def untag_pushed(self) -> None:
        """The registry tags ``publish`` gave the images, removed from dockerd (the images
        stay under their own tags): otherwise they would keep every run's images alive."""
        if self.pushed:
            self._docker("rmi", *self.pushed)
            self.pushed.clear()

    def _check(self, service: str) -> Outcome:
        """The smoke command in the image, then the health path of the image started."""
        spec = self.services[service]
        if spec.get("smoke"):
            smoke = self._docker("run", "--rm", self.image(service), *spec["smoke"])
            if smoke.returncode != 0:
                return Outcome(0, ok=False, detail=f"{service} smoke: {smoke.stderr[-2000:]}")
        if spec.get("port") and spec.get("health_path"):
            return self._health(service, spec["port"], spec["health_path"])
        return Outcome(0, ok=True)

    def _health(self, service: str, port: int, path: str) -> Outcome:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            host_port = sock.getsockname()[1]
        started = self._docker(
            "run", "-d", "-p", f"127.0.0.1:{host_port}:{port}", self.image(service)
        )
        if started.returncode != 0:
            return Outcome(0, ok=False, detail=f"{service} start: {started.stderr[-2000:]}")
        deadline = time.monotonic() + HEALTH_TIMEOUT
        try:
            while time.monotonic() < deadline:
                try:
                    url = f"http://127.0.0.1:{host_port}{path}"
                    with urllib.request.urlopen(url, timeout=2) as answer:
                        if answer.status == HTTP_OK:
                            return Outcome(0, ok=True)
                except (urllib.error.URLError, OSError):
                    pass
                time.sleep(0.2)
            return Outcome(0, ok=False, detail=f"{service} health: no 200 from {path}")
        finally:
            self._docker("rm", "-f", started.stdout.strip())

    def build(self, *, checks: bool, push_to: str | None = None) -> Outcome:
        """Every image target at once (and every -test target, then smoke and health checks
        of each image as soon as it is built); BuildKit shares the stages they have in common.
        With ``push_to`` (and checks), each image is pushed there once its own checks passed."""
        started = time.monotonic()
        names = list(self.services)
        with ThreadPoolExecutor(max_workers=4 * len(names)) as pool:
            images = {s: pool.submit(self._build, s, self.image(s)) for s in names}
            jobs = list(images.values())
            if checks:
                tests = {s: pool.submit(self._build, f"{s}-test") for s in names}
                checked = {s: pool.submit(self._check_built, s, images[s]) for s in names}
                jobs += [*tests.values(), *checked.values()]
                if push_to:
                    verified = {s: (tests[s], checked[s]) for s in names}
                    jobs += [pool.submit(self._push, s, push_to, verified[s]) for s in names]
            outcomes = [job.result() for job in jobs]
        return overall(started, outcomes)

    def publish(self, registry: str) -> Outcome:
        return self.build(checks=True, push_to=registry)

    def help(self) -> Outcome:
        return run([self.docker, "--help"])

    def plan(self) -> Outcome:
        return run([self.docker, "version"])

    def prune(self, *, everything: bool) -> None:
        """everything: all build cache; otherwise only cache mounts (a fresh cache scope)."""
        scope = ["-a"] if everything else ["--filter", "type=exec.cachemount"]
        subprocess.run(
            [self.docker, "builder", "prune", "-f", *scope], check=True, capture_output=True
        )
        self.prune_images()

    def prune_images(self) -> None:
        """The peer's untagged images: the -test targets' and those an earlier build tagged and
        a later one untagged. The five tagged ones stay."""
        subprocess.run(
            [self.docker, "image", "prune", "-f", "--filter", f"label={PEER_LABEL}"],
            check=True,
            capture_output=True,
        )

    def sizes(self, out: Path) -> Sizes:
        """`docker save`, each layer gzipped as a push would: compressed bytes per image."""
        saved = out / "images.tar"
        tags = [self.image(s) for s in self.services]
        subprocess.run([self.docker, "save", "-o", str(saved), *tags], check=True)
        gz: dict[str, int] = {}
        images = {}
        with tarfile.open(saved) as tar:
            for entry in json.load(_member(tar, "manifest.json")):
                for layer in entry["Layers"]:
                    if layer not in gz:
                        gz[layer] = _gzipped_size(_member(tar, layer))
                service = entry["RepoTags"][0].split("/", 1)[1].split(":")[0]
                config = tar.getmember(entry["Config"]).size
                images[service] = config + sum(gz[layer] for layer in entry["Layers"])
        return Sizes(images, sum(gz.values()))


class BakePeer(Peer):
    """Every target in one `docker buildx bake` (`--peer bake`): one client process instead of
    ten; dockerd's BuildKit through buildx's `docker` driver, images loaded into dockerd
    (`type=docker`), the -test targets built for their tests only (`type=cacheonly`: nothing
    exported). The same Dockerfile, secret and cache mounts as `targets`."""

    def __init__(self, docker: str, repo: Path, base: str, env: dict[str, str]) -> None:
        super().__init__(docker, repo, base)
        self.env = env

    def bakefile(self) -> Path:
        """A JSON bake file (beside the repository, out of its context): a target per service
        and one per service's -test target, all from the one Dockerfile."""
        common = {
            "context": str(self.repo),
            "dockerfile": str(DOCKERFILE),
            "args": {"BASE": self.base},
            "secret": [f"id=ca,src={CA_BUNDLE}"],
        }
        key, value = PEER_LABEL.split("=")
        targets: dict[str, Any] = {}
        for service in self.services:
            targets[service] = {
                **common,
                "target": service,
                "tags": [self.image(service)],
                "labels": {key: value},
                "output": ["type=docker"],
            }
            targets[f"{service}-test"] = {
                **common,
                "target": f"{service}-test",
                "output": ["type=cacheonly"],
            }
        path = self.repo.parent / f"{self.repo.name}.bake.json"
        path.write_text(json.dumps({"target": targets}, indent=2) + "\n")
        return path

    def build(self, *, checks: bool, push_to: str | None = None) -> Outcome:
        """One bake of the image targets (and the -test targets); each image's smoke and health
        checks start as soon as bake's output says the image is named in dockerd. With
        ``push_to`` (and checks), each image is pushed there once bake is done (so its unit
        tests passed) and its own checks passed."""
        started = time.monotonic()
        names = list(self.services)
        targets = names + ([f"{s}-test" for s in names] if checks else [])
        allowed = [f"--allow=fs.read={p}" for p in (self.repo, DOCKERFILE.parent, CA_BUNDLE)]
        cmd = [self.docker, "buildx", "bake", "--progress", "plain", "-f", str(self.bakefile())]
        tail: deque[str] = deque(maxlen=25)
        checked: dict[str, Future[Outcome]] = {}
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            with subprocess.Popen(
                [*cmd, *allowed, *targets],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=ROOT,
                env=self.env,
            ) as bake:
                for line in bake.stdout or ():
                    tail.append(line.rstrip())
                    named = NAMED.search(tail[-1])
                    if checks and named and named[1] in names and named[1] not in checked:
                        checked[named[1]] = pool.submit(self._check, named[1])
            baked = bake.returncode == 0
            if checks and baked:  # an image whose naming the output did not show
                checked |= {s: pool.submit(self._check, s) for s in names if s not in checked}
            outcomes = [Outcome(0, baked, "" if baked else "\n".join(tail))]
            if push_to and baked:  # the -test targets are done when bake is
                pushes = [pool.submit(self._push, s, push_to, (checked[s],)) for s in names]
                outcomes += [job.result() for job in pushes]
            outcomes += [job.result() for job in checked.values()]
        return overall(started, outcomes)


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    handle = tar.extractfile(name)
    if handle is None:
        raise ValueError(f"{name} missing from the saved images")
    return handle


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
TAR_MAGIC_START, TAR_MAGIC_END = 257, 262  # "ustar" in a tar header


def _regzipped(tar: tarfile.TarFile, member: tarfile.TarInfo) -> int:
    """A blob's size once decompressed (gzip, or zstd by the `zstd` command; a plain tar
    as it is) and gzipped again; a manifest's or config's own size."""
    head = _member(tar, member.name).read(TAR_MAGIC_END)
    if head[TAR_MAGIC_START:TAR_MAGIC_END] == b"ustar":
        return _gzipped_size(_member(tar, member.name))
    if head[:4] == ZSTD_MAGIC:
        unpack = subprocess.Popen(["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert unpack.stdin is not None
        assert unpack.stdout is not None
        feed = threading.Thread(target=_feed, args=(_member(tar, member.name), unpack.stdin))
        feed.start()
        size = _gzipped_size(unpack.stdout)
        feed.join()
        if unpack.wait():
            raise RuntimeError(f"zstd could not decompress {member.name}")
        return size
    with gzip.GzipFile(fileobj=_member(tar, member.name)) as layer:
        try:
            return _gzipped_size(layer)
        except gzip.BadGzipFile:  # a manifest or config, not a layer
            return member.size


def _feed(source: Readable, sink: Any) -> None:  # noqa: ANN401 - a pipe
    with sink:
        while chunk := source.read(CHUNK):
            sink.write(chunk)


def _gzipped_size(stream: Readable) -> int:
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip framing
    size = 0
    while chunk := stream.read(CHUNK):
        size += len(packer.compress(chunk))
    return size + len(packer.flush())


def one_run(
    index: int,
    make_peer: Callable[[Path], Peer],
    base: str,
    work: Path,
    results: dict[str, Any],
    registry: str,
    pruned: list[int | None],
    compression: str = "gzip",
) -> tuple[Pipeline, Peer]:
    nonce = uuid.uuid4().hex[:10]
    repo = copy_example(work / f"run{index}", compression)
    pipeline, peer = Pipeline(repo, base, f"peer-{nonce}"), make_peer(repo)
    order: tuple[Tool, ...] = (pipeline, peer) if index % 2 == 0 else (peer, pipeline)

    def record(scenario: str, tool: Tool, action: Callable[[Tool], Outcome]) -> None:
        settle()
        before = busy_cpu_seconds()
        outcome = action(tool)
        outcome = replace(outcome, cpu=round(busy_cpu_seconds() - before, 2))
        results[scenario][tool.name].append(asdict(outcome))
        state = "ok" if outcome.ok else "FAILED"
        print(
            f"run {index + 1} {scenario:12} {tool.name:9} {outcome.seconds:7.1f}s "
            f"{outcome.cpu:7.1f} CPU-s {state}"
        )
        if not outcome.ok:
            print(outcome.detail, file=sys.stderr)

    def both(scenario: str, action: Callable[[Tool], Outcome]) -> None:
        for tool in order:
            record(scenario, tool, action)

    bust(repo, f"{nonce}-nothing")
    peer.prune(everything=True)
    record("cold-nothing", peer, lambda t: t.build(checks=True))
    # the pipeline's counterpart, not timed: its engine's cache emptied too (where the API
    # can: v0.21), so that neither side's timed builds meet a cache over its size limit, whose
    # garbage collection would run beside them; then what cold-nothing gives the peer (its
    # builder stage and base image, which "cold" keeps) the pipeline gets here, in a scope of
    # its own: a cold build on an emptied engine would otherwise rebuild the builder
    pruned.append(prune_engine())
    Pipeline(repo, base, f"peer-{nonce}-first").build(checks=False)
    bust(repo, nonce)  # fresh inputs for both; fresh download caches for both
    peer.prune(everything=False)
    both("cold", lambda t: t.build(checks=True))
    both("warm", lambda t: t.build(checks=True))
    both("warm-build", lambda t: t.build(checks=False))
    append_line(repo / "services/users/users/app.py", f"# edit {nonce}")
    both("edit", lambda t: t.build(checks=True))
    append_line(repo / "requirements/backend.txt", "six==1.16.0")
    both("add-package", lambda t: t.build(checks=True))
    both("help", lambda t: t.help())
    both("plan", lambda t: t.plan())
    # A CI job's whole cold run: every input changed again and the download caches emptied
    # again (a scope of the pipeline's own, the peer's cache mounts pruned), then built,
    # checked and pushed. The pipeline has compressed its layers for the images' digests
    # already; the peer's push compresses them after the checks.
    bust(repo, f"{nonce}-publish")
    peer.prune(everything=False)
    publishing = Pipeline(repo, base, f"peer-{nonce}-publish")
    to = f"{registry}/peer-bench-{nonce}"
    for tool in (publishing, peer) if index % 2 == 0 else (peer, publishing):
        record("cold-publish", tool, lambda t: t.publish(f"{to}/{t.name}"))
    peer.untag_pushed()
    return pipeline, peer


def medians(both: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median seconds of each tool's successful runs, and pipeline / BuildKit: the ratio of
    the medians, and each run's own ratio (the two measured in one run, one after the other,
    so a busy machine slows both) with their median."""
    out: dict[str, Any] = {}
    for tool, outcomes in both.items():
        good = [o["seconds"] for o in outcomes if o["ok"]]
        out[f"median_{tool}"] = statistics.median(good) if good else None
        cpu = [o["cpu"] for o in outcomes if o["ok"] and o.get("cpu") is not None]
        out[f"median_cpu_{tool}"] = statistics.median(cpu) if cpu else None
    bk, pl = out["median_buildkit"], out["median_pipeline"]
    out["ratio"] = pl / bk if bk and pl else None
    pairs = zip(both["pipeline"], both["buildkit"], strict=False)
    runs = [p["seconds"] / b["seconds"] for p, b in pairs if p["ok"] and b["ok"] and b["seconds"]]
    out["run_ratios"] = runs
    out["median_run_ratio"] = statistics.median(runs) if runs else None
    return out


def run_ratio(row: dict[str, Any]) -> str:
    """The median of the runs' own ratios, and their range."""
    runs = medians({"buildkit": row["buildkit"], "pipeline": row["pipeline"]})["run_ratios"]
    if not runs:
        return ""
    spread = f" ({min(runs):.2f}-{max(runs):.2f})" if len(runs) > 1 else ""
    return f"{statistics.median(runs):.2f}x{spread}"


def measure_sizes(pipeline: Pipeline, peer: Peer, work: Path) -> dict[str, Any]:
    """Compressed sizes of the last run's images (its tree: the edit and the added package)."""
    try:
        measured = {}
        for tool in (peer, pipeline):
            (work / tool.name).mkdir()
            measured[tool.name] = tool.sizes(work / tool.name)
    except (RuntimeError, subprocess.CalledProcessError, KeyError, ValueError) as exc:
        print(f"warning: sizes not measured: {exc}", file=sys.stderr)
        return {"error": str(exc)[-1000:]}  # e.g. the disk full
    return {
        "images": {k: v.images for k, v in measured.items()},
        "total": {k: sum(v.images.values()) for k, v in measured.items()},
        "distinct": {k: v.distinct for k, v in measured.items()},
        "pushed": {k: v.pushed for k, v in measured.items() if v.pushed is not None},
    }


def cell(value: float | None, outcomes: list[dict[str, Any]]) -> str:
    """A median, or why there is none; how many of the runs failed."""
    if not outcomes:
        return "n/a"
    failed = sum(not o["ok"] for o in outcomes)
    text = "failed" if value is None else f"{value:.2f} s"
    return text + (f" ({failed} of {len(outcomes)} failed)" if failed and value else "")


def cpu_cells(row: dict[str, Any]) -> str:
    """The median CPU-seconds of each side and their ratio (blank where not recorded)."""
    bk, pl = row.get("median_cpu_buildkit"), row.get("median_cpu_pipeline")
    ratio = f"{pl / bk:.2f}x" if bk and pl else ""
    return " | ".join(["" if v is None else f"{v:.1f}" for v in (bk, pl)] + [ratio])


def which_dagger(data: dict[str, Any]) -> str:
    """`Dagger v0.21.8 (dagger-io 0.21.8)`; results written before the versions were recorded
    say they do not know."""
    dagger = data.get("dagger")
    if not dagger:
        return "Dagger (version not recorded)"
    return f"Dagger {dagger['engine']} (dagger-io {dagger['sdk']})"


def load_text(data: dict[str, Any]) -> str:
    """The machine's 1-minute load average at the start and end of each run, and its busy
    CPU-seconds per second before the first (what every CPU figure includes of the rest)."""
    machine = data.get("machine", {})
    runs = machine.get("load_1min_per_run")
    text = "load (1 min) per run " + ", ".join(f"{a:.1f}-{b:.1f}" for a, b in runs or [])
    idle = machine.get("idle_cpu_per_second")
    if idle is not None:
        text += f", busy CPU-s per second at rest {idle:.2f}"
    pruned = machine.get("engine_cache_pruned_bytes")
    if pruned and None not in pruned:
        gb = ", ".join(f"{size / 1e9:.1f}" for size in pruned)
        text += f", the engine's cache emptied at each run's start (GB before: {gb})"
    elif pruned:
        text += ", the engine's cache not emptied (its API cannot)"
    return text if runs else "load not recorded"


def table(data: dict[str, Any]) -> str:
    header = (
        f"Medians of {data['runs']} run(s); ratio = pipeline / BuildKit (below 1: the pipeline "
        "is faster or smaller)."
    )
    machine = data.get("machine", {})
    dagger = data.get("dagger", {})
    docker = data.get("docker", {})
    about = (
        f"{data.get('created', '?')}; pipeline on {which_dagger(data)}, commit "
        f"{dagger.get('pipeline_commit', '?')}; BuildKit: dockerd {docker.get('server', '?')} "
        f"(peer: {docker.get('peer', 'targets')}); the pipeline's layers "
        f"{data.get('compression', 'gzip')}; {machine.get('cpus', '?')} CPUs, "
        f"{load_text(data)}."
    )
    lines = [
        header,
        "",
        about,
        "",
        (
            "| scenario | BuildKit | pipeline | ratio of the medians | each run's ratio: median "
            "(range) | BuildKit CPU-s | pipeline CPU-s | CPU ratio |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in data["scenarios"]:
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] else ""
        bk, pl = row["buildkit"], row["pipeline"]
        lines.append(
            f"| {row['label']} | {cell(row['median_buildkit'], bk)} | "
            f"{cell(row['median_pipeline'], pl)} | {ratio} | {run_ratio(row)} | {cpu_cells(row)} |"
        )
    for key, label in (("total", "sum of image sizes"), ("distinct", "distinct registry bytes")):
        size = data["sizes"].get(key)
        if size:
            bk, pl = size["buildkit"] / 1e6, size["pipeline"] / 1e6
            mb = f"| {bk:.1f} MB | {pl:.1f} MB | {pl / bk:.2f}x |"
            lines.append(f"| {label} (gzip -6) {mb} | | | |")
    pushed = data["sizes"].get("pushed", {}).get("pipeline")
    if pushed:
        how = data.get("compression", "gzip")
        note = f"The pipeline's own layer blobs (the engine's {how}, what a push sends):"
        lines += ["", f"{note} {pushed / 1e6:.1f} MB distinct."]
    return "\n".join(lines) + "\n"


def side_by_side(results: list[dict[str, Any]]) -> str:
    """The tables of several peer.json (one per Dagger generation) as one: per scenario, each
    result's BuildKit and pipeline medians and their ratio, measured in the same run."""
    names = [
        (d.get("dagger") or {}).get("engine", f"result {i + 1}") for i, d in enumerate(results)
    ]
    ratio = "Ratio = pipeline / BuildKit, both measured in the same run (below 1: the pipeline "
    lines = [ratio + "is faster or smaller).", ""]
    lines += [
        f"- {n}: {which_dagger(d)}, {d['runs']} run(s), {d.get('created', '?')}, "
        f"pipeline commit {(d.get('dagger') or {}).get('pipeline_commit', '?')}, "
        f"dockerd {d.get('docker', {}).get('server', '?')}, {load_text(d)}"
        for n, d in zip(names, results, strict=True)
    ]
    lines += [
        "",
        "| scenario | "
        + " | ".join(f"{n} BuildKit | {n} pipeline | {n} ratio per run" for n in names)
        + " |",
    ]
    lines.append("|---" * (1 + 3 * len(results)) + "|")
    keys = dict.fromkeys(row["key"] for data in results for row in data["scenarios"])
    for key in keys:
        cells = [key]
        for data in results:
            row = next((r for r in data["scenarios"] if r["key"] == key), None)
            if row is None:
                cells += ["n/a", "n/a", ""]
                continue
            cells += [
                cell(row["median_buildkit"], row["buildkit"]),
                cell(row["median_pipeline"], row["pipeline"]),
                run_ratio(row),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    for key, label in (("total", "sum of image sizes"), ("distinct", "distinct registry bytes")):
        cells = [f"{label} (gzip -6)"]
        for data in results:
            size = data.get("sizes", {}).get(key)
            if not size:
                cells += ["not measured", "not measured", ""]
                continue
            bk, pl = size["buildkit"] / 1e6, size["pipeline"] / 1e6
            cells += [f"{bk:.1f} MB", f"{pl:.1f} MB", f"{pl / bk:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(data: dict[str, Any], target: Path) -> None:
    plt = charts.pyplot()
    if plt is None:
        return
    rows = [r for r in data["scenarios"] if r["median_buildkit"] or r["median_pipeline"]]
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(rows) + 1.5))
    ys = range(len(rows))
    for offset, tool, color in ((-0.2, "buildkit", "#7f7f7f"), (0.2, "pipeline", "#1f77b4")):
        values = [r[f"median_{tool}"] or 0 for r in rows]
        ax.barh([y + offset for y in ys], values, height=0.4, label=tool, color=color)
    ax.set_yticks(list(ys), [r["key"] for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel("seconds (median, log scale)")
    ax.invert_yaxis()
    ax.legend()
    ax.set_title(f"pipeline ({which_dagger(data)}) vs hand-written Dockerfiles on BuildKit")
    fig.tight_layout()
    fig.savefig(target, dpi=120)


def load(path: Path) -> dict[str, Any]:
    """A peer.json, or a clear stop naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"{path}: not a peer.json this script wrote ({exc})")
    if not isinstance(data, dict) or "scenarios" not in data or "runs" not in data:
        fail(f"{path}: no `scenarios` or `runs`: not a peer.json this script wrote")
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument(
        "--out",
        type=Path,
        help="where peer.{json,md,png} go (default: benchmarks/results/dagger-<engine version>)",
    )
    parser.add_argument(
        "--peer",
        choices=PEERS,
        default="targets",
        help="how the peer builds its targets: `targets` (default), one `docker build --target` "
        "process each, all at once; `bake`, all in one `docker buildx bake` (buildx "
        f"{BUILDX_VERSION}, built with `go install` on first use)",
    )
    parser.add_argument(
        "--compression",
        choices=("gzip", "zstd", "uncompressed"),
        default="gzip",
        help="the pipeline's layer compression (the config's `compression`; default gzip; "
        "uncompressed also sets each service's size budget to four times its own); the "
        "peer's images are measured gzipped either way",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        metavar="PEER_JSON",
        help="measure nothing: print the tables of these peer.json side by side",
    )
    args = parser.parse_args()
    if args.compare:
        print(side_by_side([load(path) for path in args.compare]), end="")
        return 0
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    base = os.environ.get("PIPELINE_BASE_IMAGE")
    # the loopback registry's host (cold-publish pushes there, under a namespace per run)
    registry = os.environ.get("PIPELINE_REGISTRY", "").split("/", 1)[0]
    if not base or not registry or not os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST"):
        fail('run `eval "$(scripts/engine env)"` first (PIPELINE_DAGGER_VERSION=... for another)')
    dagger = dagger_info()
    if args.peer == "bake":
        env = ensure_buildx()
        docker, how = find_bake_docker(env)

        def make_peer(repo: Path) -> Peer:
            return BakePeer(docker, repo, base, env)
    else:
        docker, how = find_docker()

        def make_peer(repo: Path) -> Peer:
            return Peer(docker, repo, base)

    if not run([docker, "info"]).ok:
        fail(f"dockerd does not answer `{docker} info`")
    server = output(docker, "version", "--format", "{{.Server.Version}}")
    print(f"peer: {docker} ({how}), dockerd {server}, base {base}")
    print(
        f"peer: pipeline: {dagger['python']} -m pipeline, dagger-io {dagger['sdk']}, "
        f"engine {dagger['engine']} at {dagger['runner_host']}"
    )
    out = args.out or ROOT / "benchmarks" / "results" / f"dagger-{dagger['engine']}"
    results: dict[str, Any] = {key: {"buildkit": [], "pipeline": []} for key in SCENARIOS}
    load_1min: list[list[float]] = []  # the machine's load average as each run began and ended
    pruned: list[int | None] = []  # bytes the engine's cache held before each run emptied it
    compiled(ROOT / "pipeline")
    at_rest = idle_rate()
    with tempfile.TemporaryDirectory(prefix="peer-bench-") as tmp:
        for index in range(args.runs):
            before = os.getloadavg()[0]
            pipeline, peer = one_run(
                index, make_peer, base, Path(tmp), results, registry, pruned, args.compression
            )
            load_1min.append([round(before, 2), round(os.getloadavg()[0], 2)])
        sizes = measure_sizes(pipeline, peer, Path(tmp))
    peer.prune_images()
    scenarios = [
        {"key": key, "label": label, **results[key], **medians(results[key])}
        for key, label in SCENARIOS.items()
    ]
    data = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": args.runs,
        "dagger": dagger,
        "docker": {"cli": docker, "how": how, "server": server, "peer": args.peer},
        "compression": args.compression,
        "base_image": base,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_1min_per_run": load_1min,
            "idle_cpu_per_second": round(at_rest, 3),
            "engine_cache_pruned_bytes": pruned,
        },
        "scenarios": scenarios,
        "sizes": sizes,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer.json").write_text(json.dumps(data, indent=2) + "\n")
    markdown = table(data)
    (out / "peer.md").write_text(markdown)
    chart(data, out / "peer.png")
    print(markdown)
    failed = any(not o["ok"] for row in scenarios for t in ("buildkit", "pipeline") for o in row[t])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
