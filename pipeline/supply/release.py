"""The release rule: which tags an image is published under, and which of them may move."""

from __future__ import annotations

from pipeline.core.stamp import UNKNOWN, Stamp, cache_scope_for

DEFAULT_BRANCHES = frozenset({"main", "master"})


def immutable_tags(stamp: Stamp) -> list[str]:
    """Tags that name one build: the image's commit ('-dirty' when any input of the image
    differs from it), the run's commit when that is another (every service of a commit can
    be pulled by it), and the explicit version. A dirty build gets only its commit tag."""
    if stamp.dirty:
        return [stamp.commit_tag]
    tags = [stamp.commit_tag] if stamp.revision != UNKNOWN else []
    tags += [stamp.head_tag] if stamp.head_tag else []
    return [*tags, stamp.release] if stamp.release else tags


def moving_tags(stamp: Stamp) -> list[str]:
    """Tags that follow a line of builds: the branch, and 'latest' from a default branch.
    Only a clean build of a known commit moves them."""
    if stamp.dirty or stamp.revision == UNKNOWN:
        return []
    tags = [f"branch-{cache_scope_for(stamp.branch)}"]
    return [*tags, "latest"] if stamp.branch in DEFAULT_BRANCHES else tags
