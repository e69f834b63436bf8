"""The one loader: bundled names, local HF dirs, Hub ids (through a local cache), and its refusals."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import CLIPModel

from core.encode import encode_texts
from core.model import PRESETS, ModelLoadError, create, load

ROOT = Path(__file__).resolve().parents[1]


def test_presets_match_the_paper_for_base():
    base = PRESETS["base"].to_config()
    v, t = base.vision_config, base.text_config
    assert (v.num_hidden_layers, v.hidden_size, v.patch_size, v.image_size) == (12, 768, 32, 224)
    assert (t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.max_position_embeddings) == (12, 512, 8, 77)
    assert base.projection_dim == 512


def test_checkpoint_is_an_ordinary_hf_checkpoint(micro_dir, micro):
    plain = CLIPModel.from_pretrained(micro_dir)  # transformers alone opens it
    ours = micro.model
    for (k, a), (_, b) in zip(plain.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), k
    assert any(micro_dir.glob("*.safetensors")) and not any(micro_dir.glob("*.bin"))


def test_local_dir_refusals(tmp_path, micro_dir):
    with pytest.raises(ModelLoadError, match="no such model directory"):
        load(str(tmp_path / "nope"))
    no_weights = tmp_path / "no_weights"
    shutil.copytree(micro_dir, no_weights)
    for f in no_weights.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))  # a pickle-format name: must never be opened
    with pytest.raises(ModelLoadError, match="safetensors"):
        load(str(no_weights))
    not_clip = tmp_path / "bert"
    not_clip.mkdir()
    (not_clip / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="not a model CLIP Lab loads"):
        load(str(not_clip))
    with pytest.raises(ModelLoadError, match="neither a bundled model"):
        load("no such thing!")


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_hub_id_loads_from_the_hub_cache_offline(tmp_path, micro_dir):
    """The real Hub code path: snapshot_download resolves 'org/name' in an HF cache, offline."""
    cache = tmp_path / "hub"
    snap = cache / "models--clip-lab--micro" / "snapshots" / ("0" * 40)
    shutil.copytree(micro_dir, snap)
    (cache / "models--clip-lab--micro" / "refs").mkdir()
    (cache / "models--clip-lab--micro" / "refs" / "main").write_text("0" * 40)
    code = ("import core; c = core.load('clip-lab/micro'); e = core.encode_texts(c, ['a cat']);"
            "print(c.source, tuple(e.shape))")
    out = _run(code, {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert "clip-lab/micro (1, 16)" in out.stdout


def test_uncached_hub_id_offline_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "scripts/evaluate.py", "--model", "openai/clip-vit-base-patch32", "--n", "4"],
                         cwd=ROOT, env={**os.environ, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "not in the local Hugging Face cache" in lines[0] and "HF_HUB_OFFLINE" in lines[0]


def test_save_is_atomic_and_overwrites(tmp_path, micro):
    target = tmp_path / "m"
    micro.save(target)
    micro.save(target)  # replacing an existing checkpoint leaves exactly one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    again = load(str(target))
    torch.testing.assert_close(encode_texts(again, ["a red star"]), encode_texts(micro, ["a red star"]))


def test_unknown_preset():
    with pytest.raises(ModelLoadError, match="unknown preset"):
        create("huge")


class _WritesSentinel:
    """A pickle payload: unpickling it would create a file. Loading must never get that far."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_malicious_pickle_checkpoint_is_refused_unopened(tmp_path, micro_dir):
    import pickle

    sentinel = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text((micro_dir / "config.json").read_text())
    for name in ("pytorch_model.bin", "model.ckpt", "model.pt"):
        (evil / name).write_bytes(pickle.dumps(_WritesSentinel(str(sentinel))))
    with pytest.raises(ModelLoadError, match="safetensors"):
        load(str(evil))
    assert not sentinel.exists()


def test_traversal_and_outside_paths_are_refused_before_opening(tmp_path, micro_dir, monkeypatch):
    from demo.platform.config import AppConfig
    from demo.platform.models import ModelCache

    allowed = tmp_path / "models"
    allowed.mkdir()
    opened = []
    cache = ModelCache(AppConfig(model_dirs=[allowed]), loader=lambda src: opened.append(src))
    for name in (str(allowed / ".." / micro_dir.parent.name), f"{allowed}/../../etc", str(micro_dir), "/etc/passwd"):
        with pytest.raises(ModelLoadError, match="allowed folders"):
            cache.get(name)
    assert opened == []


def test_a_half_precision_export_keeps_the_logit_scale_at_most_100(tmp_path):
    """ln 100 rounds up in fp16; the exported checkpoint must still give exp(t) <= 100 to any reader."""
    import math

    import torch
    from transformers import CLIPModel

    from core.model import create, save_pretrained_atomic

    clip = create("tiny", seed=0)
    with torch.no_grad():
        clip.model.logit_scale.fill_(math.log(100.0))
    save_pretrained_atomic(clip, tmp_path / "fp16", dtype=torch.float16)
    for folder in (tmp_path / "fp16", Path(__file__).resolve().parents[1] / "assets/models/shapes-tiny"):
        raw = CLIPModel.from_pretrained(folder).logit_scale.float().exp().item()
        assert 99.0 < raw <= 100.0, (folder, raw)
