"""Progress that reaches the browser and Stop buttons that stop the work, without a server."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest
from conftest_app import model_source

import core
from demo.platform import gpu
from demo.platform.config import AppConfig
from demo.platform.context import AppContext
from demo.platform.jobs import Jobs, Stopped

ROOT = Path(__file__).resolve().parents[1]


class FalsyProgress:
    """Behaves like gr.Progress where it matters: callable, and falsy (its len is 0 outside tracking)."""

    def __init__(self):
        self.calls = []

    def __len__(self) -> int:
        return 0

    def __call__(self, fraction, desc=None, **kwargs):
        self.calls.append((fraction, desc))


@pytest.fixture(scope="module")
def ctx():
    return AppContext.create(AppConfig(default_model=model_source()))


def test_a_falsy_progress_still_gets_every_update(ctx):
    clip = ctx.models.get(model_source())
    progress, job = FalsyProgress(), ctx.jobs.start("s1", "zero_shot")
    names = [f"class {i}" for i in range(300)]  # 600 prompts: three batches of 256
    ctx.services.zero_shot_head(clip, names, ["a {}.", "the {}."], progress=job.reporter(progress, "prompts"))
    assert len(progress.calls) >= 3 and progress.calls[-1][0] == (600, 600)
    assert "600 of 600" in progress.calls[-1][1]


def test_no_truthiness_test_of_a_progress_object_anywhere():
    """`if progress:` is always False for a gr.Progress (len 0), so no update would ever be sent."""
    offenders = []
    for path in [ROOT / "app.py", *(ROOT / "demo").rglob("*.py"), *(ROOT / "core").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            tests = [node.test] if isinstance(node, (ast.If, ast.IfExp, ast.While)) else []
            tests += node.values if isinstance(node, ast.BoolOp) else []
            for t in tests:
                t = t.operand if isinstance(t, ast.UnaryOp) and isinstance(t.op, ast.Not) else t
                if isinstance(t, ast.Name) and "progress" in t.id:  # a progress object (config flags are attributes)
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_stop_ends_the_encoding_within_a_batch_and_caches_nothing(ctx):
    clip = ctx.models.get(model_source())
    names = [f"thing {i}" for i in range(2000)]  # 2,000 prompts: 8 batches
    job = ctx.jobs.start("s2", "zero_shot")
    batches = []

    def progress(fraction, desc=None, **kw):
        batches.append(desc)
        if len(batches) == 2:
            assert ctx.jobs.stop("s2", "zero_shot") == 1  # the user presses Stop during the second batch's report

    with pytest.raises(Stopped):
        ctx.services.zero_shot_head(clip, names, ["a {}."], progress=job.reporter(progress, "prompts"))
    assert len(batches) == 2  # the third batch never ran
    assert len(ctx.services.heads) == 0 or all(k[1] != tuple(names) for k in list(ctx.services.heads._data))
    head, cached = ctx.services.zero_shot_head(clip, names[:3], ["a {}."])  # the app keeps serving
    assert not cached and head.head.shape[0] == 3


def test_stop_is_per_session_and_tab():
    jobs = Jobs()
    a, b, c = jobs.start("A", "map"), jobs.start("B", "map"), jobs.start("A", "matrix")
    assert jobs.stop("A", "map") == 1 and a.stopped.is_set() and not b.stopped.is_set() and not c.stopped.is_set()
    assert jobs.stop("A") == 1 and c.stopped.is_set()  # a closed tab stops all of its session's jobs
    jobs.finish("B", "map", b)
    assert len(jobs) == 0


def test_the_gpu_decorators_are_no_ops_off_zerogpu(ctx):
    """Off ZeroGPU, spaces.GPU hands back the function itself: same thread, same numbers as core."""
    clip = ctx.models.get(model_source())
    seen = []
    real = core.encode_texts

    def spy(*args, **kwargs):
        seen.append(threading.get_ident())
        return real(*args, **kwargs)

    assert not gpu.ZERO_GPU
    core_out = core.encode_texts(clip, ["a red star", "a blue circle"])
    gpu.core.encode_texts, saved = spy, gpu.core.encode_texts
    try:
        ours = gpu.embed_texts(clip, ["a red star", "a blue circle"])
    finally:
        gpu.core.encode_texts = saved
    assert seen == [threading.get_ident()]  # ran here, not in a worker process
    assert (ours - core_out).abs().max() < 1e-6
    if gpu.spaces is not None:
        import spaces

        def f(x):
            return x

        assert spaces.GPU(duration=5)(f) is f  # the decorator returns the function unchanged off ZeroGPU


def test_heads_persist_on_disk_across_a_restart_keyed_by_weights(tmp_path, monkeypatch):
    from core.model import create

    create("tiny", seed=0).save(tmp_path / "m")
    cfg = AppConfig(default_model=str(tmp_path / "m"), model_dirs=[tmp_path.resolve()], cache_dir=tmp_path / "cache")
    first = AppContext.create(cfg)
    clip = first.models.get(str(tmp_path / "m"))
    head, _ = first.services.zero_shot_head(clip, ["red star", "blue circle"], ["a {}.", "the {}."])
    restarted = AppContext.create(cfg)  # a new process: empty memory, the same disk
    clip2 = restarted.models.get(str(tmp_path / "m"))
    monkeypatch.setattr(gpu, "encode_texts", lambda *a, **k: pytest.fail("encoded again after a restart"))
    again, in_memory = restarted.services.zero_shot_head(clip2, ["red star", "blue circle"], ["a {}.", "the {}."])
    assert not in_memory and (again.head - head.head).abs().max() == 0
    monkeypatch.undo()
    create("tiny", seed=1).save(tmp_path / "m")  # new weights: a new revision, so a new head
    retrained = AppContext.create(cfg).models.get(str(tmp_path / "m"))
    new, _ = restarted.services.zero_shot_head(retrained, ["red star", "blue circle"], ["a {}.", "the {}."])
    assert (new.head - head.head).abs().max() > 1e-3


def test_the_disk_cache_is_bounded_and_drops_damaged_files(tmp_path):
    import torch

    from demo.platform.disk_cache import DiskCache

    cache = DiskCache(tmp_path, max_bytes=10_000)
    for i in range(10):
        cache.put(f"k{i}", torch.zeros(500))  # 2 kB each (+ header): 10 of them do not fit
    assert cache.size() <= 10_000 and cache.get("k9") is not None and cache.get("k0") is None
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    assert cache.get("bad") is None and not (tmp_path / "bad.safetensors").exists()


def test_big_encodes_never_run_more_than_the_concurrency_limit_at_once(monkeypatch):
    """Four big head builds at once: at most `concurrency` (2) encode at the same time; the others wait."""
    import torch

    ctx = AppContext.create(AppConfig(default_model=model_source(), concurrency=2, heavy_prompts=10))
    clip = ctx.models.get(model_source())
    running, peak, lock, gate = [0], [0], threading.Lock(), threading.Event()

    def encode(model, texts, progress=None):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        gate.wait(0.3)  # hold the slot a moment (a bounded wait, not a sync point)
        with lock:
            running[0] -= 1
        return torch.nn.functional.normalize(torch.randn(len(texts), clip.embed_dim), dim=-1)

    monkeypatch.setattr(gpu, "encode_texts", encode)
    threads = [threading.Thread(target=ctx.services.zero_shot_head, args=(clip, [f"c{i}-{j}" for j in range(20)], ["a {}."]))
               for i in range(4)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert peak[0] == 2 and len(ctx.services.heads) == 4
