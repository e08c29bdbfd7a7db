"""Settings of one run, resolved once: command-line options > environment (PIPELINE_*) > the
project's config. Dagger-free, so ``plan`` and ``--help`` never load the engine's SDK.

Secrets are not settings: their values stay in the environment until the engine layer turns
them into Dagger secrets; a setting only says whether one is given.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import UsageError
from pipeline.core.stamp import cache_scope_for

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pipeline.core.model import Project
    from pipeline.core.options import Chosen
    from pipeline.core.stamp import Provenance

INDEX_URL_ENV = "PIPELINE_INDEX_URL"
# Extra CA certificates for builder steps that fetch (an intercepting proxy's), as a PEM file.
CA_BUNDLE_ENV = "PIPELINE_CA_BUNDLE"
PASSWORD_ENV = "PIPELINE_REGISTRY_PASSWORD"  # noqa: S105 - the variable's name, not a password


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
    compression: str = "gzip"  # of the image layers: gzip, zstd or uncompressed
    # Whether a private index URL is given (PIPELINE_INDEX_URL); the value itself reaches
    # the builder as a Dagger secret only.
    private_index: bool = False


@dataclass(frozen=True)
class RunOptions:
    """What one run does with the images it builds."""

    jobs: int | None = None  # services built at once; None: the engine machine's logical CPUs
    out_dir: Path | None = None  # write OCI tarballs here
    test: bool = True
    publish_to: str | None = None  # registry/prefix to publish to, e.g. ghcr.io/acme
    registry_username: str | None = None
    use_cache: bool = True  # replay results whose inputs are unchanged


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
    project: Project, prov: Provenance, chosen: Chosen, environ: Mapping[str, str] | None = None
) -> BuildSettings:
    """Builder settings: the run's options (``chosen``: the command line > the environment)
    > the config file; what git says (``prov``) comes in read."""
    return BuildSettings(
        root=project.root,
        base_image=chosen.values.get("base_image")
        or project.spec.base_image,  # the config's is checked
        cache_scope=(
            chosen.values.get("cache_scope")
            or project.spec.cache_scope
            or cache_scope_for(prov.branch)
        ),
        user=project.spec.user,
        uid=project.spec.uid,
        provenance=prov,
        compile_bytecode=project.spec.compile_bytecode,
        compression=project.spec.compression,
        private_index=bool((os.environ if environ is None else environ).get(INDEX_URL_ENV)),
    )


def run_options(chosen: Chosen) -> RunOptions:
    """What a run of ``chosen.command`` does with its images."""
    values = chosen.values
    publish = chosen.command == "publish"
    return RunOptions(
        jobs=values.get("jobs"),
        out_dir=values.get("out"),
        test=not values.get("no_test", False),
        publish_to=values.get("registry") if publish else None,
        registry_username=values.get("registry_username") if publish else None,
        use_cache=not values.get("no_cache", False),
    )
