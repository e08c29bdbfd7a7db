"""scripts/engine's host install on a host that lacks what a fresh machine lacks: the script
runs with a PATH holding only a shell's basics, a Docker *client* and an apt-get that records
what it is asked to install. The choice of Dagger version and what each version's engine is
named, the check of Dagger's modules against their pinned sums, two generations' engines up at
once, and the engine image's upkeep of its own databases."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.conftest import ROOT, value_of

if TYPE_CHECKING:
    from pathlib import Path

SCRIPT = ROOT / "scripts/engine"
PINNED = json.loads((ROOT / "dagger.json").read_text())["engineVersion"]
OTHER = "v0.11.4"  # the other generation scripts/engine builds
BASE_NAME = "pipeline-dagger-engine"
RUNNER_SOCKET = re.compile(r"^unix:///run/([^/]+)/buildkitd\.sock$")


def engine_name() -> str:
    """The container of the engine the environment points at (``scripts/engine env``'s socket
    is /run/<container>/buildkitd.sock)."""
    runner = RUNNER_SOCKET.match(os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST", ""))
    return runner[1] if runner else os.environ.get("PIPELINE_ENGINE_NAME", "pipeline-dagger-engine")


def engine(
    *args: str, version: str | None = None, script: Path = SCRIPT, path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The script as a user runs it (``path``: a folder put first on PATH)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    if version:
        env["PIPELINE_DAGGER_VERSION"] = version
    if path:
        env["PATH"] = f"{path}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=env, check=False
    )


def exports(version: str | None, path: Path | None = None) -> dict[str, str]:
    """What ``scripts/engine env`` exports for ``version`` (dagger.json's when None)."""
    done = engine("env", version=version, path=path)
    assert done.returncode == 0, done.stderr
    return dict(re.findall(r"(\w+)=(\S+)", done.stdout))


BASICS = ("bash", "sed", "dirname", "cat", "mkdir", "printf")
TOOLS = ("dockerd", "debootstrap", "docker-registry", "git", "curl", "jq", "skopeo", "tar",
         "chromium", "sha256sum", "go")  # fmt: skip


def fake_host(tmp_path: Path, present: tuple[str, ...]) -> tuple[Path, Path]:
    """A bin folder with the basics, a docker client, ``present`` tools, and a recording
    apt-get; returns it and the record file."""
    bin_dir, record = tmp_path / "bin", tmp_path / "apt-get.log"
    bin_dir.mkdir()
    for name in BASICS:
        found = shutil.which(name)
        assert found, name
        (bin_dir / name).symlink_to(found)
    for name in ("docker", *present):  # a client answers `docker --version`; nothing else
        (bin_dir / name).write_text("#!/bin/sh\necho 'Docker version 28.2.2'\n")
        (bin_dir / name).chmod(0o755)
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {record}\n')
    (bin_dir / "apt-get").chmod(0o755)
    return bin_dir, record


def host_tools(bin_dir: Path, keyring: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(bin_dir), "PIPELINE_DEBIAN_KEYRING": str(keyring), "HOME": "/nonexistent"}
    return subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "scripts/engine"), "host-tools"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_a_host_with_only_a_docker_client_gets_the_daemon_and_every_tool(tmp_path: Path):
    bin_dir, record = fake_host(tmp_path, present=())
    done = host_tools(bin_dir, tmp_path / "no-keyring.gpg")
    assert done.returncode == 0, done.stderr
    calls = record.read_text().splitlines()
    assert calls[0] == "update -qq"
    installed = set(calls[1].split()) - {"install", "-y", "-qq", "--no-install-recommends"}
    assert installed == {
        "docker.io",  # the docker client is there, the daemon is not
        "debootstrap",
        "docker-registry",
        "git",
        "curl",
        "jq",
        "skopeo",
        "tar",
        "chromium",  # the HTML report's browser test
        "coreutils",
        "golang-go",
        "debian-archive-keyring",
    }


def test_a_complete_host_installs_nothing(tmp_path: Path):
    bin_dir, record = fake_host(tmp_path, present=TOOLS)
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"")
    done = host_tools(bin_dir, keyring)
    assert done.returncode == 0, done.stderr
    assert not record.exists()


@pytest.mark.engine
def test_the_engine_image_compacts_its_databases(tmp_path: Path):
    """The engine image's entrypoint step (compact-engine-dbs) shrinks a bolt database above
    64 MB that holds free pages and leaves it intact; a smaller one, and one bbolt cannot
    read, are left as they were."""
    image = subprocess.run(
        ["docker", "inspect", "-f", "{{.Config.Image}}", engine_name()],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not image:
        pytest.fail(f"no engine container {engine_name()}: scripts/engine up first")
    script = (
        "set -e; cd /data/state; "
        # random writes in batches leave free pages behind, as the engine's GC does
        "bbolt bench -count 100000 -batch-size 500 -write-mode rnd -value-size 600 -no-sync "
        "-path big.db -work >/dev/null; "
        "bbolt bench -count 1000 -path small.db -work >/dev/null; "
        "head -c 70000000 /dev/urandom > broken.db; "
        "sha256sum small.db broken.db > before.sum; echo big=$(stat -c %s big.db); "
        "compact-engine-dbs /data; "
        "echo after=$(stat -c %s big.db); bbolt check big.db; sha256sum -c before.sum; ls"
    )
    (tmp_path / "state").mkdir()
    done = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", "-v", f"{tmp_path}:/data", image, "-c",
         script],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    big, after = value_of(done.stdout, "big"), value_of(done.stdout, "after")
    assert int(big) > 64 << 20
    assert int(after) < int(big) * 0.9
    assert "OK" in done.stdout.split()  # bbolt check
    assert "small.db: OK" in done.stdout
    assert "broken.db: OK" in done.stdout
    assert ".compact" not in done.stdout  # no half-written copy left behind


def docker_with_state(tmp_path: Path, state: Path) -> tuple[Path, Path]:
    """A folder holding a ``docker`` whose daemon answers, that knows no container and one
    volume, dagger.json's engine's state, mounted at ``state``; it records what it is asked to
    stop or remove. Its ``go`` leaves a mark and fails, so ``up`` stops at the Go build, after
    the state."""
    bin_dir, record = tmp_path / "bin", tmp_path / "docker.log"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        "#!/bin/sh\n"
        f'case " $* " in\n'
        "  ' info '*) exit 0 ;;\n"
        f"  *' volume inspect -f '*' {BASE_NAME}-state ') echo {state} ;;\n"
        f"  ' stop '*|' rm '*|' volume rm '*) echo \"$*\" >> {record} ;;\n"
        "  *) exit 1 ;;\n"
        "esac\n"
    )
    (bin_dir / "go").write_text(f"#!/bin/sh\ntouch {tmp_path / 'go-ran'}\nexit 1\n")
    for name in ("docker", "go"):
        (bin_dir / name).chmod(0o755)
    return bin_dir, record


@pytest.mark.skipif(os.geteuid() != 0, reason="scripts/engine up runs as root")
@pytest.mark.parametrize(
    ("limit", "removed", "running"),
    [("1MB", True, False), ("1MB", True, True), ("3MB", False, True), ("", False, False)],
)
def test_up_starts_the_engine_on_an_empty_state_when_its_state_is_over_the_limit(
    tmp_path: Path, limit: str, removed: bool, running: bool
):
    state = tmp_path / "state"
    state.mkdir()
    (state / "snapshots.db").write_bytes(os.urandom(2 << 20))  # 2 MiB of the engine's state
    bin_dir, record = docker_with_state(tmp_path, state)
    if running:  # the engine removes a file while du walks its state: du says so and fails
        (bin_dir / "du").write_text(
            f'#!/bin/sh\n{shutil.which("du")} "$@"\n'
            f"echo \"du: cannot access '{state}/dagql-cache.db-wal': No such file\" >&2\n"
            "exit 1\n"
        )
        (bin_dir / "du").chmod(0o755)
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env |= {
        "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}",
        "PIPELINE_ENGINE_STATE_MAX": limit,
        "PIPELINE_ENGINE_HOME": str(tmp_path / "home"),
        "PIPELINE_DEBIAN_KEYRING": str(keyring),
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), "up"], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode != 0  # the fake Go: up goes no further than the state
    assert (tmp_path / "go-ran").exists(), done.stderr  # up went past the state to the build
    calls = record.read_text().splitlines() if record.exists() else []
    if removed:  # the engine stopped (not killed: see the next test), then gone with its state
        assert [c.split()[0] for c in calls] == ["stop", "rm", "volume"]
        assert calls[0].endswith(f" {BASE_NAME}")
        assert calls[1:] == [f"rm -f {BASE_NAME}", f"volume rm {BASE_NAME}-state"]
        assert f"over PIPELINE_ENGINE_STATE_MAX={limit}" in done.stderr
    else:
        assert calls == []


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("PIPELINE_ENGINE_STATE_MAX", "six gigabytes", "is not a size"),
        ("PIPELINE_ENGINE_GOGC", "lots", "is not a garbage-collection target"),
        ("PIPELINE_ENGINE_GOGC", "0", "is not a garbage-collection target"),
    ],
)
def test_a_setting_that_is_not_a_value_of_its_kind_is_refused_before_anything_runs(
    setting: str, value: str, says: str
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    done = subprocess.run(
        ["bash", str(SCRIPT), "up"],
        capture_output=True,
        text=True,
        env=env | {setting: value},
        check=False,
    )
    assert done.returncode == 2
    assert f"{setting}={value} {says}" in done.stderr
    assert "Traceback" not in done.stderr


def docker_knowing(tmp_path: Path, containers: dict[str, str]) -> Path:
    """A folder holding a ``docker`` that knows only ``containers`` (name: the Dagger version
    its image is labelled with) and no volume."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    known = "".join(f'  *" {name}") echo {version} ;;\n' for name, version in containers.items())
    (bin_dir / "docker").write_text(
        f'#!/bin/sh\n[ "$1" = inspect ] || exit 1\ncase " $*" in\n{known}  *) exit 1 ;;\nesac\n'
    )
    (bin_dir / "docker").chmod(0o755)
    return bin_dir


def socket_of(name: str) -> str:
    return f"unix:///run/{name}/buildkitd.sock"


def test_the_version_is_dagger_json_s_unless_one_is_chosen_and_each_has_its_own_engine(
    tmp_path: Path,
):
    fresh = docker_knowing(tmp_path, {})  # a machine with no engine yet
    default, other = exports(None, fresh), exports(OTHER, fresh)
    assert default["_EXPERIMENTAL_DAGGER_CLI_BIN"].endswith(f"/bin/{PINNED}/dagger")
    assert default["_EXPERIMENTAL_DAGGER_RUNNER_HOST"] == socket_of(BASE_NAME)
    assert exports(PINNED, fresh) == default  # naming dagger.json's version changes nothing
    assert other["_EXPERIMENTAL_DAGGER_CLI_BIN"].endswith(f"/bin/{OTHER}/dagger")
    assert other["_EXPERIMENTAL_DAGGER_RUNNER_HOST"] == socket_of(f"{BASE_NAME}-{OTHER}")
    # one registry, one base image: what either engine pushes, the other and the host see
    for key in ("PIPELINE_BASE_IMAGE", "PIPELINE_REGISTRY", "PIPELINE_CA_BUNDLE"):
        assert other[key] == default[key]


@pytest.mark.parametrize(
    ("containers", "pinned_in", "other_in"),
    [
        ({BASE_NAME: PINNED}, BASE_NAME, f"{BASE_NAME}-{OTHER}"),
        # started when the other version was dagger.json's: each engine keeps its container
        ({BASE_NAME: OTHER}, f"{BASE_NAME}-{PINNED}", BASE_NAME),
        ({BASE_NAME: OTHER, f"{BASE_NAME}-{PINNED}": PINNED}, f"{BASE_NAME}-{PINNED}", BASE_NAME),
        # the other version's engine went down: dagger.json's keeps the one it runs in
        ({f"{BASE_NAME}-{PINNED}": PINNED}, f"{BASE_NAME}-{PINNED}", f"{BASE_NAME}-{OTHER}"),
    ],
)
def test_an_engine_keeps_its_container_when_dagger_json_s_version_changes(
    tmp_path: Path, containers: dict[str, str], pinned_in: str, other_in: str
):
    docker = docker_knowing(tmp_path, containers)
    assert exports(None, docker)["_EXPERIMENTAL_DAGGER_RUNNER_HOST"] == socket_of(pinned_in)
    assert exports(OTHER, docker)["_EXPERIMENTAL_DAGGER_RUNNER_HOST"] == socket_of(other_in)


@pytest.mark.parametrize(
    ("version", "says"),
    [
        ("latest", "PIPELINE_DAGGER_VERSION=latest is not a Dagger release"),
        ("v0.21.9", "Dagger v0.21.9 has no module sums pinned in"),
    ],
)
def test_a_version_that_cannot_be_built_is_refused_before_anything_runs(version: str, says: str):
    for command in ("env", "up", "down"):
        done = engine(command, version=version)
        assert done.returncode == 2, done.stderr
        assert says in done.stderr
        assert done.stdout == ""


@pytest.fixture
def pinned_copy(tmp_path: Path) -> Path:
    """The script, dagger.json and the pinned sums in a checkout of their own (no shared Go
    proxy beside it); returns the sums file."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts/engine")
    shutil.copy(ROOT / "dagger.json", tmp_path / "dagger.json")
    shutil.copy(ROOT / "scripts/dagger-modules.sum", tmp_path / "scripts/dagger-modules.sum")
    return tmp_path / "scripts/dagger-modules.sum"


@pytest.mark.skipif(not shutil.which("go"), reason="needs Go (scripts/engine host-tools)")
@pytest.mark.parametrize("version", [PINNED, OTHER])
def test_dagger_s_modules_match_their_pinned_sums(version: str):
    done = engine("verify", version=version)
    assert done.returncode == 0, done.stderr
    assert f"github.com/dagger/dagger@{version} h1:" in done.stderr
    assert f"dagger.io/dagger@{version} h1:" in done.stderr


@pytest.mark.skipif(not shutil.which("go"), reason="needs Go (scripts/engine host-tools)")
def test_a_module_that_differs_from_its_pin_stops_the_build(pinned_copy: Path):
    pins = pinned_copy.read_text()
    wrong = re.sub(
        rf"^(dagger\.io/dagger {PINNED}) h1:\S+$",
        r"\1 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        pins,
        flags=re.MULTILINE,
    )
    assert wrong != pins
    pinned_copy.write_text(wrong)
    done = engine("verify", script=pinned_copy.parent / "engine")
    assert done.returncode == 1
    assert f"verifying dagger.io/dagger@{PINNED}: checksum mismatch" in done.stderr
    assert f"differ from the sums pinned in {pinned_copy}" in done.stderr


def running(name: str) -> bool:
    state = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return state.stdout.strip() == "true"


@pytest.mark.engine
def test_both_generations_answer_at_once_each_on_its_own_socket():
    """With both engines up (scripts/engine up, and PIPELINE_DAGGER_VERSION=v0.11.4
    scripts/engine up), each answers its own CLI at the same time with its own version; the
    one in the unsuffixed container uses the host's network, the other a namespace of its own."""
    names = {}
    for version in (PINNED, OTHER):
        runner = RUNNER_SOCKET.match(exports(version)["_EXPERIMENTAL_DAGGER_RUNNER_HOST"])
        assert runner, version
        names[version] = runner[1]
    # one holds the unsuffixed name, the other its version's
    suffixed = [version for version, name in names.items() if name != BASE_NAME]
    assert len(suffixed) == 1, names
    assert names[suffixed[0]] == f"{BASE_NAME}-{suffixed[0]}"
    down = [name for name in names.values() if not running(name)]
    if down:
        pytest.skip(f"not up: {', '.join(down)} (scripts/engine up for each version)")
    queries = {}
    for version in names:
        chosen = exports(version if version != PINNED else None)
        env = {**os.environ, **{k: v for k, v in chosen.items() if k != "PATH"}}
        queries[version] = subprocess.Popen(
            [env["_EXPERIMENTAL_DAGGER_CLI_BIN"], "query", "--progress", "plain"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd="/",
        )
    for version, query in queries.items():
        out, err = query.communicate("{ version }", timeout=300)
        assert query.returncode == 0, err
        assert json.loads(out)["version"] == version
    networks = {
        version: subprocess.run(
            ["docker", "inspect", "-f", "{{.HostConfig.NetworkMode}}", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for version, name in names.items()
    }
    assert networks == {v: "host" if name == BASE_NAME else "bridge" for v, name in names.items()}
    # each engine's Go runtime collects its garbage at the script's target, not Go's default
    target = os.environ.get("PIPELINE_ENGINE_GOGC", "400")
    for name in names.values():
        environ = subprocess.run(
            [
                "docker",
                "exec",
                name,
                "sh",
                "-c",
                "tr '\\0' '\\n' < /proc/$(pgrep -x dagger-engine | head -n1)/environ",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert f"GOGC={target}" in environ, (name, environ)
