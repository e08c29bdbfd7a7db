"""One error root, a subclass per layer. Expected errors carry what the user needs to act."""

from __future__ import annotations

from pathlib import Path


class PipelineError(Exception):
    """Root of every error the pipeline expects; the CLI prints these without a traceback."""

    exit_code = 1


class ConfigError(PipelineError):
    """Bad input: names the file, the field and the fix."""

    exit_code = 2

    def __init__(self, file: Path | str, field: str, problem: str, fix: str) -> None:
        self.file = str(file)
        self.field = field
        self.problem = problem
        self.fix = fix
        where = f"{self.file}: {field}" if field else self.file
        super().__init__(f"{where}: {problem}\n  fix: {fix}")


class UsageError(PipelineError):
    """Bad command line (unknown service, bad tier selection, ...)."""

    exit_code = 2


class BuildError(PipelineError):
    """A service failed to build, test or export."""

    def __init__(self, service: str, step: str, detail: str) -> None:
        self.service = service
        self.step = step
        self.detail = detail
        super().__init__(f"{service}: {step} failed: {detail}")
