"""Greetings every app of the workspace shares."""

import idna


def greet(name: str) -> str:
    """A greeting; the name as IDNA would encode it, to use the library's own dependency."""
    return f"hello, {idna.encode(name.lower()).decode()}"
