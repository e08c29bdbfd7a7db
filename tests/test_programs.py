"""The programs that run inside images (pipeline/engine/programs), run here on the host as an
image runs them: no engine, the same file."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from importlib import resources
from pathlib import Path

from pipeline.engine import inventory, layers
from pipeline.engine.programs import inventory as inventory_program
from pipeline.supply import ocilayout

DPKG_STATUS = """\
Package: tini
Status: install ok installed
Architecture: amd64
Version: 0.19.0-1
Description: tiny but valid init
 continued: not a field

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""


def test_the_shipped_inventory_is_this_file():
    shipped = resources.files("pipeline.engine.programs").joinpath("inventory.py")
    assert inventory.program_text() == shipped.read_text(encoding="utf-8")


def test_members_sends_back_an_image_layout_without_its_layers(tmp_path: Path):
    """What the engine returns of an image's tarball, run as the exec runs it (python -c):
    its manifest and config, read as the layout they are; not the bulk of its layers."""
    layer = os.urandom(300 * 1024)
    config = json.dumps({"created": "x", "history": [{"created": "y"}]}).encode()
    digest = {
        name: "sha256:" + hashlib.sha256(data).hexdigest()
        for name, data in (("layer", layer), ("config", config))
    }
    manifest = json.dumps(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": digest["config"], "size": len(config)},
            "layers": [{"digest": digest["layer"], "size": len(layer)}],
        }
    ).encode()
    digest["manifest"] = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"manifests": [{"digest": digest["manifest"]}]}).encode()
    tarball = tmp_path / "image.tar"
    with tarfile.open(tarball, "w") as tar:
        for name, data in (
            ("index.json", index),
            ("config", config),
            ("manifest", manifest),
            ("layer", layer),
        ):
            member = name if name == "index.json" else f"blobs/sha256/{digest[name][7:]}"
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    text = layers.program_text("members.py")
    out = subprocess.run(
        [sys.executable, "-c", text, str(tarball)], capture_output=True, check=True
    ).stdout
    small = base64.b64decode(out.strip().splitlines()[-1])
    assert len(small) < 20 * 1024
    image = ocilayout.read(small)
    assert (image.manifest, image.config) == (manifest, config)
    assert image.digest == digest["manifest"]
    dated = ocilayout.restamped(image, "2026-01-02T03:04:05Z")
    assert json.loads(dated.config)["history"] == [{"created": "2026-01-02T03:04:05Z"}]
    assert json.loads(dated.manifest)["layers"] == json.loads(manifest)["layers"]


def test_inventory_lists_installed_debian_packages_only():
    assert inventory_program.debian_packages(DPKG_STATUS) == [
        {"name": "tini", "version": "0.19.0-1", "arch": "amd64"}
    ]


def test_inventory_run_as_a_program_prints_what_this_python_has_installed():
    done = subprocess.run(
        [sys.executable, inventory_program.__file__], capture_output=True, text=True, check=True
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    names = {d["name"].lower(): d for d in found["python"]}
    assert "pytest" in names
    assert names["pytest"]["version"] == __import__("pytest").__version__
    assert len(names["pytest"]["record_sha256"]) == 64
    assert "MIT" in names["pytest"]["classifiers"] or names["pytest"]["expression"]
    assert isinstance(found["debian"], list)


# The venv layer's programs (snapshot.py before an install, layer.py after it) and the
# bytecode compiler, each run as the builder runs it: `python -c TEXT ARGS`.

WHEN = 315532800  # the fixed time layers.py gives (1980-01-01)
OLD = 1_000_000_000  # the files' time before the "install": any rewrite gets another


def _run(program: str, *args: object, env: tuple[str, ...] = ()) -> None:
    """The program as the builder runs it: its text as ``-c`` (``env`` as ``env`` sets it)."""
    text = layers.program_text(program)
    command = [*(["env", *env] if env else []), sys.executable, "-c", text, *map(str, args)]
    subprocess.run(command, check=True, capture_output=True)


def test_the_shipped_layer_programs_are_these_files():
    for name in ("compile.py", "snapshot.py", "layer.py", "tartree.py"):
        shipped = resources.files("pipeline.engine.programs").joinpath(name)
        assert layers.program_text(name) == shipped.read_text(encoding="utf-8")


def _tree(top: Path) -> set[str]:
    """Every entry under ``top``, relative to it."""
    return {str(p.relative_to(top)) for p in top.rglob("*")}


def _venv(root: Path) -> None:
    """A venv-like folder as a lower layer left it, every entry at OLD."""
    site = root / "lib/site"
    site.mkdir(parents=True)
    (root / "share").mkdir()
    (root / "share/doc.txt").write_text("doc\n")
    (root / "bin").mkdir()
    (root / "bin/python").symlink_to("/usr/bin/python3")
    (root / "bin/py").symlink_to("python")
    (site / "keep.py").write_text("K = 1\n")
    (site / "same.lock").write_text("locked\n")
    (site / "size.txt").write_text("aaaa")
    (site / "big.bin").write_bytes(b"x" * 70_000)
    (site / "big2.bin").write_bytes(b"y" * 70_000)
    (site / "mode.sh").write_text("#!/bin/sh\n")
    (site / "mode.sh").chmod(0o644)
    for path in (root, *root.rglob("*")):
        os.utime(path, (OLD, OLD), follow_symlinks=False)


def _install(root: Path) -> None:
    """What an install does to the folder: each kind of change the layer must tell."""
    site = root / "lib/site"
    (root / "bin/python").unlink()
    (root / "bin/python").symlink_to("python3.11")  # a link retargeted
    (site / "same.lock").write_text("locked\n")  # rewritten, the same bytes
    (site / "size.txt").write_text("bbbb")  # rewritten, the same size, other bytes
    (site / "big2.bin").write_bytes(b"y" * 70_000)  # rewritten, the same bytes, too big to hash
    (site / "mode.sh").chmod(0o755)  # a mode changed
    (site / "added.py").write_text("A = 1\n")  # a new file in an old folder
    (site / "pkg").mkdir()  # a new folder
    (site / "pkg").chmod(0o750)
    (site / "pkg/__init__.py").write_text("")


CHANGED_FILES = ("lib/site/size.txt", "lib/site/big2.bin", "lib/site/mode.sh")
NEW_FILES = ("lib/site/added.py", "lib/site/pkg/__init__.py")


def test_a_layer_holds_exactly_what_changed_since_the_snapshot(tmp_path: Path):
    root, snap, top = tmp_path / "opt/venv", tmp_path / "snap.json", tmp_path / "layer"
    _venv(root)
    (top / "stale").mkdir(parents=True)  # a former layer's: emptied first
    _run("snapshot.py", root, snap)
    _install(root)
    _run("layer.py", root, snap, top, WHEN)

    layer = Path(f"{top}{root}")  # the tree from /: the venv's entries under TOP/opt/venv
    assert _tree(layer) == {
        "bin",
        "bin/python",
        "lib",
        "lib/site",
        "lib/site/pkg",
        *CHANGED_FILES,
        *NEW_FILES,
    }
    assert (layer / "bin/python").readlink() == Path("python3.11")
    for name in (*CHANGED_FILES, *NEW_FILES):  # hard links to the venv's files: no copy
        assert (layer / name).samefile(root / name), name
    assert (layer / "lib/site/size.txt").read_text() == "bbbb"
    assert stat.S_IMODE((layer / "lib/site/mode.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((layer / "lib/site/pkg").stat().st_mode) == 0o750
    everything = [top, *top.rglob("*")]
    assert Path(f"{top}{root.parent}") in everything  # the folders above the venv's too
    assert not (top / "stale").exists()
    assert {p.lstat().st_mtime for p in everything} == {WHEN}


def test_a_layer_of_an_install_that_changed_nothing_is_empty(tmp_path: Path):
    root, snap, top = tmp_path / "venv", tmp_path / "snap.json", tmp_path / "layer"
    _venv(root)
    _run("snapshot.py", root, snap)
    (root / "lib/site/same.lock").write_text("locked\n")  # uv rewrites its lock as it was
    _run("layer.py", root, snap, top, WHEN)
    assert _tree(Path(f"{top}{root}")) == set()


def test_the_snapshot_records_links_folders_and_small_files_content(tmp_path: Path):
    root, snap = tmp_path / "venv", tmp_path / "snap.json"
    _venv(root)
    _run("snapshot.py", root, snap)
    taken = json.loads(snap.read_text())
    assert set(taken) == {str(p) for p in root.rglob("*")}
    assert taken[str(root / "bin/python")] == ["link", "/usr/bin/python3"]
    assert taken[str(root / "share")] == ["dir", (root / "share").lstat().st_mode]
    small, big = taken[str(root / "lib/site/keep.py")], taken[str(root / "lib/site/big.bin")]
    assert small[4] == hashlib.sha256(b"K = 1\n").hexdigest()
    assert big[1:3] == [70_000, OLD * 10**9]
    assert big[4] == ""


def _sources(root: Path) -> None:
    for name, text in {
        "app/main.py": "NAMES = {'a', 'b', 'c', 'd'}\nX = 'a' in NAMES\n",
        "app/sub/util.py": "def f():\n    return 1\n",
        "app/tests/test_main.py": "import app.main\n",
        "app/sub/test/test_util.py": "import app.sub.util\n",
        "app/done.py": "DONE = 1\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def _pyc(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


def _compile(root: Path) -> None:
    _run("compile.py", root, *layers.PACKAGE_TESTS, env=("PYTHONHASHSEED=0",))


def test_compile_writes_unchecked_hash_pycs_but_for_test_folders_and_compiled_files(
    tmp_path: Path,
):
    _sources(tmp_path)
    done = _pyc(tmp_path / "app/done.py")
    done.parent.mkdir()
    done.write_bytes(b"a lower layer's pyc")
    _compile(tmp_path)

    compiled = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.pyc")}
    assert compiled == {
        str(_pyc(Path("app/main.py"))),
        str(_pyc(Path("app/sub/util.py"))),
        str(_pyc(Path("app/done.py"))),
    }
    assert done.read_bytes() == b"a lower layer's pyc"  # never compiled again
    for name in ("app/main.py", "app/sub/util.py"):
        source, pyc = tmp_path / name, _pyc(tmp_path / name).read_bytes()
        assert pyc[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, source never checked
        assert pyc[8:16] == importlib.util.source_hash(source.read_bytes())


def test_compile_gives_the_same_bytes_every_time(tmp_path: Path):
    _sources(tmp_path)
    _compile(tmp_path)
    first = {p: p.read_bytes() for p in tmp_path.rglob("*.pyc")}
    for pyc in first:
        pyc.unlink()
    _compile(tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.pyc")} == first
    assert len(first) == 3


def test_the_compiled_code_runs_from_its_pycs_alone(tmp_path: Path):
    _sources(tmp_path)
    _compile(tmp_path)
    (tmp_path / "app/__init__.py").write_text("")
    code = "import app.main, app.sub.util; print(app.main.X, app.main.__cached__)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", str(_pyc(tmp_path / "app/main.py"))]


# The same programs over / for an apt install (layers.with_tracked): what they leave out, the
# folders they make, and an install that removed something.


def test_a_layer_leaves_out_the_excluded_and_keeps_the_folders_modes(tmp_path: Path):
    root, snap, top = tmp_path / "root", tmp_path / "snap.json", tmp_path / "layer"
    (root / "cache/apt").mkdir(parents=True)
    (root / "lib/dpkg").mkdir(parents=True)
    (root / "lib/dpkg").chmod(0o750)
    (root / "lib/dpkg/status").write_text("old\n")
    excludes = (f"{root}/cache", f"{root}/lib/dpkg/*-old")
    _run("snapshot.py", root, snap, *excludes)
    assert set(json.loads(snap.read_text())) == {
        f"{root}/lib",
        f"{root}/lib/dpkg",
        f"{root}/lib/dpkg/status",
    }
    (root / "cache/apt/pkg.deb").write_text("deb")  # a cache's
    (root / "lib/dpkg/status-old").write_text("old\n")  # a run's backup
    (root / "lib/dpkg/status").write_text("new\n")
    _run("layer.py", root, snap, top, WHEN, "--no-removals", *excludes)

    layer = Path(f"{top}{root}")
    assert _tree(layer) == {"lib", "lib/dpkg", "lib/dpkg/status"}
    # made only to hold the changed file, as the folder it stands for
    assert stat.S_IMODE((layer / "lib/dpkg").stat().st_mode) == 0o750
    assert {p.lstat().st_mtime for p in [top, *top.rglob("*")]} == {WHEN}


def test_an_install_that_removed_an_entry_fails_with_no_removals(tmp_path: Path):
    root, snap, top = tmp_path / "root", tmp_path / "snap.json", tmp_path / "layer"
    _venv(root)
    _run("snapshot.py", root, snap)
    (root / "share/doc.txt").unlink()
    layer = [sys.executable, "-c", layers.program_text("layer.py"), str(root), str(snap)]
    done = subprocess.run(
        [*layer, str(top), str(WHEN), "--no-removals"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 3
    assert f"{root}/share/doc.txt" in done.stderr
    assert not Path(f"{top}{root}").exists()
    _run("layer.py", root, snap, top, WHEN)  # a venv's install is not asked: its layer is made
    assert _tree(Path(f"{top}{root}")) == set()


def test_a_failure_names_each_in_container_program_instead_of_showing_its_source():
    import shlex

    from pipeline.engine import runner
    from pipeline.engine.layers import program_text

    folder = Path(__file__).resolve().parents[1] / "pipeline" / "engine" / "programs"
    shipped = {p.name for p in folder.glob("[!_]*.py")}
    assert set(runner.PROGRAMS) == shipped
    for name in runner.PROGRAMS:
        text = program_text(name)
        # as an ExecError names a builder's step: sh -c SCRIPT, the program quoted in it
        quoted = " ".join(["sh", "-c", f"python3 -c {shlex.quote(text)} /opt/venv"])
        for command in (f"python3 -c {text} /opt/venv", quoted):
            shown = runner.shown_command(command)
            assert f"<{name}>" in shown
            assert text.splitlines()[0] not in shown


def test_the_snapshot_and_the_layer_walk_a_tree_alike(tmp_path: Path):
    """layer.py and snapshot.py each carry their own walk (each reaches a container alone, as
    ``python -c TEXT``); a layer is only right when both walk one tree the same way, excludes
    included: same paths, same order."""
    from pipeline.engine.programs import layer, snapshot

    root = tmp_path / "root"
    for rel in ("a/b/c.txt", "a/d.txt", "proc/1/stat", "var/lib/dpkg/status-old", "z.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "a" / "link").symlink_to("b")
    (root / "empty").mkdir()
    excludes = [f"{root}/proc", f"{root}/var/lib/dpkg/*-old"]
    walked = list(snapshot.walk(str(root), excludes))
    assert walked == list(layer.walk(str(root), excludes))
    assert f"{root}/a/b/c.txt" in walked and f"{root}/a/link" in walked
    assert not [p for p in walked if "/proc" in p or p.endswith("-old")]
    for path in (f"{root}/proc/1", f"{root}/var/lib/dpkg/status-old", f"{root}/z.txt"):
        assert snapshot._excluded(path, excludes) == layer._excluded(path, excludes)  # noqa: SLF001


def test_a_layer_meets_the_venv_below_it_only_in_equal_folders(tmp_path: Path):
    """disjoint.py: a tier's layer may sit below its parent's layers only when their files do
    not meet; one file they both hold, or a shared folder of another mode, is named."""
    from pipeline.engine.programs import disjoint

    below, tree = tmp_path / "root", tmp_path / "tree"
    site = "opt/venv/lib/python3.11/site-packages"
    (below / site / "jwt").mkdir(parents=True)
    (below / site / "jwt" / "__init__.py").write_text("# PyJWT\n")
    (tree / site / "numpy").mkdir(parents=True)
    (tree / site / "numpy" / "__init__.py").write_text("# numpy\n")
    assert disjoint.meets(str(tree), str(below)) == []  # only folders meet: site-packages...
    (tree / site / "jwt").mkdir()
    (tree / site / "jwt" / "__init__.py").write_text("# jwt\n")
    assert disjoint.meets(str(tree), str(below)) == [f"/{site}/jwt/__init__.py"]
    (tree / site / "jwt" / "__init__.py").unlink()
    (tree / site / "jwt").chmod(0o700)  # the same folder, another mode
    assert disjoint.meets(str(tree), str(below)) == [f"/{site}/jwt"]


def _entries(top: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``top`` and ``top`` itself, as a layer's tar would record it: its
    type, mode, owner, time, bytes or link target, and which names share one inode."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for path in sorted([top, *top.rglob("*")]):
        st = path.lstat()
        name = str(path.relative_to(top))
        if path.is_symlink():
            what: object = ("link", str(path.readlink()))
        elif path.is_dir():
            what = "dir"
        else:
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        first = inodes.setdefault(st.st_ino, name) if st.st_nlink > 1 and path.is_file() else ""
        kind = stat.S_IFMT(st.st_mode)
        perms = stat.S_IMODE(st.st_mode) if not path.is_symlink() else 0
        out[name] = (kind, perms, st.st_uid, st.st_gid, st.st_mtime_ns, what, first)
    return out


def test_a_tree_packed_and_unpacked_is_the_same_tree_entry_for_entry(tmp_path: Path):
    """What the engine lays instead of the tree (layers.by_content): every folder, file, hard
    link and symbolic link with its mode, owner and time; and equal trees give equal bytes."""
    tree = tmp_path / "tree"
    venv = tree / "opt" / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "lib" / "empty").mkdir(parents=True)
    (venv / "bin" / "tool").write_text("#!/bin/sh\n")
    (venv / "bin" / "tool").chmod(0o4755)
    (venv / "lib" / "big.bin").write_bytes(os.urandom(3 << 20))
    (venv / "lib" / "ro.txt").write_text("read only\n")
    (venv / "lib" / "ro.txt").chmod(0o444)
    os.link(venv / "lib" / "big.bin", venv / "lib" / "same.bin")
    (venv / "bin" / "python").symlink_to("/usr/bin/python3")
    (venv / "lib" / "rel").symlink_to("big.bin")
    os.chown(venv / "lib" / "ro.txt", 10001, 10001)
    os.lchown(venv / "lib" / "rel", 10002, 10002)
    (venv / "lib").chmod(0o750)
    for path in sorted([tree, *tree.rglob("*")], reverse=True):
        os.utime(path, (layers.FIXED_MTIME, layers.FIXED_MTIME), follow_symlinks=False)
    archive = tmp_path / "packed" / "tree.tar"
    _run("tartree.py", "pack", tree, archive)
    out = tmp_path / "out"
    _run("tartree.py", "unpack", archive, out)
    assert _entries(out) == _entries(tree)
    again = tmp_path / "again" / "tree.tar"
    _run("tartree.py", "pack", out, again)
    assert again.read_bytes() == archive.read_bytes()


def test_a_tree_holding_another_kind_of_entry_is_not_unpacked(tmp_path: Path):
    archive = tmp_path / "fifo.tar"
    with tarfile.open(archive, "w") as tar:
        fifo = tarfile.TarInfo("./opt/pipe")
        fifo.type = tarfile.FIFOTYPE
        tar.addfile(fifo)
    text = layers.program_text("tartree.py")
    done = subprocess.run(
        [sys.executable, "-c", text, "unpack", archive, tmp_path / "out"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3
    assert "./opt/pipe: an entry of type" in done.stderr
