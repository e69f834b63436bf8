"""scripts/deploy_space.py: the Space bundles for zero-gpu and cpu-basic, checked against independent
oracles: PyYAML for the front matter, `git check-attr` for LFS routing, pip's resolver for the
requirements (online), the bundle's own `python app.py` through gradio_client, and the one-line
messages for Hub refusals (HfApi methods monkeypatched; no network)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import deploy_space as ds  # noqa: E402
from scripts.app_process import start_app, stop_app, wait_until_up  # noqa: E402

SCRIPT = ROOT / "scripts" / "deploy_space.py"
HARDWARES = ("zero-gpu", "cpu-basic")
# spaces-zerogpu.md, "Supported Versions" (huggingface/hub-docs, 2026-08): the lists ZeroGPU accepts.
ZEROGPU_PYTHONS = {"3.12.12", "3.10.13"}
ZEROGPU_TORCH = {"2.8.0", "2.9.1", "2.10.0", "2.11.0"}
# spaces-config-reference.md, colorFrom / colorTo.
COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
MB10 = 10 * 1024 * 1024


def build(hardware: str, dest: Path, *extra: str) -> subprocess.CompletedProcess:
    """The CLI, as a user runs it: a dry run into dest."""
    return subprocess.run([sys.executable, str(SCRIPT), "--space", "tester/clip-lab", "--hardware", hardware,
                           "--dry-run", str(dest), *extra], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = {}
    for hw in HARDWARES:
        dest = tmp_path_factory.mktemp(hw) / "bundle"
        done = build(hw, dest)
        assert done.returncode == 0, done.stderr
        out[hw] = {"dir": dest, "listing": done.stdout}
    return out


def files_of(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def front_matter(bundle: Path) -> dict:
    text = (bundle / "README.md").read_text(encoding="utf-8")
    m = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert m, "README.md does not start with a --- YAML block ---"
    return yaml.safe_load(m.group(1))


def requirement_lines(bundle: Path) -> list[str]:
    return [ln.strip() for ln in (bundle / "requirements.txt").read_text().splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def pinned(lines: list[str], name: str) -> str | None:
    """The version a line `name[extras]==X` pins, or None."""
    for ln in lines:
        m = re.fullmatch(rf"{name}(\[[^\]]*\])?==([^\s;]+)", ln)
        if m:
            return m.group(2)
    return None


# ---------------------------------------------------------------------------------------------
# Front matter and requirements


@pytest.mark.parametrize("hw", HARDWARES)
def test_front_matter_names_what_the_requirements_install(bundles, hw):
    bundle = bundles[hw]["dir"]
    meta = front_matter(bundle)
    reqs = requirement_lines(bundle)
    import gradio
    from packaging.specifiers import SpecifierSet

    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and (bundle / "app.py").is_file()
    assert meta["title"] and meta["emoji"] and {meta["colorFrom"], meta["colorTo"]} <= COLOURS
    assert isinstance(meta["sdk_version"], str)
    assert meta["sdk_version"] == pinned(reqs, "gradio") == gradio.__version__
    assert isinstance(meta["python_version"], str), "python_version must be a string (3.10 read as a float is 3.1)"
    python = meta["python_version"]
    assert re.fullmatch(r"3\.\d+(\.\d+)?", python)
    assert SpecifierSet(metadata.metadata("gradio")["Requires-Python"]).contains(python)
    assert meta["suggested_hardware"] == ds.HARDWARE[hw].flavor
    assert meta["license"] == "mit" and len(meta["short_description"]) <= 60
    assert meta["models"] == ["openai/clip-vit-base-patch32", "google/siglip2-base-patch16-224"]
    entries = dict(entry.split(" ") for entry in meta["preload_from_hub"])
    assert list(entries) == meta["models"]
    for repo, files in entries.items():
        files = set(files.split(","))
        assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= files
        assert all(f.endswith((".json", ".txt", ".safetensors")) for f in files), "no pickles, no TF/Flax weights"
    assert {"vocab.json", "merges.txt"} <= set(entries["openai/clip-vit-base-patch32"].split(","))  # CLIP's BPE
    assert not {"vocab.json", "merges.txt"} & set(entries["google/siglip2-base-patch16-224"].split(","))  # not there
    assert not any("torchvision" in ln for ln in reqs)
    if hw == "zero-gpu":
        assert python in ZEROGPU_PYTHONS
        assert pinned(reqs, "torch") in ZEROGPU_TORCH
        assert [ln for ln in reqs if ds.requirement_name(ln) == "spaces"], "ZeroGPU needs `spaces`"
    else:
        assert pinned(reqs, "torch") == "2.13.0+cpu"
        assert "--extra-index-url https://download.pytorch.org/whl/cpu" in reqs
    names = [ds.requirement_name(ln) for ln in reqs if not ln.startswith("-")]
    assert len(names) == len(set(names)), f"a package named twice: {names}"


def test_every_other_requirement_comes_from_the_repository(bundles):
    """Besides torch and the gradio pin (and `spaces` on ZeroGPU if the repository lacked it), the
    bundle installs exactly requirements.txt's lines."""
    own = ("torch", "gradio")
    repo = {ln for ln in requirement_lines(ROOT) if ds.requirement_name(ln) not in own}
    for hw in HARDWARES:
        got = {ln for ln in requirement_lines(bundles[hw]["dir"])
               if not ln.startswith("--extra-index-url") and ds.requirement_name(ln) not in own}
        if hw == "zero-gpu" and not any(ds.requirement_name(ln) == "spaces" for ln in repo):
            got.discard("spaces")
        assert got == repo, hw


# ---------------------------------------------------------------------------------------------
# What is in the bundle, and what goes to LFS


@pytest.mark.parametrize("hw", HARDWARES)
def test_bundle_holds_the_app_and_nothing_else(bundles, hw):
    bundle = bundles[hw]["dir"]
    names = files_of(bundle)
    tracked = subprocess.run(["git", "ls-files", "app.py", "LICENSE", "core", "demo", "assets"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    missing = [t for t in tracked if (ROOT / t).is_file() and t not in names]
    assert not missing, f"tracked app files left out: {missing}"
    for t in tracked:
        if (ROOT / t).is_file():
            assert (bundle / t).read_bytes() == (ROOT / t).read_bytes(), t
    for n in names:
        parts = set(n.split("/"))
        assert not parts & {"tests", "benchmarks", "runs", "screenshots", "__pycache__", ".git", "docs", "scripts",
                            ".pytest_cache", ".hypothesis"}, n
        assert not n.endswith((".pyc", ".pyo")), n
    tops = {n.split("/")[0] for n in names}
    assert tops == {"app.py", "LICENSE", "README.md", "requirements.txt", ".gitattributes", "core", "demo", "assets"}


def copy_source(src: Path) -> Path:
    """A copy of what the bundle is built from, to plant things in."""
    src.mkdir(parents=True)
    for top in ds.BUNDLE_PATHS + ("requirements.txt",):
        (shutil.copytree if (ROOT / top).is_dir() else shutil.copy2)(ROOT / top, src / top)
    return src


def test_decoys_in_the_source_stay_out(tmp_path):
    """Caches, run folders and screenshots planted inside the bundled folders are not copied."""
    src = copy_source(tmp_path / "src")
    decoys = ["core/__pycache__/x.cpython-311.pyc", "demo/runs/run1/model.safetensors", "assets/screenshots/a.png",
              "assets/tests/test_x.py", "core/.pytest_cache/v", "demo/stray.pyc", "assets/benchmarks/b.json",
              "assets/.git/HEAD"]
    for d in decoys:
        (src / d).parent.mkdir(parents=True, exist_ok=True)
        (src / d).write_bytes(b"decoy")
    rows = ds.build_bundle(tmp_path / "out", ds.HARDWARE["cpu-basic"], root=src)
    paths = {r["path"] for r in rows}
    assert not paths & set(decoys)
    assert "assets/models/shapes-tiny/model.safetensors" in paths


def git_lfs_answer(bundle: Path, tmp: Path) -> dict[str, bool]:
    """`git check-attr filter` on a git repository holding a copy of the bundle: git's own reading."""
    repo = tmp / "gitcheck"
    shutil.copytree(bundle, repo)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    names = files_of(repo)
    names = [n for n in names if not n.startswith(".git/")]
    out = subprocess.run(["git", "check-attr", "-z", "--stdin", "filter"], cwd=repo, input="\0".join(names) + "\0",
                         capture_output=True, text=True, check=True).stdout.split("\0")
    triples = [out[i:i + 3] for i in range(0, len(out) - 1, 3)]
    return {path: value == "lfs" for path, _attr, value in triples}


@pytest.mark.parametrize("hw", HARDWARES)
def test_binaries_and_big_files_go_to_lfs(bundles, hw, tmp_path):
    bundle = bundles[hw]["dir"]
    lfs = git_lfs_answer(bundle, tmp_path)
    assert set(lfs) == set(files_of(bundle))
    for rel, in_lfs in lfs.items():
        with open(bundle / rel, "rb") as f:
            binary = b"\0" in f.read(8000)
        big = (bundle / rel).stat().st_size > MB10
        if binary or big:
            assert in_lfs, f"{rel} ({'binary' if binary else 'over 10 MB'}) is not routed to LFS"
    # The Space reads these from plain git.
    for rel in ("README.md", "requirements.txt", "app.py", ".gitattributes"):
        assert not lfs[rel], rel
    assert lfs["assets/models/shapes-tiny/model.safetensors"] and lfs["assets/examples/photo_apple.png"]


@pytest.mark.parametrize("hw", HARDWARES)
def test_dry_run_lists_every_file_with_its_size_and_git_s_lfs_answer(bundles, hw, tmp_path):
    bundle, listing = bundles[hw]["dir"], bundles[hw]["listing"]
    rows = {}
    for line in listing.splitlines()[2:]:
        size, lfs, path = line.split(None, 2)
        rows[path] = (int(size.replace(",", "")), lfs == "yes")
    assert set(rows) == set(files_of(bundle))
    git = git_lfs_answer(bundle, tmp_path)
    for path, (size, lfs) in rows.items():
        assert size == (bundle / path).stat().st_size, path
        assert lfs == git[path], path


def test_a_big_text_file_gets_its_own_lfs_line(tmp_path):
    """A file over 10 MB that no pattern covers (here an 11 MB vocabulary) is routed by name."""
    src = copy_source(tmp_path / "src")
    (src / "assets/classnames/huge names.txt").write_text("cat\n" * (11 * 1024 * 1024 // 4))
    bundle = tmp_path / "out"
    ds.build_bundle(bundle, ds.HARDWARE["cpu-basic"], root=src)
    assert git_lfs_answer(bundle, tmp_path)["assets/classnames/huge names.txt"]


def test_dry_run_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    done = build("cpu-basic", tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "not an empty folder" in done.stderr
    assert files_of(tmp_path) == ["keep.txt"]


# ---------------------------------------------------------------------------------------------
# Requirements resolve on the Space's platform (online)


def pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10) as r:
            return r.status == 200
    except OSError:
        return False


# A glibc-2.28 x86_64 machine accepts manylinux_2_28 and every older manylinux tag; pip's
# --platform takes each one literally, so they are listed as pip would derive them on such a machine.
PLATFORMS = [f"manylinux_2_{m}_x86_64" for m in range(28, 16, -1)] + ["manylinux2014_x86_64", "linux_x86_64"]
# Served only by https://download.pytorch.org/whl/cpu, which our machines cannot reach.
UNREACHABLE_INDEX_ONLY = {"cpu-basic": {"torch"}}


@pytest.fixture(scope="module")
def resolving(bundles, tmp_path_factory) -> dict:
    """pip's resolver started for every hardware at once (each mostly waits on the index): {hw: (process, report)}."""
    started = {}
    for hw in HARDWARES:
        folder = tmp_path_factory.mktemp(f"resolve-{hw}")
        bundle = bundles[hw]["dir"]
        skip = UNREACHABLE_INDEX_ONLY.get(hw, set())
        lines = [ln for ln in requirement_lines(bundle)
                 if not ln.startswith("--extra-index-url") and ds.requirement_name(ln) not in skip]
        req = folder / "requirements.txt"
        req.write_text("\n".join(lines) + "\n")
        report = folder / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--report",
               str(report), "--target", str(folder / "target"), "--python-version", front_matter(bundle)["python_version"],
               "--only-binary=:all:"]
        for p in PLATFORMS:
            cmd += ["--platform", p]
        started[hw] = (subprocess.Popen(cmd + ["-r", str(req)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True), report)
    yield started
    for proc, _ in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.online
@pytest.mark.parametrize("hw", HARDWARES)
def test_requirements_resolve_for_the_space_python_and_platform(bundles, hw, resolving):
    """pip's resolver, for the front matter's Python on manylinux_2_28 x86_64, binary wheels only.

    On cpu-basic, torch==2.13.0+cpu lives only on PyTorch's CPU index, which these machines cannot
    reach: that line is checked by name and pin (test_front_matter_...) and left out here, with
    the --extra-index-url line; everything else resolves from PyPI."""
    if not pypi_reachable():
        pytest.skip("PyPI is unreachable from here")
    bundle = bundles[hw]["dir"]
    proc, report = resolving[hw]
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    got = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
           for i in json.loads(report.read_text())["install"]}
    assert got["gradio"] == front_matter(bundle)["sdk_version"]
    for name in ("transformers", "tokenizers", "safetensors", "huggingface-hub", "datasets", "plotly", "umap-learn",
                 "pillow", "numpy", "tqdm", "mcp"):
        assert name in got, name
    if hw == "zero-gpu":
        assert got["torch"] == pinned(requirement_lines(bundle), "torch") and "spaces" in got
    assert "torchvision" not in got


# ---------------------------------------------------------------------------------------------
# The bundle serves


def test_app_started_inside_the_bundle_serves_zero_shot(bundles, tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    from core.model import DEFAULT_MODEL

    bundle = bundles["cpu-basic"]["dir"]
    env = {"CLIP_LAB_WARMUP": "0", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "PYTHONPATH": "",
           "CLIP_LAB_MODEL": DEFAULT_MODEL, "CLIP_LAB_MODEL_DIRS": "", "CLIP_LAB_DATA_DIRS": ""}
    where = subprocess.run([sys.executable, "-c", "import app, core, demo; print(app.__file__, core.__file__, demo.__file__)"],
                           cwd=bundle, env=dict(os.environ, **env), capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(Path(p).resolve().is_relative_to(bundle.resolve()) for p in where.stdout.split()), where.stdout
    log = tmp_path / "app.log"
    proc, url = start_app(log, env, cwd=bundle)
    try:
        wait_until_up(url, proc, 240, log)
        client = gradio_client.Client(url, verbose=False)
        t0 = time.perf_counter()
        label, *_ = client.predict(api_name="/zero_shot")
        assert time.perf_counter() - t0 < 240
        assert label["label"] and label["confidences"], label
        assert proc.poll() is None
    finally:
        stop_app(proc)
    assert proc.returncode is not None


# ---------------------------------------------------------------------------------------------
# Hub refusals (no network: HfApi methods are replaced)


def http_error(status: int):
    from huggingface_hub.errors import HfHubHTTPError

    try:
        import httpx2 as httpx_mod
    except ImportError:
        import httpx as httpx_mod
    response = httpx_mod.Response(status, request=httpx_mod.Request("POST", "https://huggingface.co/api/repos/create"))
    return HfHubHTTPError(f"{status} Client Error for url: https://huggingface.co/api/repos/create", response=response)


def network_errors() -> list:
    errs = []
    for mod in ("httpx2", "httpx"):
        try:
            m = __import__(mod)
        except ImportError:
            continue
        errs.append(m.ConnectError("[Errno -3] Temporary failure in name resolution"))
    try:
        import requests

        errs.append(requests.ConnectionError("Max retries exceeded with url: /api/repos/create"))
    except ImportError:
        pass
    errs.append(ConnectionRefusedError(111, "Connection refused"))
    return errs


@pytest.fixture()
def hub(monkeypatch):
    """HfApi with every network method replaced; `calls` records what was asked."""
    from huggingface_hub import HfApi

    calls: dict = {}

    def forbid(*a, **k):
        raise AssertionError("reached a Hub method that should not run")

    for name in ("create_repo", "get_space_runtime", "request_space_hardware", "upload_folder"):
        monkeypatch.setattr(HfApi, name, forbid)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    return HfApi, calls, monkeypatch


def run_main(capsys, *args) -> tuple[int, str, str]:
    rc = ds.main(["--space", "tester/clip-lab", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("status, must_say", [
    (401, ["401", "hf auth login", "HF_TOKEN"]),
    (402, ["402", "PRO", "--hardware zero-gpu"]),
    (409, ["409", "taken", "--space"]),
])
def test_hub_refusals_become_one_error_line(hub, capsys, status, must_say):
    HfApi, _, monkeypatch = hub

    def refuse(self, *a, **k):
        raise http_error(status)

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    rc, out, err = run_main(capsys, "--hardware", "cpu-basic")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for s in must_say:
        assert s in lines[0], (s, lines[0])


@pytest.mark.parametrize("error", network_errors(), ids=lambda e: type(e).__module__ + "." + type(e).__name__)
def test_network_errors_become_one_error_line(hub, capsys, error):
    HfApi, _, monkeypatch = hub

    def fail(self, *a, **k):
        raise error

    monkeypatch.setattr(HfApi, "create_repo", fail)
    rc, out, err = run_main(capsys, "--hardware", "zero-gpu")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: could not reach the Hugging Face Hub"), err


def test_no_token_says_how_to_log_in(hub, capsys):
    from huggingface_hub.errors import LocalTokenNotFoundError

    HfApi, _, monkeypatch = hub

    def fail(self, *a, **k):
        raise LocalTokenNotFoundError("Token is required")

    monkeypatch.setattr(HfApi, "create_repo", fail)
    rc, _, err = run_main(capsys, "--hardware", "zero-gpu")
    assert rc == 2 and err.startswith("error: ") and "hf auth login" in err and "HF_TOKEN" in err


def test_changing_an_existing_space_to_paid_hardware_without_pro(hub, capsys):
    """create_repo keeps an existing Space's hardware; the hardware request is what says 402."""
    HfApi, calls, monkeypatch = hub
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: calls.setdefault("create", k))
    monkeypatch.setattr(HfApi, "get_space_runtime",
                        lambda self, *a, **k: type("Runtime", (), {"requested_hardware": "zero-a10g", "hardware": None})())

    def refuse(self, *a, **k):
        raise http_error(402)

    monkeypatch.setattr(HfApi, "request_space_hardware", refuse)
    rc, _, err = run_main(capsys, "--hardware", "cpu-upgrade")
    assert rc == 2 and "402" in err and "--hardware zero-gpu" in err


def test_a_push_creates_the_space_and_uploads_the_bundle(hub, capsys):
    HfApi, calls, monkeypatch = hub
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **k: calls.update(create=(repo_id, k)))
    monkeypatch.setattr(HfApi, "get_space_runtime",
                        lambda self, *a, **k: type("Runtime", (), {"requested_hardware": "zero-a10g", "hardware": None})())

    def upload(self, **k):
        calls["upload"] = k
        calls["uploaded"] = files_of(Path(k["folder_path"]))
        calls["front"] = front_matter(Path(k["folder_path"]))

    monkeypatch.setattr(HfApi, "upload_folder", upload)
    rc, out, err = run_main(capsys, "--hardware", "zero-gpu", "--private")
    assert rc == 0, err
    repo_id, kw = calls["create"]
    assert repo_id == "tester/clip-lab"
    assert kw == {"repo_type": "space", "space_sdk": "gradio", "space_hardware": "zero-a10g", "exist_ok": True,
                  "private": True}
    assert calls["upload"]["repo_id"] == "tester/clip-lab" and calls["upload"]["repo_type"] == "space"
    assert {"README.md", "requirements.txt", ".gitattributes", "app.py",
            "assets/models/shapes-tiny/model.safetensors"} <= set(calls["uploaded"])
    assert calls["front"]["suggested_hardware"] == "zero-a10g"
    assert "https://huggingface.co/spaces/tester/clip-lab" in out
    assert not Path(calls["upload"]["folder_path"]).exists(), "the temporary bundle is removed afterwards"


def test_bad_arguments_exit_2(capsys):
    assert ds.main(["--space", "no-slash", "--hardware", "zero-gpu", "--dry-run", tempfile.mkdtemp()]) == 2
    assert capsys.readouterr().err.startswith("error: --space")
    with pytest.raises(SystemExit) as e:
        ds.main(["--space", "a/b", "--hardware", "h100"])
    assert e.value.code == 2
