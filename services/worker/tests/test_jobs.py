import json

import pytest

from worker.jobs import drain, run_job


def test_wordcount():
    assert run_job({"kind": "wordcount", "data": "one two"}) == {"words": 2}


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="unknown job kind"):
        run_job({"kind": "nope"})


def test_drain_writes_results(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"kind": "checksum", "data": "abc"}))
    assert drain(tmp_path) == 1
    result = json.loads((tmp_path / "a.result").read_text())
    assert result["sha256"].startswith("ba7816bf")
    assert not (tmp_path / "a.json").exists()
