"""Training in ZeroGPU chunks (demo/tabs/train/gpu_chunks.py): a run cut into GPU calls ends where an
uninterrupted run ends, and in forked workers that share nothing with the app but the disk (every
message pickled, as in ZeroGPU's worker) it still shows live frames, stops, exports and resumes."""

from __future__ import annotations

import multiprocessing
import pickle
import threading

import pytest
import torch
from safetensors.torch import load_file
from test_train_tab import tiny_cfg, wait_for

from core.errors import UserInputError
from core.train import latest_checkpoint, train
from demo.platform.config import AppConfig
from demo.platform.context import AppContext
from demo.tabs.train.gpu_chunks import train_chunk, train_in_chunks
from demo.tabs.train.runs import TrainRuns
from demo.tabs.train.tab import train_runs


class CountedChunks:
    """train_chunk, counting its calls; forked=True runs each call in a forked process and passes
    every message through a pickling queue, like the spaces package's ZeroGPU worker."""

    def __init__(self, forked: bool = False):
        self.forked, self.calls = forked, 0

    def __call__(self, *args):
        self.calls += 1
        if not self.forked:
            for message in train_chunk(*args):
                assert b"torch" not in pickle.dumps(message), message[0]  # plain data: no tensor handles
                yield message
            return
        ctx = multiprocessing.get_context("fork")
        messages = ctx.SimpleQueue()

        def child():
            torch.set_num_threads(1)
            try:
                for message in train_chunk(*args):
                    messages.put(message)
            finally:
                messages.put(None)

        worker = ctx.Process(target=child, daemon=True)
        worker.start()
        while (message := messages.get()) is not None:
            yield message
        worker.join(60)
        assert worker.exitcode == 0


def test_a_run_cut_into_gpu_chunks_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    cfg = tiny_cfg(30, save_every=0)
    train(cfg.replace(output_dir=str(tmp_path / "whole")))
    chunks = CountedChunks()
    finished = train_in_chunks(cfg.replace(output_dir=str(tmp_path / "chunked")), "new", [], threading.Event(),
                               lambda: None, chunks, seconds=3.0)
    assert finished and chunks.calls >= 2  # it was cut, at least once
    whole = load_file(str(tmp_path / "whole/model/model.safetensors"))
    chunked = load_file(str(tmp_path / "chunked/model/model.safetensors"))
    assert whole.keys() == chunked.keys()
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_a_run_in_forked_gpu_workers_shows_frames_stops_exports_and_resumes(tmp_path):
    chunks = CountedChunks(forked=True)
    runs = TrainRuns(tmp_path, chunked=True, chunk=chunks, chunk_seconds=3.0)
    run = runs.submit(tiny_cfg(400))
    wait_for(lambda: run.recorder.view().frames, what="a frame from the GPU worker")
    folder = runs.current_weights(run)  # exported by the worker, at its next step
    assert folder == run.run_dir / "current" and (folder / "model.safetensors").exists()
    wait_for(lambda: chunks.calls >= 2, what="a second chunk")
    assert run.gpu_calls == chunks.calls  # what the tab's status line counts
    runs.stop(run)
    wait_for(lambda: run.status == "stopped", what="the stop")
    stopped_at = run.recorder.view().last_step
    assert run.error == ""
    runs.resume(run)
    wait_for(lambda: run.recorder.view().last_step > stopped_at + 3, what="the resumed run to go on")
    runs.stop(run)
    wait_for(lambda: run.status == "stopped", what="the second stop")
    view = run.recorder.view()
    assert view.steps == sorted(set(view.steps))  # every step once, in order, across the chunks


def test_the_app_trains_in_chunks_on_zero_gpu_or_when_asked(tmp_path):
    plain = AppContext.create(AppConfig.from_env({"CLIP_LAB_RUNS_DIR": str(tmp_path)}))
    asked = AppContext.create(AppConfig.from_env({"CLIP_LAB_RUNS_DIR": str(tmp_path), "CLIP_LAB_TRAIN_CHUNK_S": "20"}))
    assert not train_runs(plain).chunked
    assert train_runs(asked).chunked and train_runs(asked).chunk_seconds == 20.0


def test_a_gpu_call_refused_by_zero_gpu_fails_the_run_with_its_message(tmp_path):
    gr = pytest.importorskip("gradio")

    class HTMLError(gr.Error):  # spaces raises its own gr.Error subclasses (spaces.zero.gradio.HTMLError)
        pass

    def out_of_quota(*args):
        raise HTMLError("You have exceeded your GPU quota (55s requested vs. 12s left)")
        yield  # a generator, like train_chunk

    runs = TrainRuns(tmp_path, chunked=True, chunk=out_of_quota)
    run = runs.submit(tiny_cfg(20))
    wait_for(lambda: run.status == "failed", what="the refusal")
    assert run.error == "the GPU call failed: You have exceeded your GPU quota (55s requested vs. 12s left)"


def test_the_status_line_counts_gpu_calls_only_when_the_run_trains_in_chunks():
    from demo.tabs.train.figures import status_line
    from demo.tabs.train.live import LiveRecorder

    recorder = LiveRecorder(300)
    recorder.on_step(None, {"step": 36, "loss": 4.0, "logit_scale": 14.2, "lr": 1e-4, "samples_per_s": 44.0})
    view = recorder.view()
    assert "GPU call" not in status_line("running", 0, view)
    line = status_line("running", 0, view, gpu_calls=3, call_seconds=30.0)
    assert line.startswith("**Running** · step 36 of 300 · 44 samples/s") and "GPU call 3 (30 s each, resuming" in line


def test_a_chunk_whose_caller_stops_listening_stops_its_run_with_a_checkpoint(tmp_path):
    cfg = tiny_cfg(400, save_every=0).replace(output_dir=str(tmp_path))
    chunk = train_chunk(cfg.flat(), "new", 60.0)
    assert next(m for m in chunk if m[0] == "step")[1]["step"] == 1
    chunk.close()  # e.g. the app's replay failed: the worker must not train on without a listener
    assert not any(t.name == "train-chunk" and t.is_alive() for t in threading.enumerate())
    assert latest_checkpoint(tmp_path) is not None  # it stopped cleanly, at its next step


def test_the_weights_offered_are_never_an_export_that_was_not_written(tmp_path):
    release = threading.Event()

    def never_exports(flat_cfg, start, *args):  # steps go on, export.flag is ignored
        for step in range(1, 1000):
            yield ("step", {"step": step, "loss": 1.0, "logit_scale": 14.0, "lr": 1e-3})
            if release.wait(0.02):
                break
        yield ("end", step, False)

    runs = TrainRuns(tmp_path, chunked=True, chunk=never_exports)
    run = runs.submit(tiny_cfg(1000))
    (run.run_dir / "current").mkdir(parents=True)  # an old export, or none at all: not to be offered
    wait_for(lambda: run.recorder.view().last_step > 2, what="steps")
    with pytest.raises(UserInputError, match="no weights yet"):
        runs.current_weights(run, timeout=0.3)
    release.set()
    runs.stop(run)
    wait_for(lambda: run.status == "stopped", what="the stop")


def test_a_resume_that_redoes_steps_replaces_them_in_the_live_curves():
    from demo.tabs.train.live import LiveRecorder

    recorder = LiveRecorder(100)
    for step in (1, 2, 3, 4, 5, 3, 4):  # a chunk aborted after step 5; its checkpoint was at step 2
        recorder.on_step(None, {"step": step, "loss": float(step), "logit_scale": 14.0, "lr": 1e-3})
    view = recorder.view()
    assert view.steps == [1, 2, 3, 4] and view.loss == [1.0, 2.0, 3.0, 4.0]


def test_the_eta_counts_every_second_of_the_run_not_only_the_steps():
    from demo.tabs.train.live import LiveRecorder

    now = [0.0]
    recorder = LiveRecorder(100, clock=lambda: now[0])
    recorder.on_start(None)
    for step in range(1, 41):  # 1 s per step, and 10 s of chunk setup after every 10th step
        now[0] += 1.0 + (10.0 if step % 10 == 1 and step > 1 else 0.0)
        recorder.on_step(None, {"step": step, "loss": 1.0, "logit_scale": 14.0, "lr": 1e-3})
    # steps 1..40 span 39 s of steps and 3 setups of 10 s: 69 s for 39 steps, all within the 120-s window;
    # 60 steps are left: 60 * 69 / 39 s, not the 60 s that the step time alone (1 s) would promise
    assert recorder.view().eta_s == pytest.approx(60 * 69 / 39)
    recorder.on_start(None)  # a resume after a pause: the pause is not counted
    now[0] += 3600.0
    for step in range(41, 44):
        now[0] += 1.0
        recorder.on_step(None, {"step": step, "loss": 1.0, "logit_scale": 14.0, "lr": 1e-3})
    assert recorder.view().eta_s == pytest.approx(57 * 1.0)
