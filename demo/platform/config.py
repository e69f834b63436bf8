"""The app's configuration: every setting and limit in one `AppConfig`, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.model import DEFAULT_MODEL, MODELS_DIR
from demo.platform.disk_cache import default_cache_dir

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "assets" / "examples"
RUNS_DIR = ROOT / "runs"  # scripts/train.py's default output folder: models trained here can be picked
HUB_MODELS = ("openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
              "google/siglip2-base-patch16-224")  # a sigmoid family beside CLIP; preloaded on a Space


def _split_dirs(value: str) -> list[Path]:
    return [Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p.strip()]
TRAIN_CHUNK_SECONDS = 40.0  # on ZeroGPU: the Train tab's GPU calls train this long each (demo/tabs/train/gpu_chunks.py)
QUICK_SLOTS = 2  # requests running beside the heavy ones (see AppConfig.inference_slots)


@dataclass
class AppConfig:
    """Settings read once at start-up (environment variables in brackets).

    default_model: the model every new session starts on [CLIP_LAB_MODEL], a bundled name or path.
    model_dirs: folders whose sub-folders may be loaded as local models [CLIP_LAB_MODEL_DIRS].
    data_dirs: folders whose sub-folders may be opened as local `datasets` sources [CLIP_LAB_DATA_DIRS].
    warm_umap: warm up at start: the default model, UMAP's kernels, the default map set [CLIP_LAB_WARMUP].
    warmup_delay: the map part of the warm-up waits for the first zero-shot answer, or this many
        seconds at most, so that it does not compete with that answer [CLIP_LAB_WARMUP_DELAY].
    server_name: the address `python app.py` binds [GRADIO_SERVER_NAME]: 127.0.0.1 (this machine
        only) by default, 0.0.0.0 on a Hugging Face Space (SPACE_ID set).
    queue_size, concurrency: requests waiting at most, and running at once per group
        [CLIP_LAB_QUEUE_SIZE, CLIP_LAB_CONCURRENCY].
    The other fields are the limits on memory and inputs (docs/app.md lists them).
    """

    default_model: str = DEFAULT_MODEL
    model_dirs: list[Path] = field(default_factory=lambda: [MODELS_DIR.resolve(), RUNS_DIR])
    data_dirs: list[Path] = field(default_factory=list)
    hub_models: tuple[str, ...] = HUB_MODELS
    # memory: models in memory, bytes of zero-shot heads and of encoded sets, opened datasets
    max_models: int = 2
    # the comparison view's own pool: models it loads go here, so a comparison never evicts a model another
    # session uses from the `max_models` above (it shares those when they are in memory) [CLIP_LAB_COMPARE_MODELS]
    compare_models: int = 2
    # what heavy work leaves in memory afterwards is bounded by these two [CLIP_LAB_HEAD_CACHE_MB, CLIP_LAB_SET_CACHE_MB]
    head_cache_mb: int = 256
    set_cache_mb: int = 256
    max_datasets: int = 4
    cache_dir: Path | None = None  # the disk cache of heads [CLIP_LAB_CACHE_DIR; from_env: see demo.platform.disk_cache]
    disk_cache_mb: int = 2048
    heavy_prompts: int = 2000  # head builds with more prompts share the `concurrency` heavy slots
    heavy_wait_s: float = 0.5  # a big request waits this long for a heavy slot, then is told the server is busy
    # heavy work and training run on threads at this nice value, so that the kernel gives quick requests the
    # cores first (demo/platform/low_priority.py); 0 runs them at the normal priority [CLIP_LAB_HEAVY_NICE]
    heavy_nice: int = 10
    upload_ttl_s: int = 3600  # uploads are deleted this long after they arrive [CLIP_LAB_UPLOAD_TTL_S]
    # inputs
    max_file_size: str = "10mb"
    max_upload_images: int = 64
    max_image_pixels: int = 40_000_000
    max_prompts: int = 20_000  # class names x templates encoded for one zero-shot head
    max_matrix_pairs: int = 32
    max_extra_captions: int = 16
    min_map_pairs: int = 200
    max_map_pairs: int = 5000
    max_map_class_prompts: int = 200
    max_explore_rows: int = 200_000  # rows of an embedding set the map's explorer opens [CLIP_LAB_MAX_EXPLORE_ROWS]
    max_text_chars: int = 100_000  # one text box (class names, templates, captions), checked before parsing
    max_request_kb: int = 1024  # one request body (uploads aside), refused before it is read
    max_upload_request_mb: int = 128  # one upload request (each file is also capped by max_file_size)
    upload_mb_per_visitor: int = 256  # bytes one address may upload within upload_ttl_s (demo/platform/uploads.py) ...
    upload_total_mb: int = 4096  # ... and all addresses together; loopback clients are not counted
    max_in_flight_per_visitor: int = 4  # requests one visitor (session or IP) may have waiting or running
    rate_per_minute: int = 30  # queued requests one address may start a minute (a person clicks far less) ...
    rate_burst: int = 8  # ... and at once; this machine's own clients (loopback, no proxy) are not counted
    time_limit_s: int = 600  # a request that runs longer is stopped like a Stop press
    # the Train tab: runs training at once [CLIP_LAB_MAX_RUNS] (others wait in line), steps and
    # minutes per run at most, and minutes a run goes on once nobody watches it
    max_runs: int = 1
    runs_dir: Path = RUNS_DIR  # where the tab's runs go (runs/app-<id>) [CLIP_LAB_RUNS_DIR]; their models can be picked
    max_train_steps: int = 5000
    max_train_minutes: float = 30.0
    runs_disk_mb: int = 4096  # the Train tab's run folders together; ended runs go, oldest first [CLIP_LAB_RUNS_DISK_MB]
    # on a CPU (not ZeroGPU): a run's parameters × batch size at most this (tiny × 512, small × 256 and a
    # ViT-B/32 fine-tune × 64 fit; base-gpu's 151 M × 512 does not) [CLIP_LAB_CPU_TRAIN_BUDGET]
    cpu_train_budget: float = 10e9
    train_idle_minutes: float = 5.0
    # train in GPU calls of train_chunk_s seconds each (demo/tabs/train/gpu_chunks.py): on by itself on ZeroGPU,
    # where a GPU is lent per call [CLIP_LAB_TRAIN_CHUNK_S: a number turns it on anywhere, 0 off]
    train_chunk_s: float = 0.0
    # Hub models: the listed ones (hub_models, CLIP_LAB_HUB_MODELS) always; any other id only when
    # allowed (CLIP_LAB_ALLOW_ANY_HUB_MODEL; off on a Space by default), and never over max_model_mb
    allow_any_hub_model: bool = True
    max_model_mb: int = 2048
    # where models run: "auto" (CUDA when there is one, else the CPU), "cpu", "cuda", "cuda:1", …
    device: str = "auto"
    # what the towers run in [CLIP_LAB_PRECISION]: "auto" (bf16 on a CUDA device for each model whose bf16
    # copy gives the same answers on a probe, core.precision; float32 on a CPU and on ZeroGPU, which lends its
    # GPU only inside requests), "fp32", or "bf16" / "fp16" (checked where a GPU is at hand, never refused)
    precision: str = "auto"
    preload: tuple[str, ...] = ()  # models loaded at start besides the default (CLIP_LAB_PRELOAD, comma-separated)
    # serving
    server_name: str = "127.0.0.1"
    # where a client reaches the app: the API page's example files point here, so its snippets run as
    # pasted [https://$SPACE_HOST on a Space, else http://127.0.0.1:$GRADIO_SERVER_PORT]
    public_url: str = "http://127.0.0.1:7860"
    queue_size: int = 128  # each visitor holds at most max_in_flight_per_visitor of these places
    concurrency: int = 2
    warm_umap: bool = True
    warmup_delay: float = 5.0
    # Gradio's run history keeps each call's inputs and outputs (file names, typed class names, results)
    # in the browser's localStorage, where the next person at a shared computer sees them: off unless
    # the operator turns it on [CLIP_LAB_RUN_HISTORY=1]
    run_history: bool = False
    test_gate: bool = False  # tests only: a hidden /test_hold endpoint that waits on a server-side gate

    def inference_slots(self) -> int:
        """Requests running at once (demo/platform/fair.py's scheduler, shared by every tab): the `concurrency`
        heavy slots plus QUICK_SLOTS for quick requests (a cached head, a view change), so that big
        head builds, which hold a slot for their whole run, never leave quick requests waiting behind them."""
        return self.concurrency + QUICK_SLOTS

    def inference_threads(self) -> int:
        """Requests of the 'inference' group that Gradio's first-in-first-out queue lets through at
        once: enough for 8 visitors at the per-visitor cap, so that they wait in the fair scheduler
        (which picks the least-served visitor) rather than in Gradio's line."""
        return max(self.inference_slots(), 8 * self.max_in_flight_per_visitor)

    def torch_device(self) -> str:
        """The device models are loaded on: `device`, with "auto" meaning CUDA when torch sees one."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @classmethod
    def from_env(cls, env: dict | None = None) -> "AppConfig":
        """The configuration from environment variables (os.environ by default)."""
        env = os.environ if env is None else env
        cfg = cls(default_model=env.get("CLIP_LAB_MODEL", DEFAULT_MODEL))
        cfg.model_dirs += _split_dirs(env.get("CLIP_LAB_MODEL_DIRS", ""))
        cfg.data_dirs += _split_dirs(env.get("CLIP_LAB_DATA_DIRS", ""))
        cfg.warm_umap = env.get("CLIP_LAB_WARMUP", "1") not in ("0", "false", "no")
        cfg.warmup_delay = max(0.0, float(env.get("CLIP_LAB_WARMUP_DELAY", cfg.warmup_delay)))
        cfg.server_name = env.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if env.get("SPACE_ID") else cfg.server_name)
        cfg.public_url = (f"https://{env['SPACE_HOST']}" if env.get("SPACE_HOST")
                          else f"http://127.0.0.1:{env.get('GRADIO_SERVER_PORT') or 7860}")
        cfg.test_gate = env.get("CLIP_LAB_TEST_GATE", "") == "1"
        cfg.run_history = env.get("CLIP_LAB_RUN_HISTORY", "0").lower() in ("1", "true", "yes")
        cfg.device = env.get("CLIP_LAB_DEVICE", cfg.device).strip() or "auto"
        cfg.precision = env.get("CLIP_LAB_PRECISION", cfg.precision).strip().lower() or "auto"
        from core.precision import POLICIES

        if cfg.precision not in POLICIES:
            raise ValueError(f"CLIP_LAB_PRECISION must be one of {', '.join(POLICIES)}, not {cfg.precision!r}")
        for name, attr in (("CLIP_LAB_MAX_RUNS", "max_runs"), ("CLIP_LAB_MAX_TRAIN_STEPS", "max_train_steps"),
                           ("CLIP_LAB_MAX_EXPLORE_ROWS", "max_explore_rows")):
            if env.get(name):
                setattr(cfg, attr, max(1, int(env[name])))
        if env.get("CLIP_LAB_RUNS_DIR"):
            cfg.runs_dir = Path(env["CLIP_LAB_RUNS_DIR"]).expanduser().resolve()
            cfg.model_dirs.append(cfg.runs_dir)
        if env.get("CLIP_LAB_RUNS_DISK_MB"):
            cfg.runs_disk_mb = max(64, int(env["CLIP_LAB_RUNS_DISK_MB"]))
        if env.get("CLIP_LAB_CPU_TRAIN_BUDGET"):
            cfg.cpu_train_budget = max(1e6, float(env["CLIP_LAB_CPU_TRAIN_BUDGET"]))
        if env.get("CLIP_LAB_MAX_TRAIN_MINUTES"):
            cfg.max_train_minutes = max(0.1, float(env["CLIP_LAB_MAX_TRAIN_MINUTES"]))
        from demo.platform.gpu import ZERO_GPU

        cfg.train_chunk_s = max(0.0, float(env.get("CLIP_LAB_TRAIN_CHUNK_S", TRAIN_CHUNK_SECONDS if ZERO_GPU else 0)))
        if env.get("CLIP_LAB_UPLOAD_TTL_S"):
            cfg.upload_ttl_s = max(10, int(env["CLIP_LAB_UPLOAD_TTL_S"]))
        any_hub = env.get("CLIP_LAB_ALLOW_ANY_HUB_MODEL", "0" if env.get("SPACE_ID") else "1")
        cfg.allow_any_hub_model = any_hub.lower() in ("1", "true", "yes")
        if env.get("CLIP_LAB_HUB_MODELS"):
            cfg.hub_models = tuple(m.strip() for m in env["CLIP_LAB_HUB_MODELS"].split(",") if m.strip())
        cfg.cache_dir = None if env.get("CLIP_LAB_CACHE_DIR") == "off" else default_cache_dir(env)
        cfg.preload = tuple(n.strip() for n in env.get("CLIP_LAB_PRELOAD", "").split(",") if n.strip())
        for name, attr in (("CLIP_LAB_HEAD_CACHE_MB", "head_cache_mb"), ("CLIP_LAB_SET_CACHE_MB", "set_cache_mb")):
            if env.get(name):
                setattr(cfg, attr, max(16, int(env[name])))
        if env.get("CLIP_LAB_COMPARE_MODELS"):
            cfg.compare_models = max(0, int(env["CLIP_LAB_COMPARE_MODELS"]))
        if env.get("CLIP_LAB_HEAVY_NICE"):
            cfg.heavy_nice = min(19, max(0, int(env["CLIP_LAB_HEAVY_NICE"])))
        for name, attr in (("CLIP_LAB_QUEUE_SIZE", "queue_size"), ("CLIP_LAB_CONCURRENCY", "concurrency")):
            if env.get(name):
                try:
                    value = int(env[name])
                except ValueError as e:
                    raise ValueError(f"{name} must be a whole number, got {env[name]!r}") from e
                if value < 1:
                    raise ValueError(f"{name} must be at least 1, got {value}")
                setattr(cfg, attr, value)
        return cfg
