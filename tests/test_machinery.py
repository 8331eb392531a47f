"""The fork's own machinery: pin, source, series, wheel. Runs inside `make test`.

These tests drive build/*.sh with WORK/PATCHES/LOCK/DL pointed at temporary folders, so the
real build/work tree is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "work"
LOCK = dict(
    line.split("=", 1)
    for line in (ROOT / "ci" / "sglang.lock").read_text().splitlines()
    if "=" in line and not line.startswith("#")
)


def series() -> list[str]:
    names = []
    for line in (ROOT / "patches" / "series").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[0])
    return names


def run(script: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        ["bash", str(ROOT / "build" / script)],
        env=full_env,
        capture_output=True,
        text=True,
        **kw,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A WORK folder holding a copy of the already laid-out pristine base."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(WORK / "pristine", work / "pristine", symlinks=True)
    shutil.copy(WORK / "pristine.from", work / "pristine.from")
    return work


def test_series_is_listed_and_well_formed():
    names = series()
    assert names, "patches/series lists no patch"
    on_disk = sorted(p.name for p in (ROOT / "patches").glob("*.patch"))
    assert sorted(names) == on_disk
    for name in names:
        head = (ROOT / "patches" / name).read_text().splitlines()[:8]
        assert any(line.startswith("Subject: [PATCH] [") for line in head), name


def test_patches_touch_only_upstream_source_and_tests():
    # A stray file in the tree (a downloaded wheel, a log) must not ride along in a patch.
    for name in series():
        text = (ROOT / "patches" / name).read_text(errors="replace")
        assert "GIT binary patch" not in text, f"{name} carries a binary file"
        for line in text.splitlines():
            if line.startswith("diff --git a/"):
                path = line.split()[2][2:]
                assert path.startswith(("python/", "test/")), f"{name} touches {path}"


def test_series_applies_on_pristine(scratch: Path):
    r = run("apply.sh", {"WORK": str(scratch)})
    assert r.returncode == 0, r.stderr
    count = subprocess.run(
        ["git", "-C", str(scratch / "tree"), "rev-list", "--count", "pristine..patched"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert int(count) == len(series())


def test_broken_patch_is_refused_and_named(scratch: Path, tmp_path: Path):
    patches = tmp_path / "patches"
    shutil.copytree(ROOT / "patches", patches)
    first = series()[0]
    text = (patches / first).read_text()
    # Corrupt a line the patch removes, so its preimage no longer exists anywhere.
    lines = text.splitlines(keepends=True)
    idx = next(i for i, l in enumerate(lines) if l.startswith("-") and not l.startswith("---"))
    lines[idx] = "-" + lines[idx][1:].rstrip("\n") + "  # not upstream\n"
    (patches / first).write_text("".join(lines))
    # A tree from an earlier, good apply must not survive a failed one.
    assert run("apply.sh", {"WORK": str(scratch)}).returncode == 0

    r = run("apply.sh", {"WORK": str(scratch), "PATCHES": str(patches)})

    assert r.returncode != 0
    assert first in r.stderr
    assert "python/sglang/srt/mem_cache/common.py" in r.stderr
    assert r.stderr.count("error: ") == 1 or "does not apply" in r.stderr
    assert not (scratch / "tree").exists()
    assert not (scratch / ".tree.tmp").exists()
    assert not (scratch / "tree.stamp").exists()
    # ... so a later wheel build refuses instead of building a stale tree.
    w = run("wheel.sh", {"WORK": str(scratch), "PATCHES": str(patches), "DIST": str(tmp_path / "d")})
    assert w.returncode != 0 and "make apply" in w.stderr


def test_listed_but_missing_patch_is_named(scratch: Path, tmp_path: Path):
    patches = tmp_path / "patches"
    shutil.copytree(ROOT / "patches", patches)
    with open(patches / "series", "a") as f:
        f.write("9999-does-not-exist.patch\n")
    r = run("apply.sh", {"WORK": str(scratch), "PATCHES": str(patches)})
    assert r.returncode != 0 and "9999-does-not-exist.patch" in r.stderr


def test_wrong_sdist_hash_is_refused_and_the_file_deleted(tmp_path: Path):
    sdist = ROOT / "build" / "dl" / LOCK["sdist"]
    if not sdist.exists():
        pytest.skip("the sdist was not downloaded (the submodule checkout is in use)")
    dl = tmp_path / "dl"
    dl.mkdir()
    shutil.copy(sdist, dl / sdist.name)
    lock = tmp_path / "sglang.lock"
    lock.write_text(
        (ROOT / "ci" / "sglang.lock").read_text().replace(LOCK["sdist_sha256"], "0" * 64)
    )
    env = {"WORK": str(tmp_path / "work"), "DL": str(dl), "LOCK": str(lock),
           "SUBMODULE": str(tmp_path / "no-submodule")}

    r = run("source.sh", env)

    assert r.returncode != 0
    assert "sha256 mismatch" in r.stderr and LOCK["sdist"] in r.stderr
    assert not (dl / sdist.name).exists()
    assert not (tmp_path / "work" / "pristine").exists()


def test_submodule_at_another_commit_is_refused(tmp_path: Path):
    sub = tmp_path / "sglang"
    subprocess.run(["git", "init", "-q", str(sub)], check=True)
    subprocess.run(["git", "-C", str(sub), "commit", "-q", "--allow-empty", "-m", "x"], check=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    r = run("source.sh", {"WORK": str(tmp_path / "work"), "SUBMODULE": str(sub)})
    assert r.returncode != 0
    assert "not the pinned" in r.stderr and LOCK["commit"] in r.stderr


def test_missing_tool_is_named(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ["dirname", "sed", "awk", "cat", "sha256sum", "cut", "rm", "mkdir", "bash"]:
        path = shutil.which(tool)
        if path:
            (bin_dir / tool).symlink_to(path)
    r = subprocess.run(
        [shutil.which("bash"), str(ROOT / "build" / "apply.sh")],
        env={"PATH": str(bin_dir), "WORK": str(tmp_path / "work")},
        capture_output=True, text=True,
    )
    assert r.returncode != 0
    assert "required tool 'git' is not installed" in r.stderr


def _wheel() -> Path:
    wheels = sorted((ROOT / "dist").glob("sglang-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_is_versioned_for_the_fork_and_keeps_upstream_dependencies():
    fork_version = f"{LOCK['version']}+mla.{len(series())}"
    whl = _wheel()
    assert whl.name.startswith(f"sglang-{fork_version}-")
    with zipfile.ZipFile(whl) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = z.read(meta_name).decode()
        version_py = z.read("sglang/_version.py").decode()
    assert f"Version: {fork_version}" in meta
    assert fork_version in version_py
    for dep in ("torch==", "sglang-kernel==", "flashinfer_python==", "transformers==", "xgrammar=="):
        assert f"Requires-Dist: {dep}" in meta, dep


def test_wheel_modules_equal_the_patched_tree():
    tree = WORK / "tree" / "python"
    touched = subprocess.run(
        ["git", "-C", str(WORK / "tree"), "diff", "--name-only", "pristine..patched", "--", "python/sglang/*.py"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert touched, "the series changes nothing under python/"
    with zipfile.ZipFile(_wheel()) as z:
        names = {n for n in z.namelist() if n.startswith("sglang/") and n.endswith(".py")}
        for rel in touched:
            arc = rel.removeprefix("python/")
            assert arc in names, f"{arc} is not in the wheel"
        for arc in names - {"sglang/_version.py"}:
            assert z.read(arc) == (tree / arc).read_bytes(), f"{arc} differs from the patched tree"


def test_wheel_installs_into_a_fresh_venv_and_imports(tmp_path: Path):
    test_venv = Path(os.environ.get("SGLANG_FORK_VENV", ROOT / "build" / "venv"))
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-deps", str(_wheel())], check=True)
    # The fresh venv owns sglang; the heavy runtime (torch, ...) is borrowed from the test
    # environment through a .pth, which Python appends *after* the venv's own site-packages.
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    borrowed = subprocess.run([str(test_venv / "bin" / "python"), "-c",
                               "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "zz_borrow_test_env.pth").write_text(borrowed + "\n")
    code = (
        "import sglang_cpu, sglang, sglang.srt.mem_cache.common as c; "
        "print(sglang.__version__); print(c.__file__)"
    )
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "ci" / "cpu")})
    assert r.returncode == 0, r.stderr[-2000:]
    version, module_file = r.stdout.split()[-2:]
    assert version == f"{LOCK['version']}+mla.{len(series())}"
    assert module_file.startswith(str(venv))
    show = subprocess.run([str(py), "-m", "pip", "show", "sglang"], capture_output=True, text=True)
    assert f"Version: {version}" in show.stdout
