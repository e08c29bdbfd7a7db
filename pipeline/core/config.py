"""Configuration: the project's root config and each service's manifest, as frozen models.

The root config is ``pipeline.toml`` or ``[tool.pipeline]`` in ``pyproject.toml``; each
service declares itself in ``<service>/service.toml``. Every error names the file, the
field and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from pipeline.core import placement
from pipeline.core.errors import ConfigError, UsageError
from pipeline.core.locate import read_toml
from pipeline.core.names import (
    IMAGE_EXAMPLE,
    IMAGE_REFERENCE,
    NAME_PATTERN,
    SCOPE_PATTERN,
)

ROOT_TIER = "base"
MANIFEST = "service.toml"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
# Debian package names (policy 5.6.1), optionally with an =version or /release.
DebPackage = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]+([=/][A-Za-z0-9.+~:-]+)?$")]


class _Strict(BaseModel):
    # strict: TOML's types are exact, so "yes" is no bool and true is no port number
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _refused(problem: str, fix: str) -> PydanticCustomError:
    """A field's value refused by a validator of ours: ``validate`` prints both parts."""
    return PydanticCustomError("refused", "{problem}", {"problem": problem, "fix": fix})


def _no_nul(value: str, what: str) -> None:
    # an exec's arguments and environment are C strings: a NUL would cut them short
    if "\0" in value:
        raise _refused(
            f"{what} holds a NUL character, which no command or environment can carry",
            "remove the NUL character (\\u0000)",
        )


class TierSpec(_Strict):
    extends: Name | None = Field(
        None, description="the tier this one builds on; only the root tier 'base' has none"
    )
    requirements: list[str] = Field(
        default_factory=list,
        description="requirement files for the tier's venv, relative to the project root",
    )
    group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="a dependency group of the uv workspace's root pyproject "
        "([dependency-groups]), installed as its uv.lock pins it",
    )
    libraries: list[str] = Field(
        default_factory=list,
        description="uv workspace libraries (package names) built into the tier's venv, with "
        "their dependencies as uv.lock pins them: the services of this tier and of the tiers "
        "above it take them from the tier's layer",
    )
    apt: list[DebPackage] = Field(
        default_factory=list, description="Debian packages the tier's runtime images need"
    )
    build_apt: list[DebPackage] = Field(
        default_factory=list,
        description="Debian packages only the builder needs (headers, compilers) for this tier",
    )


class ProjectSpec(_Strict):
    services: list[str] = Field(
        default_factory=lambda: ["services/*"],
        description="globs, relative to the project root, of folders that hold a service.toml",
    )
    base_image: str = Field(
        "python:3.11-slim-bookworm",
        description="the image every stage starts from, by tag or @sha256 digest (or "
        "--base-image, PIPELINE_BASE_IMAGE)",
    )
    user: Name = Field("app", description="the non-root user runtime images run as")
    uid: int = Field(10001, ge=1000, lt=65535, description="that user's numeric id")
    cache_scope: str | None = Field(
        None,
        pattern=SCOPE_PATTERN,
        description="prefix of cache volume names (default: from the git branch)",
    )
    compile_bytecode: bool = Field(
        default=True,
        description="precompile venvs and sources (unchecked-hash .pyc) so containers start "
        "without compiling imports; false saves a little image size",
    )
    compression: Literal["gzip", "zstd", "uncompressed"] = Field(
        "gzip",
        description="how image layers are compressed, which the digest and the sizes (and "
        "so size budgets) depend on: gzip, which every runtime pulls; zstd, several times "
        "faster and smaller (a cold build or a package added to a tier in 0.8x the time), "
        "pulled by Docker 23+, containerd 1.5+, Podman; uncompressed, plain tar layers (as "
        "dockerd keeps the images it loads) for images that stay on the machine: the fastest "
        "cold build on Dagger v0.21 (slower on v0.11), but a push sends every byte",
    )
    source_url: str | None = Field(
        None, description="repository URL for org.opencontainers.image.source (default: git remote)"
    )
    test_requirements: list[str] = Field(
        default_factory=list,
        description="requirement files for running services' unit tests (pytest, ...), "
        "relative to the project root; installed in the builder only",
    )
    tiers: dict[Name, TierSpec] = Field(
        default_factory=lambda: {ROOT_TIER: TierSpec()},
        description="the dependency tiers; 'base' is the root, others extend a tier",
    )

    engines: str | None = Field(
        None,
        description="a pool of engines, name=url each, comma-separated, an optional "
        ";weight=N each (or --engines, PIPELINE_ENGINES): each tier's services on one engine",
    )

    @field_validator("engines")
    @classmethod
    def _pool(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                placement.parse(value, "engines")
            except UsageError as exc:
                problem, _, fix = str(exc).partition("; fix: ")
                raise _refused(problem.removeprefix("engines: "), fix) from None
        return value

    @field_validator("base_image")
    @classmethod
    def _image_reference(cls, value: str) -> str:
        if not IMAGE_REFERENCE.match(value):
            raise _refused(f"{value!r} is not an image reference", IMAGE_EXAMPLE)
        return value


# The probe kinds: each a field of HealthSpec below (its value: the kind's target, or true),
# each probed by the function of the same name in engine/programs/probe.py's ATTEMPTS.
PROBE_KINDS = ("http", "grpc", "tcp")


class HealthSpec(_Strict):
    """How a running image proves it is healthy; bounded like Docker's HEALTHCHECK."""

    http: str | None = Field(
        None, pattern=r"^/", description="an HTTP path that answers 2xx when healthy"
    )
    grpc: str | None = Field(
        None,
        description="the service name to ask with the standard grpc.health.v1 protocol "
        '("" for the server as a whole)',
    )
    tcp: bool | None = Field(None, description="true: healthy once the port accepts connections")
    timeout: float = Field(5, gt=0, le=600, description="seconds one probe may take")
    interval: float = Field(0.5, gt=0, le=60, description="seconds between probes")
    start_period: float = Field(
        30, ge=0, le=600, description="seconds the server may take to start listening"
    )

    @property
    def kind(self) -> str:
        kinds = [k for k in PROBE_KINDS if getattr(self, k) not in (None, False)]
        return kinds[0] if len(kinds) == 1 else ""

    @property
    def target(self) -> str:
        """What the kind asks for: an HTTP path, a gRPC service name; "" for none."""
        value = getattr(self, self.kind, None) if self.kind else None
        return value if isinstance(value, str) else ""


class ServiceSpec(_Strict):
    name: Name | None = Field(None, description="the image name (default: the folder's name)")
    tier: Name = Field(description="the tier whose image this service builds on")
    command: list[str] | str = Field(
        description="the command the container runs: a list (exec form) or a string (shell "
        "form, run by sh -c), as a Dockerfile's CMD",
    )
    workdir: str = Field(
        "/app",
        pattern=r"^/",
        description="the working directory of the runtime image; the service's files are in "
        "/app, which is also on PYTHONPATH",
    )
    port: int | None = Field(None, ge=1, le=65535, description="the port the service listens on")
    health_path: str | None = Field(
        None, pattern=r"^/", description="shorthand for health = { http = PATH } (needs port)"
    )
    health: HealthSpec | Literal["none"] | None = Field(
        None,
        description='the probe of the port: { http = "/health" }, { grpc = "" } or '
        '{ tcp = true }, with timeout, interval and start_period in seconds; "none" for a '
        "port that is not probed",
    )
    apt: list[DebPackage] = Field(
        default_factory=list, description="extra Debian packages at runtime"
    )
    include: list[str] = Field(
        default_factory=lambda: ["**"], description="globs of the folder's files that are uploaded"
    )
    exclude: list[str] = Field(
        default_factory=list, description="globs of the folder's files that are never uploaded"
    )
    requirements: str | None = Field(
        None,
        description="the service's own requirements.txt or pyproject.toml, relative to its folder",
    )
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(
        default_factory=dict, description="environment of the runtime (NAME = value)"
    )
    tests: list[str] | None = Field(
        None,
        min_length=1,
        description="the service's unit tests, run in its folder in the builder stage "
        "(e.g. python -m pytest -q tests)",
    )
    smoke: list[str] | None = Field(
        None, min_length=1, description="a command that must exit 0 inside the built image"
    )
    size_budget_mb: float | None = Field(
        None, gt=0, description="fail the build when the image's compressed size exceeds this"
    )

    @field_validator("command", "tests", "smoke", "env")
    @classmethod
    def _exec_text(cls, value: Any) -> Any:  # noqa: ANN401 - each field's own type, unchanged
        if isinstance(value, str):
            _no_nul(value, "the command")
        elif isinstance(value, list):
            for i, arg in enumerate(value):
                _no_nul(arg, f"argument {i + 1}")
        elif isinstance(value, dict):
            for name, text in value.items():
                _no_nul(text, f"the value of {name}")
        return value

    @property
    def probe(self) -> HealthSpec | None:
        """The health probe, from ``health`` or the ``health_path`` shorthand."""
        if isinstance(self.health, HealthSpec):
            return self.health
        if self.health_path is not None:
            return HealthSpec(http=self.health_path)
        return None


def argv(command: list[str] | str) -> list[str]:
    """A command as the container runs it: the shell form through ``sh -c``."""
    return ["sh", "-c", command] if isinstance(command, str) else list(command)


def _field_help(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The description of the field an error points at, walking nested models."""
    current: Any = model
    description = ""
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not isinstance(part, str) or fields is None or part not in fields:
            continue
        info = fields[part]
        description = info.description or ""
        current = info.annotation
    return description


def validate(model: type[_Strict], data: object, file: Path, prefix: str = "") -> Any:  # noqa: ANN401 - callers annotate the model they asked for
    """Validate ``data`` as ``model``; the first error becomes a ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        # Without the union members' and dict keys' tags: "command", not "command.list[str]",
        # "health.timeout", not "health.HealthSpec.timeout".
        models = {"HealthSpec", "TierSpec", "ServiceSpec", "ProjectSpec"}
        loc = tuple(
            p
            for p in err["loc"]
            if not (
                isinstance(p, str) and (p in {"str", "int", "float", "bool", *models} or "[" in p)
            )
        )
        field = ".".join([prefix, *map(str, loc)] if prefix else map(str, loc))
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = ", ".join(model.model_fields)
            fix = f"remove it; the fields here are: {allowed}"
            problem = "unknown field"
        elif kind == "missing":
            problem = "is required"
            fix = f"add it: {_field_help(model, loc)}"
        elif kind == "refused":
            problem, fix = err["msg"], str(err.get("ctx", {}).get("fix"))
        else:
            problem = err["msg"]
            fix = f"set it to {_field_help(model, loc) or 'a valid value'}"
        raise ConfigError(file, field, problem, fix) from None


def load_project(root: Path) -> tuple[ProjectSpec, Path]:
    """The root config and the file it came from: pipeline.toml or [tool.pipeline], never
    both (one would silently win)."""
    candidate = root / "pipeline.toml"
    pyproject = root / "pyproject.toml"
    section = None
    if pyproject.is_file():
        section = read_toml(pyproject).get("tool", {}).get("pipeline")
    if candidate.is_file():
        if section is not None:
            raise ConfigError(
                pyproject,
                "tool.pipeline",
                "is a second configuration beside pipeline.toml",
                "keep one of them: move the settings into pipeline.toml and remove the table",
            )
        return validate(ProjectSpec, read_toml(candidate), candidate), candidate
    if section is not None:
        return validate(ProjectSpec, section, pyproject, "tool.pipeline"), pyproject
    raise ConfigError(
        root,
        "",
        "no pipeline configuration found",
        "add pipeline.toml (or [tool.pipeline] in pyproject.toml) with services and [tiers.base]",
    )


def load_service(manifest: Path) -> ServiceSpec:
    spec: ServiceSpec = validate(ServiceSpec, read_toml(manifest), manifest)
    if not (spec.command.strip() if isinstance(spec.command, str) else spec.command):
        raise ConfigError(manifest, "command", "is empty", "give the command the image runs")
    if spec.health_path and spec.health is not None:
        raise ConfigError(
            manifest, "health_path", "and health both given", "keep health = { http = ... }"
        )
    probe = spec.probe
    if probe is not None and spec.port is None:
        field = "health_path" if spec.health_path else "health"
        raise ConfigError(manifest, field, "needs a port", "add port = <the listening port>")
    if isinstance(spec.health, HealthSpec) and not spec.health.kind:
        raise ConfigError(
            manifest,
            "health",
            f"needs exactly one probe kind of: {', '.join(PROBE_KINDS)}",
            'e.g. health = { http = "/health" }, { grpc = "" } or { tcp = true }',
        )
    if spec.port is not None and probe is None and spec.health != "none":
        raise ConfigError(
            manifest,
            "health",
            f"port {spec.port} has no health probe, so nothing would check the server starts",
            f'add health = {{ http = "/health" }} (or {", ".join(PROBE_KINDS[1:])}), or health = '
            '"none" to skip it',
        )
    return spec
