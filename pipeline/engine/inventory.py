"""What is installed in an image, read by the image's own Python (programs/inventory.py):
the facts an SBOM is made of."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from pipeline.engine import compat, programs
from pipeline.engine.layers import VENV

if TYPE_CHECKING:
    import dagger


@cache
def program_text() -> str:
    return resources.files(programs).joinpath("inventory.py").read_text(encoding="utf-8")


async def inventory(image: dagger.Container) -> dict[str, Any]:
    """What is installed in ``image``: its venv's distributions and dpkg's packages."""
    # as the argument of -c: nothing is mounted or written into the image
    ran = image.with_(compat.run([f"{VENV}/bin/python", "-c", program_text()]))
    out = await ran.stdout()
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]
