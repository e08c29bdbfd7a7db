"""What is installed in an image, read by the image's own Python (programs/inventory.py):
the facts an SBOM is made of."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pipeline.engine import compat, layers
from pipeline.engine.layers import VENV

if TYPE_CHECKING:
    import dagger


def program_text() -> str:
    return layers.program_text("inventory.py")


async def inventory(image: dagger.Container) -> dict[str, Any]:
    """What is installed in ``image``: its venv's distributions and dpkg's packages."""
    # as the argument of -c: nothing is mounted or written into the image
    ran = image.with_(compat.run([f"{VENV}/bin/python", "-c", program_text()]))
    out = await ran.stdout()
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]
