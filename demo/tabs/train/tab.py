"""Train tab: train a CLIP and watch it learn, live: the probe matrix turning diagonal, the map
clustering, the zero-shot curves rising.

Handlers are thin: they build a `TrainConfig` from a recipe file and the knobs, hand it to the
app's `TrainRuns` (demo/tabs/train/runs.py: one worker thread per run, a line when the app is busy),
and draw what the run's `LiveRecorder` holds (demo/tabs/train/figures.py) on a timer. A page reload finds
the run again through the id and key kept in the browser (gr.BrowserState).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from core.errors import UserInputError
from core.train import TrainConfig, read_recipe, recipe_names
from core.zeroshot import parse_classnames
from demo.tabs.shared.api_examples import EXAMPLE_IMAGE, no_example, served_example
from demo.inputs.checks import at_most_chars, at_most_items, in_range
from demo.inputs.images import display_name, open_image
from demo.inputs.pairs import check_dataset_source
from demo.platform.contract import Call, handler, listen
from demo.platform.fair import visitor_of
from demo.platform.scratch import scratch_folder
from demo.tabs.shared.picker import describe_model
from demo.tabs.shared.zero_shot_scores import render, score
from demo.tabs.train.figures import accuracy_figure, curves_figure, frame_at, gap_figure, map_frame_figure, probe_figure, status_line
from demo.tabs.train.runs import TrainRuns, check_fits_cpu, parameters_of

SCRATCH, FINETUNE = "from scratch on the shapes world", "fine-tune the current model"
FIRST_RECIPES = ("quick-demo", "shapes-tiny")
KNOBS = ("steps", "batch_size", "lr", "init_logit_scale", "learn_logit_scale", "hard_negatives", "group_loss", "loss", "seed")


def recipe_choices() -> list[str]:
    """The recipe files, quick-demo first, then shapes-tiny (the bundled model's recipe)."""
    names = recipe_names()
    return [n for n in FIRST_RECIPES if n in names] + [n for n in names if n not in FIRST_RECIPES]


def knob_values(recipe: str) -> list:
    """The knobs' values as the recipe sets them (TrainConfig defaults for what it leaves out)."""
    cfg = TrainConfig.from_flat(read_recipe(recipe))
    flat = cfg.flat()
    return [flat[k] for k in KNOBS]


def build_config(recipe: str, knobs: dict, mode: str, model: str, data: str | None, lock_image: bool,
                 lock_text: bool, streaming: bool, device: str = "cpu") -> TrainConfig:
    """The run's config: the recipe, then the knobs, on `device` (the app's: CLIP_LAB_DEVICE, auto
    resolved); fine-tuning trains `model` on `data`."""
    cfg = TrainConfig.from_flat(read_recipe(recipe)).replace(**knobs, num_workers=0, device=device)
    if mode == FINETUNE:
        # a loaded model keeps its learned logit scale: a recipe's init_logit_scale (from scratch) does not apply
        cfg = cfg.replace(model=model, data=data, lock_image=lock_image, lock_text=lock_text, streaming=streaming,
                          eval_every=0, init_logit_scale=0.0)
    elif cfg.data.source != "shapes":
        raise UserInputError(f"recipe {recipe!r} trains on {cfg.data.source!r}; from scratch, the tab trains on the shapes world")
    return cfg


def pairs_folder(files: list, folder: Path) -> str:
    """Uploaded images as an image folder with metadata.csv; each caption is the file's name."""
    import csv

    if not files or len(files) < 2:
        raise UserInputError("upload at least 2 images; each file's name is its caption (e.g. 'a red bicycle.jpg')")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "text"])
        for i, item in enumerate(files):
            image = open_image(item)  # checked format and size, RGB
            name = f"{i:04d}.png"
            image.save(folder / name)
            writer.writerow([name, Path(display_name(item)).stem.replace("_", " ")])
    return str(folder)


@dataclass
class TrainHandles:
    """How a reloaded page finds its run: the ticket kept in the browser, and the views and knobs that
    `reconnect` fills on the ticket's change (the browser restores it after the page's load event)."""

    owned: gr.BrowserState
    views: list


VIEWS = 8  # status, curves, accuracy, probe, map, gap, replay slider, timer


def train_runs(ctx) -> TrainRuns:
    """The app's training runs (made on first use, with the limits of ctx.config)."""
    return ctx.tab_service("train_runs", TrainRuns.from_config)


def lookup(call: Call, ticket: dict | None):
    """The run a ticket ({'id', 'key'}, as train_start returned it and the browser keeps it) names."""
    ticket = ticket if isinstance(ticket, dict) else {}
    return train_runs(call.ctx).get(ticket.get("id"), ticket.get("key"))


def draw(call: Call, run, at_step=None) -> list:
    """The live views of a run: status, curves, accuracy, probe matrix, map, gap, the replay slider, the timer."""
    runs = train_runs(call.ctx)
    view = run.recorder.view()
    frame = frame_at(view, at_step)
    steps_ = [f.step for f in view.frames] or [0]
    live = run.status in ("queued", "running")
    return [status_line(run.status, runs.place(run), view, run.stop_reason, run.error, run.gpu_calls,
                        runs.chunk_seconds), curves_figure(view),
            accuracy_figure(view), probe_figure(frame), map_frame_figure(view, frame), gap_figure(view),
            gr.Slider(minimum=steps_[0], maximum=max(steps_[-1], steps_[0] + 1), value=frame.step if frame else 0),
            gr.Timer(active=live)]


CHECKS = {"steps": in_range("steps", 1, "max_train_steps", integer=True, default=400),
          "batch_size": in_range("batch size", 2, 512, integer=True, default=64),
          "lr": in_range("learning rate", 1e-7, 1.0, default=1e-3),
          "init_logit_scale": in_range("initial logit scale", 0, 100, default=0),
          "hard_negatives": in_range("hard negatives", 0, 1, default=0),
          "group_loss": in_range("in-group loss weight", 0, 10, default=0),
          "seed": in_range("seed", 0, 2**31 - 1, integer=True, default=0),
          "files": at_most_items("images"), "dataset": at_most_chars("the dataset", 500)}


@handler("train", turn=False, checks=CHECKS, uploads=("files",), cost="training")
def start_run(call: Call, mode: str = SCRATCH, recipe: str = "quick-demo", steps: float = 400, batch_size: float = 64,
              lr: float = 1e-3, init_logit_scale: float = 0.0, learn_logit_scale: bool = True,
              hard_negatives: float = 0.0, group_loss: float = 0.0, loss: str = "clip", seed: float = 0,
              files: list | None = None, dataset: str | None = None, lock_image: bool = True, lock_text: bool = False,
              model=None, ticket: dict | None = None):
    """Start a training run (it waits in line while the app's run slots are taken); returns its live views.

    Args:
        mode: 'from scratch on the shapes world' or 'fine-tune the current model'.
        recipe: a recipe of assets/recipes/ ('quick-demo', 'shapes-tiny', ...); the knobs below override it.
        steps: optimisation steps (at most the app's max_train_steps).
        batch_size: pairs per batch, 2 to 512.
        lr: peak learning rate.
        init_logit_scale: the logit scale at step 0 (0: the paper's 1/0.07); from scratch only.
        learn_logit_scale: learn the temperature (the paper) or keep it fixed.
        hard_negatives: share of each shapes batch made of same-colour groups holding every shape, 0 to 1.
        group_loss: weight of the extra contrastive loss inside each group (what teaches shape).
        loss: 'clip' (softmax InfoNCE) or 'siglip' (pairwise sigmoid).
        seed: seed of the weights and the data order.
        files: fine-tuning: image files, each captioned by its file name.
        dataset: fine-tuning: a datasets source with image and text columns (Hub name or an allowed folder).
        lock_image: fine-tuning: freeze the image tower (LiT).
        lock_text: fine-tuning: freeze the text tower.
    """
    cfg_app = call.config
    knobs = {"steps": steps, "batch_size": batch_size, "lr": lr, "init_logit_scale": init_logit_scale,
             "learn_logit_scale": bool(learn_logit_scale), "hard_negatives": hard_negatives, "group_loss": group_loss,
             "loss": loss if loss in ("clip", "siglip") else "clip", "seed": seed}
    if recipe not in recipe_names():
        raise UserInputError(f"unknown recipe {recipe!r}; choose one of {', '.join(recipe_choices())}")
    data, streaming = None, False
    if mode == FINETUNE:
        if files:
            data = pairs_folder(files, scratch_folder("fine-tune-pairs", cfg_app.upload_ttl_s))
        else:
            data = check_dataset_source(dataset or "", cfg_app.data_dirs)
            streaming = not Path(data).exists()  # Hub datasets only ever stream (bounded)
    config = build_config(recipe, knobs, mode, model or cfg_app.default_model, data, lock_image, lock_text, streaming,
                          cfg_app.torch_device())
    if cfg_app.torch_device() == "cpu" and not cfg_app.train_chunk_s:  # on ZeroGPU the steps run on a GPU
        loaded = call.model(config.model.name) if mode == FINETUNE else None
        check_fits_cpu(parameters_of(config.model.name, loaded), config.data.batch_size, cfg_app.cpu_train_budget)
    run = train_runs(call.ctx).submit(config, meta={"mode": mode, "recipe": recipe}, owner=visitor_of(call.request))
    return [{"id": run.id, "key": run.key}] + draw(call, run)[:-1]


@handler("train", turn=False)
def recipe_knobs(call: Call, recipe: str):
    """The knobs' values as a picked recipe sets them."""
    return knob_values(recipe)


@handler("train", turn=False)
def reconnect(call: Call, ticket=None):
    """A reloaded page: the run's views, and the knobs it was started with (not the recipe's)."""
    try:
        run = lookup(call, ticket)
    except UserInputError:
        return [gr.skip()] * (VIEWS + len(KNOBS) + 2)
    flat = run.cfg.flat()
    return draw(call, run) + [run.meta.get("mode", SCRATCH), run.meta.get("recipe", recipe_choices()[0])] + [flat[k] for k in KNOBS]


@handler("train_view", turn=False)
def tick(call: Call, ticket=None, follow: bool = True, replay: float = 0):
    """The live views now (the timer's tick)."""
    return draw(call, lookup(call, ticket), None if follow else replay)


@handler("train_view", turn=False)
def show_frame(call: Call, ticket=None, replay: float = 0):
    """The probe matrix and map at a replayed step (and stop following the latest frame)."""
    out = draw(call, lookup(call, ticket), replay)
    return out[3], out[4], False


@handler("train", turn=False)
def run_summary(call: Call, ticket: dict | None = None) -> dict:
    """Where this browser's run stands, as JSON: status, step, frames, the last probe loss and accuracy, evals."""
    runs = train_runs(call.ctx)
    run = lookup(call, ticket)
    view = run.recorder.view()
    last = view.frames[-1] if view.frames else None
    return {"status": run.status, "place": runs.place(run), "step": view.last_step,
            "steps": view.total_steps, "frames": len(view.frames), "frame_steps": [f.step for f in view.frames],
            "probe_loss": last.probe.loss if last else None, "probe_accuracy": last.probe.accuracy if last else None,
            "modality_gap": last.map.gap if last else None, "evals": [{"step": s, **e} for s, e in view.evals],
            "error": run.error, "stop_reason": run.stop_reason}


@handler("train", turn=False)
def stop_run(call: Call, ticket: dict | None = None):
    """Stop this browser's run cleanly (a checkpoint is written; Resume goes on from it)."""
    train_runs(call.ctx).stop(lookup(call, ticket))
    gr.Info("Stopping after the current step (a checkpoint is written).")


@handler("train", turn=False)
def resume_run(call: Call, ticket: dict | None = None):
    """Resume this browser's stopped run from its latest checkpoint."""
    run = lookup(call, ticket)
    train_runs(call.ctx).resume(run)
    return draw(call, run)[:-1]


@handler("train", turn=False)
def use_model(call: Call, ticket: dict | None = None):
    """Make the run's current weights this session's model in every tab (a copy that pruning never deletes)."""
    name = run_weights(call, lookup(call, ticket))
    call.model(name)
    return name, gr.Dropdown(choices=sorted(set(call.ctx.models.choices()) | {name}), value=name), describe_model(call.ctx, name)


def run_weights(call: Call, run) -> str:
    """The model name of the run's weights now: a stable copy (TrainRuns.stable_weights), loadable only under
    a private name that its owner alone is given (ModelCache.add_private)."""
    folder = train_runs(call.ctx).stable_weights(run)
    return call.ctx.models.add_private(private_name(run, folder), folder)


def private_name(run, folder: Path) -> str:
    """The name under which a run's exported weights load: unguessable (derived from the run's secret key),
    with no run id and no server path in it, e.g. 'my run 3f9a2c41d0b7, step 400'."""
    import hashlib

    token = hashlib.sha256(run.key.encode()).hexdigest()[:12]
    return f"my run {token}, step {int(folder.name.rsplit('-', 1)[-1])}"


@handler("train", turn=False)
def download_model(call: Call, ticket: dict | None = None):
    """A zip of the run's current weights as a Hugging Face folder (CLIPModel.from_pretrained opens it)."""
    run = lookup(call, ticket)
    folder = train_runs(call.ctx).current_weights(run)
    # one zip per run at a time, in the scratch area (deleted after upload_ttl_s): repeated clicks cannot fill the disk
    zips = Path(run.meta.get("zip_folder") or scratch_folder("model-zips", call.config.upload_ttl_s))
    run.meta["zip_folder"] = str(zips)
    zips.mkdir(parents=True, exist_ok=True)
    for old in zips.glob("*.zip"):
        old.unlink(missing_ok=True)
    out = zips / f"clip-lab-model-step{run.recorder.view().last_step}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(Path(folder).iterdir()):
            if path.is_file() and path.suffix in (".json", ".safetensors", ".txt"):
                zf.write(path, path.name)
    return gr.File(str(out), visible=True)


@handler("zero_shot", checks={"classnames": at_most_chars("the class names")}, uploads=("image",))
def try_current(call: Call, ticket: dict | None = None, image: str | None = str(EXAMPLE_IMAGE),
                classnames: str | None = "red shape, green shape, blue shape, purple shape"):
    """Zero-shot classify an image with the run's current weights (an image, class names one per line or comma-separated)."""
    if not image:
        raise UserInputError("add an image to classify")
    name = run_weights(call, lookup(call, ticket))
    clip = call.model(name)
    names = parse_classnames(classnames or "")
    if len(names) < 2:
        raise UserInputError("give at least 2 class names, one per line or comma-separated")
    head, _ = call.ctx.services.zero_shot_head(clip, names, ["a photo of a {}."])
    s = score(clip, head, [open_image(image)], ["image"], name, [])
    return render(s, 5, s.model_scale).label


@handler("train", turn=False)
def started(call: Call, ticket=None):
    """After a start: the browser keeps the ticket, and the timer draws the views."""
    return ticket, gr.Timer(active=True)


@handler("train", turn=False)
def timer_on(call: Call):
    return gr.Timer(active=True)


def build_tab(ctx, model_state: gr.State, picker: gr.Dropdown, model_status: gr.Markdown) -> TrainHandles:
    """The Train tab; "Use this model" sets the session's model (`model_state`), the picker and its status line."""
    runs = train_runs(ctx)
    owned = gr.BrowserState({}, storage_key="clip-lab-train-run")
    names = recipe_choices()
    first = knob_values(names[0])
    with gr.Row():
        with gr.Column(scale=1):
            mode = gr.Radio([SCRATCH, FINETUNE], value=SCRATCH, label="Mode", elem_id="tr-mode")
            recipe = gr.Dropdown(names, value=names[0], label="Recipe (assets/recipes/)", elem_id="tr-recipe")
            with gr.Row():
                # no minimum/maximum on the boxes: Gradio would refuse an API call with a bare HTTP 400; the
                # contract's checks (CHECKS) refuse it with a message naming the box and its range
                steps = gr.Number(first[0], label=f"steps (1 to {runs.max_steps:,})", precision=0, elem_id="tr-steps")
                batch = gr.Number(first[1], label="batch size (2 to 512)", precision=0)
                lr = gr.Number(first[2], label="learning rate")
            with gr.Row():
                init_scale = gr.Number(first[3], label="initial logit scale (0: 1/0.07; up to 100)")
                learn_scale = gr.Checkbox(first[4], label="learn the temperature")
            with gr.Row():
                hard = gr.Slider(0, 1, value=first[5], step=0.25, label="hard negatives (share of each batch)")
                group = gr.Slider(0, 2, value=first[6], step=0.25, label="in-group loss weight (teaches shape)")
            with gr.Row():
                loss = gr.Radio(["clip", "siglip"], value=first[7], label="loss (softmax / sigmoid)")
                seed = gr.Number(first[8], label="seed", precision=0)
            with gr.Accordion("fine-tuning data", open=False):
                files = no_example(gr.File(file_count="multiple", file_types=["image"], height=140,
                                           label="image–caption pairs (caption = file name)"))
                dataset = gr.Textbox(label="…or a datasets source (Hub name or allowed folder; image + text columns)")
                with gr.Row():
                    lock_image = gr.Checkbox(True, label="lock the image tower (LiT)")
                    lock_text = gr.Checkbox(False, label="lock the text tower")
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="tr-start")
                stop = gr.Button("Stop", variant="stop", elem_id="tr-stop")
                resume = gr.Button("Resume", elem_id="tr-resume")
            with gr.Row():
                use = gr.Button("Use this model in the other tabs", elem_id="tr-use")
                download = gr.Button("Download (zip)", elem_id="tr-download")
            archive = gr.File(label="model (Hugging Face folder, zipped)", visible=False, elem_id="tr-archive")
        with gr.Column(scale=2):
            status = gr.Markdown("Pick a recipe and press Start.", label="run status", elem_id="tr-status")
            curves = gr.Plot(label="loss, logit scale, learning rate", elem_id="tr-curves")
            accuracy = gr.Plot(label="zero-shot accuracy", elem_id="tr-accuracy")
    with gr.Row():
        follow = gr.Checkbox(True, label="follow the latest frame", elem_id="tr-follow")
        replay = gr.Slider(0, 1, value=0, step=1, label="replay: frame at step", elem_id="tr-replay")
    with gr.Row():
        with gr.Column(scale=1):
            probe = gr.Plot(label="probe matrix (16 fixed pairs)", elem_id="tr-probe")
        with gr.Column(scale=1):
            moving = gr.Plot(label="the moving map (300 fixed pairs)", elem_id="tr-map")
    gap = gr.Plot(label="modality gap", elem_id="tr-gap")
    with gr.Accordion("Try the current weights", open=False):
        with gr.Row():
            try_image = served_example(gr.Image(str(EXAMPLE_IMAGE), type="filepath", label="image", height=160), ctx.config)
            try_names = gr.Textbox("red shape, green shape, blue shape, purple shape", lines=2,
                                   label="class names (one per line, or comma-separated)")
            try_label = gr.Label(label="zero-shot (current weights)", elem_id="tr-try-label")
        try_run = gr.Button("Classify with the current weights")
    summary = gr.JSON(visible=False, label="run summary")
    ticket_box = gr.JSON(visible=False, label="run ticket (id and key: pass it to the other train_* endpoints)")
    timer = gr.Timer(2.0, active=False)
    views = [status, curves, accuracy, probe, moving, gap, replay, timer]

    knob_boxes = [mode, recipe, steps, batch, lr, init_scale, learn_scale, hard, group, loss, seed]

    listen(ctx, recipe.input, recipe_knobs, [recipe], [steps, batch, lr, init_scale, learn_scale, hard, group, loss, seed])
    knob_inputs = [mode, recipe, steps, batch, lr, init_scale, learn_scale, hard, group, loss, seed, files, dataset,
                   lock_image, lock_text, model_state, owned]
    shown = views[:-1]  # the API's outputs: all labelled (the timer and the browser's ticket follow privately)
    control = dict(queue=True, concurrency_id="train_control", concurrency_limit=4)
    begun = listen(ctx, start.click, start_run, knob_inputs, [ticket_box] + shown, api_name="train_start", **control)
    listen(ctx, begun.success, started, [ticket_box], [owned, timer])
    listen(ctx, stop.click, stop_run, [owned], [], api_name="train_stop")
    listen(ctx, gr.Button(visible=False).click, run_summary, [owned], summary, api_name="train_status")  # for scripts
    resumed = listen(ctx, resume.click, resume_run, [owned], shown, api_name="train_resume", **control)
    listen(ctx, resumed.success, timer_on, [], timer)
    viewing = dict(queue=True, concurrency_id="train_view", concurrency_limit=4)
    listen(ctx, timer.tick, tick, [owned, follow, replay], views, **viewing)
    listen(ctx, replay.release, show_frame, [owned, replay], [probe, moving, follow], **viewing)
    listen(ctx, use.click, use_model, [owned], [model_state, picker, model_status], api_name="train_use_model",
           queue=True, concurrency_id="model_load", concurrency_limit=1, show_progress="full")
    listen(ctx, download.click, download_model, [owned], archive, api_name="train_download", **control)
    listen(ctx, try_run.click, try_current, [owned, try_image, try_names], try_label, api_name="train_try")
    listen(ctx, owned.change, reconnect, [owned], views + knob_boxes)
    return TrainHandles(owned, views + knob_boxes)
