"""Settings of one run, resolved once: command-line options > environment (PIPELINE_*) > the
project's config. Dagger-free, so ``plan`` and ``--help`` never load the engine's SDK.

Secrets are not settings: their values stay in the environment until the engine layer turns
them into Dagger secrets; a setting only says whether one is given.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core import config
from pipeline.core.config import SCOPE_PATTERN
from pipeline.core.errors import UsageError
from pipeline.core.stamp import cache_scope_for

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pipeline.core.model import Project
    from pipeline.core.stamp import Provenance

INDEX_URL_ENV = "PIPELINE_INDEX_URL"
# Extra CA certificates for builder steps that fetch (an intercepting proxy's), as a PEM file.
CA_BUNDLE_ENV = "PIPELINE_CA_BUNDLE"
PASSWORD_ENV = "PIPELINE_REGISTRY_PASSWORD"  # noqa: S105 - the variable's name, not a password
DEFAULT_JOBS = 4


@dataclass(frozen=True)
class BuildSettings:
    """What every builder reads: the same for every service of one run."""

    root: Path  # the project root; service folders are named relative to it
    base_image: str
    cache_scope: str
    user: str
    uid: int
    provenance: Provenance
    compile_bytecode: bool = True
    # Whether a private index URL is given (PIPELINE_INDEX_URL); the value itself reaches
    # the builder as a Dagger secret only.
    private_index: bool = False


@dataclass(frozen=True)
class RunOptions:
    """What one run does with the images it builds."""

    jobs: int = DEFAULT_JOBS
    out_dir: Path | None = None  # write OCI tarballs here
    test: bool = True
    publish_to: str | None = None  # registry/prefix to publish to, e.g. ghcr.io/acme
    registry_username: str | None = None
    use_cache: bool = True  # replay results whose inputs are unchanged


def jobs_from(value: str | int | None) -> int:
    if value is None:
        return DEFAULT_JOBS
    try:
        jobs = int(value)
    except ValueError:
        raise UsageError(f"--jobs (or PIPELINE_JOBS): {value!r} is not a number") from None
    if jobs < 1:
        raise UsageError("--jobs (or PIPELINE_JOBS) must be at least 1")
    return jobs


# An image reference (what ``verify`` reads), as the config's base_image is checked.
IMAGE_REFERENCE = config.IMAGE_REFERENCE


def cache_scope_from(value: str, given: str) -> str:
    """A scope from the command line or the environment, checked as the config's is: it
    names cache volumes and a folder of the result cache."""
    if not re.match(SCOPE_PATTERN, value):
        raise UsageError(
            f"{given}: {value!r} cannot be a cache scope; use 1 to 64 letters, digits, '_', '.' "
            "and '-', not starting with '.', e.g. main or feature-login"
        )
    return value


def base_image_from(value: str, given: str) -> str:
    """A base image from the command line or the environment (``given`` names which),
    checked as the config's is."""
    if not IMAGE_REFERENCE.match(value):
        raise UsageError(
            f"{given}: {value!r} is not an image reference; fix: {config.IMAGE_EXAMPLE}"
        )
    return value


# Where publish pushes: a registry host[:port] and an optional namespace, no tag.
REGISTRY_PREFIX = re.compile(rf"^[A-Za-z0-9.-]+(?::[0-9]+)?(?:/{config.IMAGE_COMPONENT})*/?$")


def registry_from(value: str | None) -> str | None:
    if value and not REGISTRY_PREFIX.match(value):
        raise UsageError(
            f"--registry (or PIPELINE_REGISTRY): {value!r} is not a registry and namespace; "
            "use e.g. ghcr.io/acme or localhost:5000/team (lower case, no tag)"
        )
    return value or None


_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def release_from(value: str | None) -> str | None:
    if value and not _TAG.match(value):
        raise UsageError(
            f"--version (or PIPELINE_VERSION): {value!r} cannot be an image tag; use letters, "
            "digits, '_', '.' and '-' (at most 128, not starting with '.' or '-'), e.g. 1.4.2"
        )
    return value or None


def check_ca_bundle(value: str) -> None:
    """PIPELINE_CA_BUNDLE names a readable PEM file of certificates (the builders point
    SSL_CERT_FILE at a copy of it)."""
    fix = (
        f"fix: point {CA_BUNDLE_ENV} at a PEM file of CA certificates (e.g. "
        "/etc/ssl/certs/ca-certificates.crt), or unset it"
    )
    path = Path(value)
    if not path.exists():
        raise UsageError(f"{CA_BUNDLE_ENV}: {value} does not exist; {fix}")
    if not path.is_file():
        raise UsageError(f"{CA_BUNDLE_ENV}: {value} is not a file; {fix}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UsageError(
            f"{CA_BUNDLE_ENV}: {value} cannot be read ({exc.strerror}); {fix}"
        ) from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{CA_BUNDLE_ENV}: {value} is not UTF-8 text (byte {exc.start}); {fix}"
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise UsageError(
            f"{CA_BUNDLE_ENV}: {value} holds no PEM certificate "
            f"(-----BEGIN CERTIFICATE-----); {fix}"
        )


def check_index_url(value: str) -> None:
    """PIPELINE_INDEX_URL is an http(s) URL with a host. Its value is never printed: it
    may hold credentials, and a mistyped one (no scheme) would show them bare."""
    try:
        parts = urllib.parse.urlsplit(value)
        _ = parts.port  # a port that is no number raises here
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() or not c.isprintable() for c in value)
    ):
        raise UsageError(
            f"{INDEX_URL_ENV}: is not an http(s) URL with a host (its value is not shown: it "
            "may hold credentials); fix: set it to the index's URL, e.g. "
            "https://user:token@pypi.example.com/simple, or unset it"
        )


def check_secret_variables(environ: Mapping[str, str] | None = None) -> None:
    """The variables whose values reach the engine only as secrets, checked before any
    engine work (the engine would otherwise fail late, or in the middle of a build)."""
    env = os.environ if environ is None else environ
    if env.get(CA_BUNDLE_ENV):
        check_ca_bundle(env[CA_BUNDLE_ENV])
    if env.get(INDEX_URL_ENV):
        check_index_url(env[INDEX_URL_ENV])


def build_settings(
    project: Project,
    prov: Provenance,
    base_image: str | None = None,
    cache_scope: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> BuildSettings:
    """Builder settings by precedence: arguments > environment > the config file; what git
    says (``prov``) comes in read."""
    env = os.environ if environ is None else environ
    if cache_scope:
        scope = cache_scope_from(cache_scope, "--cache-scope")
    elif env.get("PIPELINE_CACHE_SCOPE"):
        scope = cache_scope_from(env["PIPELINE_CACHE_SCOPE"], "PIPELINE_CACHE_SCOPE")
    else:
        scope = project.spec.cache_scope or cache_scope_for(prov.branch)
    if base_image:
        image = base_image_from(base_image, "--base-image")
    elif env.get("PIPELINE_BASE_IMAGE"):
        image = base_image_from(env["PIPELINE_BASE_IMAGE"], "PIPELINE_BASE_IMAGE")
    else:
        image = project.spec.base_image  # checked with the config it came from
    return BuildSettings(
        root=project.root,
        base_image=image,
        cache_scope=scope,
        user=project.spec.user,
        uid=project.spec.uid,
        provenance=prov,
        compile_bytecode=project.spec.compile_bytecode,
        private_index=bool(env.get(INDEX_URL_ENV)),
    )


def run_options(
    *,
    jobs: str | int | None = None,
    out_dir: Path | None = None,
    test: bool = True,
    publish: bool = False,
    registry: str | None = None,
    registry_username: str | None = None,
    use_cache: bool = True,
    environ: Mapping[str, str] | None = None,
) -> RunOptions:
    """Options of one run; the registry settings count only when it publishes."""
    env = os.environ if environ is None else environ
    return RunOptions(
        jobs=jobs_from(jobs if jobs is not None else env.get("PIPELINE_JOBS")),
        out_dir=out_dir,
        test=test,
        publish_to=registry_from(registry or env.get("PIPELINE_REGISTRY")) if publish else None,
        registry_username=(
            (registry_username or env.get("PIPELINE_REGISTRY_USERNAME")) if publish else None
        ),
        use_cache=use_cache,
    )
