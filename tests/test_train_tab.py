"""The Train tab: the run registry as logic, and start -> frames -> stop -> resume -> use -> zero-shot
through gradio_client; a run started in the tab resumes with scripts/train.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from conftest_app import ROOT, running_app

from core.errors import UserInputError
from core.train import Hook, TrainConfig
from demo.tabs.train.runs import RunControl, TrainRuns
from demo.tabs.train.tab import FIRST_RECIPES, build_config, recipe_choices

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

STAR = str(ROOT / "assets/examples/shapes_purple_star.png")


def wait_for(condition, timeout: float = 120.0, what: str = "condition"):
    """Wait for something another thread makes true (a run's progress); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def tiny_cfg(steps: int = 400, **kw) -> TrainConfig:
    knobs = dict(steps=steps, batch_size=8, eval_every=0, save_every=5, log_every=1, warmup_steps=1)
    knobs.update(kw)
    return TrainConfig.from_flat({"model": "tiny", "data": "shapes", "num_workers": 0, "progress": False, **knobs})


def test_quick_demo_is_the_first_recipe_then_shapes_tiny():
    assert tuple(recipe_choices()[:2]) == FIRST_RECIPES
    cfg = build_config("quick-demo", {"steps": 50, "learn_logit_scale": False}, "from scratch on the shapes world",
                       "shapes-tiny", None, True, False, False)
    assert cfg.optim.steps == 50 and cfg.data.num_workers == 0 and not cfg.model.learn_logit_scale
    with pytest.raises(UserInputError, match="trains on"):
        build_config("finetune-lit", {}, "from scratch on the shapes world", "shapes-tiny", None, True, False, False)


class Gate(Hook):
    """Holds a run at its second step until released (a server-side gate, no sleeps)."""

    def __init__(self):
        self.reached, self.release = threading.Event(), threading.Event()

    def on_step(self, state, record):
        if record["step"] == 2:
            self.reached.set()
            self.release.wait(60)


def test_one_run_at_a_time_others_wait_in_line_and_a_stopped_run_resumes(tmp_path):
    runs = TrainRuns(tmp_path, max_runs=1, max_steps=1000)
    first = runs.submit(tiny_cfg(400))
    second = runs.submit(tiny_cfg(12))
    assert first.status == "running" and second.status == "queued" and runs.place(second) == 1
    wait_for(lambda: first.recorder.view().frames, what="the first frame")
    runs.stop(first)
    wait_for(lambda: second.status in ("running", "finished"), what="the second run to start")
    assert first.status == "stopped" and runs.running() <= 1
    stopped_at = first.recorder.view().last_step
    wait_for(lambda: second.status == "finished", what="the second run to finish")
    assert (second.run_dir / "model" / "config.json").exists()
    runs.resume(first)
    wait_for(lambda: first.recorder.view().last_step > stopped_at + 3, what="the resumed run to go on")
    runs.stop(first)
    wait_for(lambda: first.status == "stopped", what="the resumed run to stop")
    with pytest.raises(UserInputError, match="at most 1,000"):
        runs.submit(tiny_cfg(5000))


def test_the_line_of_waiting_runs_is_bounded(tmp_path):
    runs = TrainRuns(tmp_path, max_runs=1, max_waiting=2)
    first = runs.submit(tiny_cfg(400))
    waiting = [runs.submit(tiny_cfg(5)) for _ in range(2)]
    with pytest.raises(UserInputError, match="the limit is 2"):
        runs.submit(tiny_cfg(5))
    for run in waiting:
        runs.stop(run)  # out of the line at once
    assert all(r.status == "stopped" for r in waiting)
    runs.stop(first)
    wait_for(lambda: first.status == "stopped", what="the stop")


def test_a_visitor_has_at_most_one_run_waiting_and_stop_ends_a_long_step_at_once(tmp_path):
    """One visitor cannot take the line: a second waiting run of theirs is refused, another visitor's is
    not. A Stop reaches a run inside its step (core.train's stop_now), not only between steps."""
    runs = TrainRuns(tmp_path, max_runs=1, max_waiting=8)
    first = runs.submit(tiny_cfg(400), owner="ip:a")
    waiting = runs.submit(tiny_cfg(5), owner="ip:a")  # one waiting besides the one training
    with pytest.raises(UserInputError, match="already have a run waiting"):
        runs.submit(tiny_cfg(5), owner="ip:a")
    other = runs.submit(tiny_cfg(5), owner="ip:b")
    for run in (waiting, other):
        runs.stop(run)
    control = RunControl(first, max_wall_s=1e9, idle_s=1e9)
    assert not control.stop_now()
    runs.stop(first)
    assert control.stop_now()  # core.train asks it at every encoder layer of a step (tests/test_train.py)
    wait_for(lambda: first.status == "stopped", what="the stop")


def test_the_picker_lists_no_visitors_run_and_a_private_name_loads_only_what_it_was_given(tmp_path, micro_dir):
    """A Train-tab run's folders (runs/app-*) are neither offered nor loadable by path; an operator's
    own trained model beside them is; a run's weights load under the private name its owner got."""
    import shutil

    from core.model import ModelLoadError
    from demo.platform.config import AppConfig
    from demo.platform.models import ModelCache

    runs = tmp_path / "runs"
    for name in ("app-1a2b/model", "published/model"):
        shutil.copytree(micro_dir, runs / name)
    cache = ModelCache(AppConfig(model_dirs=[runs.resolve()], runs_dir=runs.resolve()))
    listed = cache.choices()
    assert any(n.endswith("published/model") for n in listed) and not any("app-" in n for n in listed)
    with pytest.raises(ModelLoadError, match="private to the browser that trained it"):
        cache.resolve(str(runs / "app-1a2b" / "model"))
    name = cache.add_private("my run 0123456789ab, step 4", runs / "app-1a2b" / "model")
    assert cache.resolve(name) == str(runs / "app-1a2b" / "model")
    shutil.rmtree(runs / "app-1a2b")
    with pytest.raises(ModelLoadError, match="are gone"):
        cache.resolve(name)


def test_run_folders_are_bounded_on_disk_and_a_restart_cleans_the_orphans(tmp_path):
    """The runs of an earlier start of the app (their tickets died with it) are deleted at start; ended
    runs go, oldest first, once the folders pass runs_disk_mb (here: any byte at all)."""
    from demo.platform.config import AppConfig

    orphan = tmp_path / "app-0ld0ld00" / "checkpoints"
    orphan.mkdir(parents=True)
    (orphan / "weights.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "published").mkdir()  # an operator's folder beside them stays
    runs = TrainRuns.from_config(AppConfig(runs_dir=tmp_path))
    assert not (tmp_path / "app-0ld0ld00").exists() and (tmp_path / "published").is_dir()
    runs.max_disk_mb = 0
    first = runs.submit(tiny_cfg(2, save_every=1))
    wait_for(lambda: first.status == "finished", what="the first run")
    second = runs.submit(tiny_cfg(2, save_every=1))
    wait_for(lambda: second.status == "finished", what="the second run")
    # the worker prunes just after it marks its run finished: wait for that, not only for the status
    wait_for(lambda: sorted(p.name for p in tmp_path.iterdir()) == ["published"], what="the ended runs pruned")
    assert not first.run_dir.exists()


def test_a_cpu_server_refuses_runs_too_big_for_it():
    """parameters × batch over AppConfig.cpu_train_budget is refused in one line that says what fits."""
    from demo.platform.config import AppConfig
    from demo.tabs.train.runs import check_fits_cpu, parameters_of

    budget = AppConfig().cpu_train_budget
    tiny, base = parameters_of("tiny"), parameters_of("base")
    assert 8.3e6 < tiny < 8.5e6 and 151e6 < base < 152e6  # counted on the meta device: nothing allocated
    check_fits_cpu(tiny, 512, budget)  # the bundled model's recipes fit
    check_fits_cpu(base, 64, budget)  # a ViT-B/32-size fine-tune at batch 64 fits
    with pytest.raises(UserInputError, match="151 M parameters × batch 512 is too big .* batch of at most 66"):
        check_fits_cpu(base, 512, budget)  # recipe base-gpu


def test_an_unwatched_run_stops_by_itself_and_keys_guard_runs(tmp_path):
    runs = TrainRuns(tmp_path, idle_s=0.0)
    run = runs.submit(tiny_cfg(400))
    wait_for(lambda: run.status == "stopped", what="the idle stop")
    assert "nobody watched" in run.stop_reason
    assert runs.get(run.id, run.key) is run
    with pytest.raises(UserInputError, match="no such run"):
        runs.get(run.id, "not-the-key")


def test_a_run_started_in_the_tab_resumes_with_the_cli(tmp_path):
    runs = TrainRuns(tmp_path)
    run = runs.submit(tiny_cfg(400))
    wait_for(lambda: run.recorder.view().last_step >= 6, what="a checkpoint")
    runs.stop(run)
    wait_for(lambda: run.status == "stopped", what="the stop")
    done = subprocess.run([sys.executable, "scripts/train.py", "--resume", "--out", str(run.run_dir), "--stop-at",
                           str(run.recorder.view().last_step + 3), "--no-progress"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [json.loads(l)["step"] for l in (run.run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert steps[-1] == run.recorder.view().last_step + 3


RUNS_DIR = tempfile.mkdtemp(prefix="clip-lab-runs-")


@pytest.fixture(scope="module")
def url():
    with running_app({"CLIP_LAB_RUNS_DIR": RUNS_DIR}) as u:
        yield u


def test_start_frames_stop_resume_use_and_classify_through_the_api(url):
    c = Client(url, verbose=False)
    ticket = c.predict(recipe="quick-demo", steps=300, batch_size=32, api_name="/train_start")[0]
    assert set(ticket) == {"id", "key"}

    def status():
        return c.predict(ticket=ticket, api_name="/train_status")

    first = wait_for(lambda: (s := status())["frames"] >= 2 and s, what="two frames")
    assert first["status"] == "running" and first["probe_accuracy"] is not None
    c.predict(ticket=ticket, api_name="/train_stop")
    stopped = wait_for(lambda: (s := status())["status"] == "stopped" and s, what="the stop")
    c.predict(ticket=ticket, api_name="/train_resume")
    wait_for(lambda: status()["step"] > stopped["step"], what="the resumed steps")
    assert "id" not in stopped and "run_dir" not in stopped  # no run id, no server folder in answers
    name = c.predict(ticket=ticket, api_name="/train_use_model")[0]["value"]
    assert re.fullmatch(r"my run [0-9a-f]{12}, step \d+", name) and ticket["id"] not in name  # private, no path
    # the session's model is now the run's: zero-shot answers with it
    label = c.predict(image=handle_file(STAR), classnames="circle\nstar", templates="a {}.", api_name="/zero_shot")[0]
    assert label["label"] in ("circle", "star")
    assert name in c.predict(api_name="/zero_shot")[2]  # the info line names the model
    # another visitor neither sees the run's models in the picker nor loads them by path
    stranger = Client(url, verbose=False)
    exported = next(Path(RUNS_DIR).glob("app-*/exports/step-*"))
    with pytest.raises(Exception, match="private to the browser that trained it"):
        stranger.predict(str(exported), api_name="/load_model")
    with pytest.raises(Exception, match="no such run"):
        c.predict(ticket={"id": ticket["id"], "key": "guessed"}, api_name="/train_stop")
    c.predict(ticket=ticket, api_name="/train_stop")


def test_fine_tuning_on_uploaded_pairs_keeps_the_locked_tower(tmp_path):
    """Fine-tune mode: uploaded images (captioned by their file names) become an image folder the
    trainer reads; with the image tower locked (LiT), its weights do not move."""
    import torch

    from core.model import load
    from core.shapes import ShapesWorld
    from demo.tabs.train.tab import FINETUNE, pairs_folder

    files = []
    for i, s in enumerate(ShapesWorld(seed=4).take(8)):
        path = tmp_path / "up" / f"{s.caption.replace(' ', '_')}.png"
        path.parent.mkdir(exist_ok=True)
        s.image.save(path)
        files.append(str(path))
    data = pairs_folder(files, tmp_path / "pairs")
    import csv

    rows = list(csv.DictReader((tmp_path / "pairs" / "metadata.csv").open()))
    assert rows[0]["text"] == ShapesWorld(seed=4)[0].caption and len(rows) == 8
    cfg = build_config("quick-demo", {"steps": 3, "batch_size": 4, "save_every": 0, "warmup_steps": 1, "save_dtype": "float32"},
                       FINETUNE, "shapes-tiny", data,
                       True, False, False)
    runs = TrainRuns(tmp_path / "runs")
    run = runs.submit(cfg)
    wait_for(lambda: run.status in ("finished", "failed"), what="the fine-tuning run")
    assert run.status == "finished", run.error
    before, after = load("shapes-tiny").model, load(str(run.run_dir / "model")).model
    assert torch.equal(before.visual_projection.weight, after.visual_projection.weight)
    assert not torch.equal(before.text_projection.weight, after.text_projection.weight)
