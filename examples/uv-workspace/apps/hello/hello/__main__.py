"""Prints a shouted greeting: the app that uses both workspace libraries."""

import sys

import six
from shout import shout


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "workspace"
    print(shout(six.ensure_str(name)))


if __name__ == "__main__":
    main()
