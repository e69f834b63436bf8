"""benchmarks/space_latency.py's stand-in checkpoint: a Hub cache layout that core.load finds offline.

Built here with the `tiny` preset (the benchmark uses `base`, ViT-B/32); same layout, same code.
"""

from pathlib import Path

import huggingface_hub.constants as hub_constants

from benchmarks.standin import HUB_ID, build_standin, check_standin, standin_revision
from core.model import weights_revision


def test_core_load_finds_the_standin_offline(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    snapshot = build_standin(hub, "tiny")
    repo = hub / "models--openai--clip-vit-base-patch32"
    assert snapshot == repo / "snapshots" / standin_revision("tiny")
    assert (repo / "refs" / "main").read_text() == snapshot.name and len(snapshot.name) == 40
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in snapshot.iterdir()}
    # huggingface_hub reads these once, at import: patch its constants as well as the environment
    for name, value in (("HF_HUB_CACHE", str(hub)), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    found = check_standin(snapshot, "tiny")  # asserts the config, the tokenizer's known ids, the snapshot
    clip = found["clip"]
    assert clip.source == HUB_ID
    assert clip.revision == weights_revision(Path(snapshot))
    assert clip.model.config.text_config.hidden_act == "quick_gelu"
