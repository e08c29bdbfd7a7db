"""Prints the small files of a tar file (the first argument) as one tar, base64-encoded: of
an image's OCI layout, its index, manifests and config without the layers' bulk."""

import base64
import io
import sys
import tarfile

LIMIT = 256 * 1024  # manifests and configs are a few KB; layers that small do no harm

out = io.BytesIO()
with tarfile.open(sys.argv[1]) as source, tarfile.open(fileobj=out, mode="w") as small:
    for member in source:
        if member.isfile() and member.size <= LIMIT:
            small.addfile(member, source.extractfile(member))
sys.stdout.write(base64.b64encode(out.getvalue()).decode() + "\n")
