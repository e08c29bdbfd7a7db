"""What names the pipeline accepts (services, tiers, cache scopes, image references), as
patterns: read by the config's models and the command line's checks alike, with no
dependency (the CLI checks its options before pydantic is loaded)."""

from __future__ import annotations

import re

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
# A cache scope names volumes and a folder of the result cache: one path component, never
# '.' or '..' (so no leading dot).
SCOPE_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"
# An image reference: [registry[:port]/]path[:tag][@sha256:digest], as Docker reads it.
IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{IMAGE_COMPONENT}(?:/{IMAGE_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
IMAGE_EXAMPLE = "use e.g. python:3.11-slim-bookworm or registry/name@sha256:<digest>"
