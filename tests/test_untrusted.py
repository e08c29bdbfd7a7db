"""A build whose fetch refused a certificate while the run has a CA bundle stages the bundle
again and is built once more (runner.untrusted decides which failures); no engine."""

from __future__ import annotations

import dagger

from pipeline.engine import images, runner

UV_REFUSED = (
    "error: Failed to fetch: https://pypi.org/simple/fastapi/\n"
    "  cause: client error (Connect)\n  cause: invalid peer certificate: UnknownIssuer"
)


def _exec_error(stdout: str, stderr: str) -> dagger.ExecError:
    """An ExecError as the SDK raises it for a failed exec: only its outputs matter here."""
    error = Exception.__new__(dagger.ExecError)
    error.stdout, error.stderr = stdout, stderr
    return error


def test_a_refused_certificate_with_a_ca_bundle_is_staged_again():
    with_ca = images.Secrets(ca_bundle=object())  # type: ignore[arg-type]
    assert runner.untrusted(_exec_error("", UV_REFUSED), with_ca)
    pip = "SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    assert runner.untrusted(_exec_error(pip, ""), with_ca)


def test_other_failures_and_runs_without_a_bundle_are_not_built_again():
    with_ca = images.Secrets(ca_bundle=object())  # type: ignore[arg-type]
    assert not runner.untrusted(_exec_error("", "No solution found"), with_ca)
    assert not runner.untrusted(RuntimeError("certificate"), with_ca)
    assert not runner.untrusted(_exec_error("", UV_REFUSED), images.Secrets())
