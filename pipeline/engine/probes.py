"""Health probes of a running image: HTTP, gRPC (the standard grpc.health.v1 protocol) or TCP,
each bounded like Docker's HEALTHCHECK: a server gets ``start_period`` to start listening and
each probe ``timeout``, all within ``start_period + timeout``; a definite answer (an HTTP error
status) fails at once, and so does a service that stops.

Like Docker's HEALTHCHECK, the probe runs inside the container it checks: one exec of the image
runs ``programs/probe.py`` (a program of this package, mounted), which starts the service (the
image's entrypoint and command) as its child and probes the container's own non-loopback
address. So a service that crashes is reported by its own exit code and the tail of its own
log, and no Dagger service is started: nothing waits on the engine's service start (its host
name, its port check, an inherited Docker HEALTHCHECK on newer engines).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import dagger
from dagger import dag

from pipeline.core.config import argv
from pipeline.core.errors import BuildError
from pipeline.engine import compat, images, layers
from pipeline.engine.layers import one_step
from pipeline.engine.programs import probe as probe_program

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.core.config import HealthSpec
    from pipeline.core.model import Service
    from pipeline.core.settings import BuildSettings

LOG_LINES = 20
PROBE_VENV = "/opt/probe"  # what a probe kind requires, built in the builder, mounted
PROGRAM_DIR = "/opt/pipeline-probe"
PROGRAM = f"{PROGRAM_DIR}/probe.py"


def program_text() -> str:
    """The probe program's source, as the package ships it."""
    return layers.program_text("probe.py")


def _with_prober(
    probe: HealthSpec, settings: BuildSettings, secrets: images.Secrets
) -> tuple[Callable[[dagger.Container], dagger.Container], str]:
    """The step mounting what the probe needs into the image, and the python that runs it."""
    program = dag.directory().with_new_file("probe.py", program_text(), permissions=0o444)
    requires = probe_program.REQUIRES.get(probe.kind, ())
    if not requires:

        def plain(ctr: dagger.Container) -> dagger.Container:
            return ctr.with_mounted_directory(PROGRAM_DIR, program)

        return plain, "python3"
    python = f"{PROBE_VENV}/bin/python"
    install = one_step(
        ["uv", "venv", "-q", "--python", "python3", PROBE_VENV],
        ["uv", "pip", "install", "-q", "--python", python, *requires],
    )
    # built from the same base image, so its python is the image's own interpreter
    venv = (
        images.builder(settings, secrets=secrets).with_(compat.run(install)).directory(PROBE_VENV)
    )

    def with_venv(ctr: dagger.Container) -> dagger.Container:
        return ctr.with_mounted_directory(PROGRAM_DIR, program).with_mounted_directory(
            PROBE_VENV, venv
        )

    return with_venv, python


async def health(
    service: Service, image: dagger.Container, settings: BuildSettings, secrets: images.Secrets
) -> None:
    """Run the image's service under the probe, in one exec of the image."""
    spec, probe = service.spec, service.spec.probe
    if spec.port is None or probe is None:
        return
    entrypoint = await image.entrypoint() or []
    config = {
        "kind": probe.kind,
        "port": spec.port,
        "command": [*entrypoint, *argv(spec.command)],
        "target": probe.target,
        "timeout": probe.timeout,
        "interval": probe.interval,
        "start_period": probe.start_period,
        "log_lines": LOG_LINES,
    }
    with_prober, python = _with_prober(probe, settings, secrets)
    try:
        await (
            image.with_(with_prober)
            .with_env_variable("PIPELINE_PROBE_AT", str(time.time_ns()))  # never cached
            .with_(compat.run([python, "-I", PROGRAM, json.dumps(config)]))
            .sync()
        )
    except dagger.ExecError as exc:
        raise BuildError(service.name, "health", reason(exc.stderr, exc.exit_code)) from exc


def reason(stderr: str, exit_code: int) -> str:
    """The probe's report out of its stderr (the engine may print lines of its own around
    it); if the probe could not report, its exit code and its last lines."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(probe_program.FAILED)]
    if starts:
        block = [lines[starts[-1]]]
        for line in lines[starts[-1] + 1 :]:
            if not line.startswith(("  ", "the service's log (")):
                break
            block.append(line)
        return "\n".join(block)
    last = [f"  {line}" for line in lines if line.strip()][-LOG_LINES:]
    return "\n".join(
        [f"{probe_program.FAILED}the probe could not run (exit code {exit_code})", *last]
    )
