"""Louder greetings, built on the greeter library: one app uses it."""

from greeter import greet


def shout(name: str) -> str:
    return greet(name).upper() + "!"
