"""Placement on an engine pool (core/placement.py): every machine and process puts a key on
the same engine, a pool that grows or shrinks moves only the keys it must, weights share the
keys out in proportion, and a bad PIPELINE_ENGINES names where, the entry and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline.core import placement
from pipeline.core.errors import PipelineError, UsageError
from pipeline.core.placement import Engine

ROOT = Path(__file__).resolve().parents[1]
KEYS = [f"tier-{i}" for i in range(2000)]


def _pool(names: str, **weights: float) -> list[Engine]:
    return [
        Engine(name, f"tcp://127.0.0.1:{12341 + i}", weights.get(name, 1.0))
        for i, name in enumerate(names)
    ]


def _homes(engines: list[Engine], down: frozenset[str] = frozenset()) -> dict[str, str]:
    placed = placement.place({key: key for key in KEYS}, engines, down)
    return {key: engine.name for key, engine in placed.items()}


def test_the_same_input_gives_the_same_placement_whatever_the_pool_s_order():
    pool = _pool("abcde")
    first = _homes(pool)
    assert _homes(pool) == first
    assert _homes(pool[::-1]) == first
    assert _homes([pool[2], pool[0], pool[4], pool[1], pool[3]]) == first
    for key in KEYS[:50]:
        assert placement.order(key, pool) == placement.order(key, pool[::-1])


def test_each_engine_of_an_equal_pool_gets_about_its_share():
    counts = Counter(_homes(_pool("abcde")).values())
    assert set(counts) == set("abcde")
    assert all(300 <= n <= 500 for n in counts.values()), counts  # 400 each expected


def test_an_engine_that_joins_takes_only_keys_it_wins_about_one_in_n_plus_one():
    before = _homes(_pool("abcde"))
    after = _homes(_pool("abcdef"))
    moved = {key for key in KEYS if before[key] != after[key]}
    assert {after[key] for key in moved} == {"f"}  # nothing moves between the old engines
    assert moved == {key for key in KEYS if after[key] == "f"}
    assert 250 <= len(moved) <= 420, len(moved)  # 2000 / 6 = 333 expected


def test_an_engine_that_leaves_gives_up_only_its_own_keys():
    before = _homes(_pool("abcde"))
    after = _homes(_pool("abde"))
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == "c"}
    assert moved  # c had keys to give up
    # each goes where c's absence sends it: the next engine in that key's order
    pool = _pool("abcde")
    for key in moved:
        assert after[key] == placement.order(key, pool)[1].name


def test_an_engine_of_weight_two_gets_about_twice_the_keys():
    counts = Counter(_homes(_pool("abc", b=2.0)).values())
    assert 1.6 <= counts["b"] / counts["a"] <= 2.5, counts
    assert 1.6 <= counts["b"] / counts["c"] <= 2.5, counts
    assert 0.8 <= counts["a"] / counts["c"] <= 1.25, counts


def test_a_down_engine_s_keys_go_to_the_next_in_their_order():
    pool = _pool("abcde")
    homes = _homes(pool, down=frozenset({"a", "c"}))
    for key in KEYS:
        expected = next(e.name for e in placement.order(key, pool) if e.name not in {"a", "c"})
        assert homes[key] == expected
    assert set(homes.values()) == {"b", "d", "e"}
    # an unknown name in down changes nothing
    assert _homes(pool, down=frozenset({"zz"})) == _homes(pool)


def test_every_engine_down_is_an_error_naming_them():
    with pytest.raises(PipelineError, match=r"no engine of the pool is up \(down: a, b\)"):
        placement.place({"users": "backend"}, _pool("ab"), frozenset({"a", "b"}))
    with pytest.raises(PipelineError, match="no engine"):
        placement.place({"users": "backend"}, [])


def test_placements_are_pinned_so_a_change_of_the_hash_is_noticed():
    pool = _pool("abcde")
    got = {key: "".join(e.name for e in placement.order(key, pool)) for key in GOLDEN}
    assert got == GOLDEN
    assert placement.score("backend", pool[0]) == pytest.approx(2.6943791703353472, rel=1e-12)


GOLDEN = {"base": "acebd", "backend": "abecd", "ai": "cedab", "web": "edcab", "data": "dcabe"}


def test_another_process_with_another_hash_seed_places_alike():
    code = (
        "import json; from pipeline.core import placement as p;"
        "pool = [p.Engine(n, 'tcp://h:1') for n in 'abcde'];"
        "print(json.dumps({k: p.order(k, pool)[0].name for k in "
        "[f'tier-{i}' for i in range(200)]}))"
    )
    answers = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
                env={**os.environ, "PYTHONHASHSEED": seed},
            ).stdout
        )
        for seed in ("1", "2")
    ]
    here = {k: placement.order(k, _pool("abcde"))[0].name for k in KEYS[:200]}
    assert answers[0] == answers[1] == here


def test_parse_reads_names_urls_and_weights():
    text = (
        " a=tcp://127.0.0.1:12341 , gpu-2=unix:///run/dagger/engine.sock;weight=2.5,"
        "k=kube-pod://dagger-engine-x?namespace=dagger,d=docker-container://dagger-engine,"
        "s=ssh://builder@build-1.example.com;weight=1"
    )
    assert placement.parse(text, "PIPELINE_ENGINES") == [
        Engine("a", "tcp://127.0.0.1:12341"),
        Engine("gpu-2", "unix:///run/dagger/engine.sock", 2.5),
        Engine("k", "kube-pod://dagger-engine-x?namespace=dagger"),
        Engine("d", "docker-container://dagger-engine"),
        Engine("s", "ssh://builder@build-1.example.com"),
    ]
    assert placement.parse("", "PIPELINE_ENGINES") == []
    assert placement.parse("  ", "PIPELINE_ENGINES") == []


@pytest.mark.parametrize(
    ("text", "entry", "said"),
    [
        ("a", "'a'", "is not name=url"),
        ("A=tcp://h:1", "'A=tcp://h:1'", "has the name 'A'"),
        ("1a=tcp://h:1", "'1a=tcp://h:1'", "has the name '1a'"),
        ("a=http://h:1", "'a=http://h:1'", "scheme 'http'; an engine URL's scheme is one of unix"),
        ("a=h:1", "'a=h:1'", "has no scheme; an engine URL's scheme is one of unix, tcp"),
        ("a=tcp://h", "'a=tcp://h'", "needs a host and a port number"),
        ("a=unix://run/x", "'a=unix://run/x'", "names no absolute socket path"),
        ("a=ssh://", "'a=ssh://'", "has no ssh address"),
        ("a=tcp://h:1;weight=0", "'a=tcp://h:1;weight=0'", "weight '0', which is not a pos"),
        ("a=tcp://h:1;weight=x", "'a=tcp://h:1;weight=x'", "weight 'x', which is not a pos"),
        ("a=tcp://h:1;weight=nan", "'a=tcp://h:1;weight=nan'", "weight 'nan'"),
        ("a=tcp://h:1;w=2", "'a=tcp://h:1;w=2'", "unknown option 'w=2'"),
        ("a=tcp://h:1,a=tcp://h:2", "'a=tcp://h:2'", "repeats the name 'a' of 'a=tcp://h:1'"),
        ("a=tcp://h:1,b=tcp://h:1", "'b=tcp://h:1'", "repeats the URL 'tcp://h:1'"),
        ("a=tcp://h:1,", "'a=tcp://h:1,'", "has an empty entry"),
    ],
)
@pytest.mark.parametrize("where", ["PIPELINE_ENGINES", "pipeline.toml [engines]"])
def test_a_bad_pool_names_where_the_entry_and_the_fix(text: str, entry: str, said: str, where):
    with pytest.raises(UsageError) as caught:
        placement.parse(text, where)
    message = str(caught.value)
    assert message.startswith(f"{where}: {entry} ")
    assert said in message
    assert "; fix: " in message
    assert caught.value.exit_code == 2  # usage errors exit with 2
