"""Shared fixtures (a micro CLIP, random and fast; the bundled model) and the test tiers.

Tiers (markers, pyproject.toml): `pytest` alone runs the fast tier, the unit and logic tests.
`app` tests serve the app (a fixture that starts it: `url`, `client`, `app`, `mcp_url`), `browser`
tests drive it in Chromium (tests/test_browser*.py), `slow` ones take over 10 s on 2 cores (training runs, killed processes, studies).
`bash scripts/test.sh` runs every tier.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.model import Clip, Preset, create  # noqa: E402

# two threads, or one per pytest-xdist worker when scripts/test.sh runs two workers side by side on 2 cores
torch.set_num_threads(1 if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 else max(1, min(2, os.cpu_count() or 1)))

# A CLIP small enough to train a few steps in a second: 32 px images, 2 layers, width 32.
MICRO = Preset(image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=2,
               text_width=32, text_layers=2, text_heads=2, embed_dim=16)


@pytest.fixture(scope="session")
def micro_dir(tmp_path_factory) -> Path:
    """A randomly initialised micro CLIP saved as an ordinary HF checkpoint."""
    path = tmp_path_factory.mktemp("micro") / "model"
    create(MICRO, seed=0).save(path)
    return path


@pytest.fixture()
def micro(micro_dir) -> Clip:
    from core.model import load

    return load(str(micro_dir))


@pytest.fixture(scope="session")
def bundled() -> Clip:
    from core.model import DEFAULT_MODEL, bundled_models, load

    if DEFAULT_MODEL not in bundled_models():
        pytest.fail(f"the bundled model assets/models/{DEFAULT_MODEL} is missing")
    return load(DEFAULT_MODEL)


APP_FIXTURES = {"url", "client", "app", "mcp_url", "siglip_url"}  # fixtures that start the app (tests/conftest_app.running_app)
SLOW = {"test_an_uploaded_image_folder_zip_matches_the_transformers_pipeline", "test_two_gloo_processes_give_the_global_batch_gradients",
        "test_siglip_and_options_train_end_to_end", "test_torchrun_two_cpu_processes_train_and_resume",
        "test_a_run_cut_into_gpu_chunks_ends_with_the_weights_of_an_uninterrupted_run",
        "test_kill_9_at_random_points_then_resume_matches_an_uninterrupted_run", "test_train_cli_on_an_image_folder",
        "test_one_run_at_a_time_others_wait_in_line_and_a_stopped_run_resumes",
        "test_a_run_started_in_the_tab_resumes_with_the_cli", "test_the_cli_embeds_an_image_folder_with_captions",
        "test_two_torchrun_processes_share_the_chunks_and_rank_0_merges", "test_the_gpu_suite_runs_on_the_cpu_at_tiny_sizes",
        "test_ctrl_c_stops_with_a_checkpoint_and_prints_the_resume_command", "test_a_nan_on_one_rank_stops_every_rank_at_that_step"}
SLOW_FILES = {"test_deploy_space.py"}  # builds Space bundles, resolves their requirements, serves one
# the longest files run first, so that two xdist workers (--dist loadfile) do not end on one of them alone
LONGEST_FIRST = ("test_gpu_suite.py", "test_browser_train.py", "test_mcp.py", "test_deploy_space.py")


def pytest_collection_modifyitems(items):
    """Mark each test with its tier: browser (by file), app (by the fixtures that serve the app), slow (by name);
    then put the longest files first (the order inside each file kept)."""
    items.sort(key=lambda item: LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST else len(LONGEST_FIRST))
    for item in items:
        if item.path.name.startswith("test_browser"):
            item.add_marker(pytest.mark.browser)
        elif APP_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in ("test_app_queue.py",):
            item.add_marker(pytest.mark.app)
        if item.originalname in SLOW or item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
