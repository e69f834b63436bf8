"""What a stranger on a public Space cannot do: each input bounded before the work it costs, models
checked before they are loaded or downloaded, and one visitor unable to starve the others."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import pytest
from conftest_app import ROOT, make_model_dirs, model_source, running_app, wait_for_status

from core.errors import UserInputError
from core.model import ModelLoadError, create
from demo.inputs.checks import number, text
from demo.platform.config import AppConfig
from demo.platform.guard import client_ip
from demo.platform.models import ModelCache

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

STAR = str(ROOT / "assets/examples/shapes_purple_star.png")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "many", None, 101, 0.5])
def test_numbers_are_checked_before_use(value):
    with pytest.raises(UserInputError, match="top-k must be"):
        number(value, "top-k", 1, 100, integer=True)


def test_text_is_capped_before_parsing_and_numbers_pass_when_sound():
    assert number("7", "n", 1, 10, integer=True) == 7 and math.isclose(number(0.25, "d", 0, 1), 0.25)
    with pytest.raises(UserInputError, match="the class names: 1,000,001 characters; the limit is 100,000"):
        text("x" * 1_000_001, "the class names", 100_000)


def test_the_visitor_is_the_proxy_hop_and_loopback_is_exempt():
    headers = [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9")]  # the client wrote the first hop; the proxy the last
    assert client_ip({"headers": headers, "client": ("10.0.0.1", 1)}) == "203.0.113.9"
    assert client_ip({"headers": [], "client": ("127.0.0.1", 1)}) == ""
    assert client_ip({"headers": [], "client": ("198.51.100.4", 1)}) == "198.51.100.4"


def test_an_address_gets_a_burst_then_a_steady_rate():
    from demo.platform.guard import RateLimiter

    rates = RateLimiter(per_minute=30, burst=8)
    assert all(rates.allow("203.0.113.9", now=0.0) for _ in range(8))  # a burst of 8
    assert not rates.allow("203.0.113.9", now=0.0)  # the ninth at once is refused
    assert rates.allow("198.51.100.1", now=0.0)  # another address is not affected
    assert not rates.allow("203.0.113.9", now=1.0) and rates.allow("203.0.113.9", now=2.1)  # one token per 2 s


def test_hostile_model_folders_are_refused_before_their_weights_load(tmp_path):
    dirs = make_model_dirs(tmp_path, model_source())
    folder = dirs["folder"]
    cfg = AppConfig(default_model=model_source(), model_dirs=[folder.resolve()], max_model_mb=200)
    cache = ModelCache(cfg)
    for name, edit, message in [
        ("huge-image", lambda c: c["vision_config"].update(image_size=8000), "image_size 8000"),
        ("huge-text", lambda c: c["text_config"].update(max_position_embeddings=1_000_000), "text positions"),
    ]:
        target = folder / name
        create("tiny", seed=0).save(target)
        config = json.loads((target / "config.json").read_text())
        edit(config)
        (target / "config.json").write_text(json.dumps(config))
        with pytest.raises(ModelLoadError, match=message):
            cache.get(str(target))
    big = folder / "big-preprocessor"
    create("tiny", seed=0).save(big)
    (big / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 8000}, "crop_size": 8000}))
    with pytest.raises(ModelLoadError, match="over the limit of 1024 pixels"):
        cache.get(str(big))
    small_limit = ModelCache(AppConfig(default_model=model_source(), model_dirs=[folder.resolve()], max_model_mb=10))
    with pytest.raises(ModelLoadError, match="its weights are 16 MB; the limit is 10 MB"):
        small_limit.get(str(dirs["other"]))  # the bundled model, stored in fp16
    empty = folder / "no-real-weights"
    create("tiny", seed=0).save(empty)
    import torch
    from safetensors.torch import save_file

    save_file({"unrelated": torch.zeros(4)}, str(empty / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="do not match its config"):
        cache.get(str(empty))
    with pytest.raises(ModelLoadError, match="too long"):
        cache.get("m" * 300)
    with pytest.raises(ModelLoadError) as err:
        cache.get(str(tmp_path))
    assert str(tmp_path) not in str(err.value).replace(str(tmp_path), "", 1)  # no server folder named but the one asked


def test_the_model_cache_never_holds_more_than_its_limit():
    resident, peak = [], []

    def loader(source):
        peak.append(len(cache.cached()) + 1)  # what is in memory while this one loads
        return object()

    cache = ModelCache(AppConfig(default_model="a/one", max_models=2), loader=loader)
    for name in ("a/one", "b/two", "c/three", "d/four", "a/one"):
        cache.get(name)
        resident.append(len(cache.cached()))
    assert max(peak) <= 2 and max(resident) <= 2


def test_a_comparison_never_evicts_another_sessions_model():
    cache = ModelCache(AppConfig(default_model="a/one", max_models=2, compare_models=2), loader=lambda s: object())
    mine, theirs = cache.get("a/one"), cache.get("b/two")  # two sessions' models fill the main pool
    for pair in (("c/three", "d/four"), ("e/five", "a/one"), ("f/six", "g/seven")):  # comparisons, one after another
        for name in pair:
            cache.get(name, pool="compare")
        assert sorted(cache.cached()) == ["a/one", "b/two"]
        assert len(cache.cached("compare")) <= 2
    assert cache.get("a/one") is mine and cache.get("b/two") is theirs  # never reloaded
    assert cache.get("a/one", pool="compare") is mine  # a comparison shares a model in memory
    cache.get("g/seven")  # a tab asks for a comparison's model: it moves to the main pool
    assert "g/seven" in cache.cached() and "g/seven" not in cache.cached("compare")
    with pytest.raises(ModelLoadError, match="compares only models already in memory"):
        ModelCache(AppConfig(default_model="a/one", compare_models=0), loader=lambda s: object()).get("x/y", pool="compare")


def test_a_public_space_loads_only_the_listed_hub_models(monkeypatch):
    cfg = AppConfig.from_env({"SPACE_ID": "someone/clip-lab"})
    cache = ModelCache(cfg, loader=lambda s: object())
    with pytest.raises(ModelLoadError, match="loads only its listed Hub models"):
        cache.get("someone/whatever-clip")
    assert cache.resolve("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    assert AppConfig.from_env({"SPACE_ID": "x/y", "CLIP_LAB_ALLOW_ANY_HUB_MODEL": "1"}).allow_any_hub_model
    assert AppConfig.from_env({}).allow_any_hub_model  # a machine of your own: any id


def test_a_hub_repo_is_checked_before_anything_is_downloaded(monkeypatch):
    import huggingface_hub

    import core.model as cm

    class Sibling:
        def __init__(self, name, size):
            self.rfilename, self.size = name, size

    class Info:
        siblings = [Sibling("config.json", 500), Sibling("model.safetensors", 5 << 30)]

    downloads = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, files_metadata=False: Info())
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: downloads.append(a) or pytest.fail("downloaded"))

    def fake_snapshot(repo_id, allow_patterns=None, local_files_only=False):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        downloads.append(repo_id)
        pytest.fail("weights downloaded before the size check")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    with pytest.raises(ModelLoadError, match="5,120 MB; the limit is 2,048 MB"):
        cm.load("someone/huge-clip", max_bytes=2048 << 20)
    assert downloads == []


@pytest.mark.parametrize("model_type, refused", [("siglip", None), ("metaclip_2", None), ("clip", None),
                                                  ("bert", "not a model CLIP Lab loads"), ("siglip2", "NaFlex")])
def test_a_hub_repo_of_every_family_passes_the_check_before_download_and_others_are_refused(
        monkeypatch, tmp_path, model_type, refused):
    import json as json_

    import huggingface_hub

    from core.model_limits import check_hub_repo

    class Sibling:
        def __init__(self, name, size):
            self.rfilename, self.size = name, size

    class Info:
        siblings = [Sibling("config.json", 500), Sibling("model.safetensors", 1 << 20)]

    config = tmp_path / "config.json"
    config.write_text(json_.dumps({"model_type": model_type, "vision_config": {"image_size": 224, "patch_size": 16},
                                   "text_config": {"max_position_embeddings": 64}}))
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, files_metadata=False: Info())
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(config))
    if refused is None:
        check_hub_repo("someone/model", 2048 << 20)
    else:
        with pytest.raises(ModelLoadError, match=refused):
            check_hub_repo("someone/model", 2048 << 20)


@pytest.fixture(scope="module")
def url():
    with running_app({"CLIP_LAB_TEST_GATE": "1", "CLIP_LAB_QUEUE_SIZE": "32"}) as u:
        yield u


def _post(url: str, path: str, body: bytes, headers: dict | None = None) -> int:
    request = urllib.request.Request(url + path, body, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_a_big_request_body_is_refused_before_it_is_read(url):
    """The refusal comes from the declared length alone: the 3 MB body is never sent, let alone read."""
    import http.client
    from urllib.parse import urlparse

    where = urlparse(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    conn.putrequest("POST", "/gradio_api/queue/join")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(3 << 20))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and b"the limit is 1,048,576" in response.read()
    conn.close()
    small = json.dumps({"data": ["x"], "fn_index": 10_000, "session_hash": "s"}).encode()
    assert _post(url, "gradio_api/queue/join", small) not in (413, 429)  # a small one reaches Gradio (which judges it)


def test_one_visitor_at_the_cap_cannot_starve_another(url):
    """Visitor A fills its 4 places with held jobs; its fifth is refused; visitor B is served meanwhile."""
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    held = [a.submit(api_name="/test_hold") for _ in range(4)]
    for job in held:
        wait_for_status(job, (Status.PROCESSING, Status.IN_QUEUE))
    with pytest.raises(Exception, match="limit is 4 per visitor|429"):
        a.submit(api_name="/test_hold").result(timeout=60)
    label = b.predict(image=handle_file(STAR), classnames="circle\nstar", templates="a {}.", api_name="/zero_shot")[0]
    assert label["label"] in ("circle", "star")
    assert _post(url, "gradio_api/run/test_release", json.dumps({"data": [4]}).encode()) == 200
    assert [job.result(timeout=60) for job in held] == ["released"] * 4


def test_dataset_images_are_bounded_and_paths_stay_inside_the_allowed_folders(tmp_path, monkeypatch):
    import datasets
    from PIL import Image

    from demo.inputs import pairs as sources

    allowed, outside = tmp_path / "data", tmp_path / "secret"
    allowed.mkdir()
    outside.mkdir()
    inside_png, outside_png = allowed / "in.png", outside / "out.png"
    Image.new("RGB", (30, 30), "red").save(inside_png)
    Image.new("RGB", (30, 30), "blue").save(outside_png)
    for name, path in (("good", inside_png), ("bad", outside_png)):
        features = datasets.Features({"image": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                      "text": datasets.Value("string")})  # a cell that names a file, not embedded
        ds = datasets.Dataset.from_dict({"image": [{"path": str(path), "bytes": None}], "text": ["a square"]}, features)
        ds.save_to_disk(str(allowed / name))
    dirs = [allowed.resolve()]
    pairs = sources.dataset_pairs(str(allowed / "good"), "train", "image", "text", 1, 0, dirs)
    assert pairs.captions == ["a square"] and pairs.images[0].size == (30, 30)
    with pytest.raises(UserInputError, match="outside the allowed data folders"):
        sources.dataset_pairs(str(allowed / "bad"), "train", "image", "text", 1, 0, dirs)
    with pytest.raises(UserInputError, match="over 0 MB in all"):
        sources.dataset_pairs(str(allowed / "good"), "train", "image", "text", 1, 0, dirs, max_bytes=10)
    asked = {}

    def fake_open(source, split, streaming=False):
        asked.update(source=source, streaming=streaming)
        raise UserInputError("stop here")

    monkeypatch.setattr(sources, "open_dataset", fake_open)
    with pytest.raises(UserInputError, match="stop here"):
        sources.dataset_pairs("someone/pairs", "train", "image", "text", 5, 0, dirs)
    assert asked == {"source": "someone/pairs", "streaming": True}  # a Hub dataset is only ever streamed


def test_a_request_that_would_be_refused_never_takes_a_place_in_the_queue(url):
    """Text caps and upload counts are checked as the request joins (Gradio's validator), so even a full
    queue is no excuse for making the user wait to hear 'no'."""
    c = Client(url, verbose=False)
    with pytest.raises(Exception, match="100,000"):
        c.predict(classnames="x" * 200_000, api_name="/zero_shot")
    with pytest.raises(Exception, match="the limit is 64 per request"):
        c.predict(images=[handle_file(STAR)] * 65, api_name="/zero_shot")
    with pytest.raises(Exception, match="the limit is 64 per request"):  # a fine-tune's uploads too
        c.predict(mode="fine-tune the current model", files=[handle_file(STAR)] * 65, api_name="/train_start")


def test_a_cancelled_api_job_stops_its_work(url):
    """gradio_client's job.cancel() reaches the Stop flags too (the guard reads the cancel request)."""
    from demo.inputs.presets import preset_text

    c = Client(url, verbose=False)
    templates = "\n".join(f"a cancelled photo number {i} of a {{}}." for i in range(20))
    job = c.submit(classnames=preset_text("classnames", "ImageNet-1k"), templates=templates, api_name="/zero_shot")
    wait_for_status(job, (Status.PROCESSING, Status.PROGRESS))
    job.cancel()
    # the cancel itself stopped the session's job: a Stop pressed now finds nothing left to stop
    assert c.predict(api_name="/stop_zero_shot") == "stopped 0 job(s)"


def _upload(url: str, path: str, address: str) -> str:
    """POST one file to Gradio's upload route from `address` (X-Forwarded-For); the stored path."""
    import httpx

    with open(path, "rb") as fh:
        r = httpx.post(f"{url}gradio_api/upload", files=[("files", ("mine.png", fh, "image/png"))],
                       headers={"X-Forwarded-For": address}, timeout=30)
    r.raise_for_status()
    return r.json()[0]


def _zero_shot_raw(url: str, path: str, address: str) -> str:
    """Call /zero_shot with a raw server path (as a stranger who learnt it would); the SSE answer's text."""
    import httpx

    file = {"path": path, "meta": {"_type": "gradio.FileData"}}
    headers = {"X-Forwarded-For": address}
    r = httpx.post(f"{url}gradio_api/call/zero_shot", json={"data": [file, None, "circle\nstar", "a {}.", 5, 100, True]},
                   headers=headers, timeout=30)
    r.raise_for_status()
    return httpx.get(f"{url}gradio_api/call/zero_shot/{r.json()['event_id']}", headers=headers, timeout=60).text


def test_an_upload_is_usable_only_from_the_address_that_sent_it(url):
    path = _upload(url, STAR, "203.0.113.7")
    assert "event: complete" in _zero_shot_raw(url, path, "203.0.113.7")
    answer = _zero_shot_raw(url, path, "203.0.113.8")
    assert "event: error" in answer and "uploaded by another visitor" in answer and path not in answer


def test_an_address_may_keep_only_its_allowance_of_uploads():
    from demo.platform.uploads import MB, UploadLedger, OverQuota

    ledger = UploadLedger(ttl_s=60, per_visitor_mb=10, total_mb=15)
    ledger.admit("a", 8 * MB, now=0)
    with pytest.raises(OverQuota, match="the limit is 10 MB per visitor"):
        ledger.admit("a", 3 * MB, now=1)
    ledger.admit("b", 6 * MB, now=2)
    with pytest.raises(OverQuota, match="upload space .* is full"):
        ledger.admit("c", 2 * MB, now=3)
    ledger.admit("a", 9 * MB, now=61)  # the first upload has expired (the app deleted it)
    ledger.record("a", ["/tmp/x/one.png"])
    ledger.check_own("a", ["/tmp/x/one.png", "/elsewhere/never-uploaded.png"])
    ledger.check_own("", ["/tmp/x/one.png"])  # loopback: not checked
    with pytest.raises(UserInputError, match="another visitor"):
        ledger.check_own("b", ["/tmp/x/one.png"])


def _mcp_zero_shot(url: str, headers: dict) -> str:
    """One zero_shot tool call through the mcp package's streamable-HTTP client; its answer's text."""
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def run():
        async with streamablehttp_client(url + "gradio_api/mcp/", headers=headers, timeout=60) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                answer = await session.call_tool("zero_shot", {"classnames": "circle, star", "templates": "a {}."})
                return answer.content[0].text
    return asyncio.run(run())


def test_every_route_that_creates_work_passes_one_gate(url):
    """One address behind the proxy: its places in flight are counted across routes. Held through /call/,
    a fifth request is refused through /call/, /queue/join and MCP alike; with three held, an MCP tool
    call still runs (its own queue join is not counted twice); once the held ones are read out, /call/ serves again."""
    import httpx

    ip = {"X-Forwarded-For": "203.0.113.9"}
    call = url + "gradio_api/call/test_hold"
    held = [httpx.post(call, json={"data": []}, headers=ip, timeout=30) for _ in range(3)]
    assert [r.status_code for r in held] == [200] * 3
    assert "logit_scale" in _mcp_zero_shot(url, ip)  # 3 held + this call = 4: at the cap, not over it
    held.append(httpx.post(call, json={"data": []}, headers=ip, timeout=30))
    assert held[-1].status_code == 200
    assert httpx.post(call, json={"data": []}, headers=ip, timeout=30).status_code == 429
    with pytest.raises(Exception, match="limit is 4 per visitor|429"):
        Client(url, verbose=False, headers=ip).submit(api_name="/test_hold").result(timeout=60)
    tool_call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "zero_shot", "arguments": {}}}
    refused = httpx.post(url + "gradio_api/mcp/", json=tool_call, timeout=30,
                         headers={**ip, "accept": "application/json, text/event-stream"})
    assert refused.status_code == 429 and "limit is 4 per visitor" in refused.text
    assert _post(url, "gradio_api/run/test_release", json.dumps({"data": [4]}).encode()) == 200
    for r in held:  # a /call/ client reads its answer from the event's stream; that ends its count
        answer = httpx.get(f"{call}/{r.json()['event_id']}", headers=ip, timeout=60).text
        assert "event: complete" in answer and "released" in answer
    again = httpx.post(call, json={"data": []}, headers=ip, timeout=30)
    assert again.status_code == 200
    assert _post(url, "gradio_api/run/test_release", json.dumps({"data": [1]}).encode()) == 200
    assert "released" in httpx.get(f"{call}/{again.json()['event_id']}", headers=ip, timeout=60).text


def test_a_streamed_body_over_the_limit_gets_413(url):
    """A chunked body (no Content-Length) that passes 1 MB is refused with 413, on every route, not a 500."""
    import httpx

    def chunks():
        for _ in range(20):
            yield b"x" * (128 << 10)

    for path in ("gradio_api/queue/join", "gradio_api/call/zero_shot", "gradio_api/mcp/", "gradio_api/info"):
        r = httpx.post(url + path, content=chunks(), headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 413 and "over the limit of 1,048,576 bytes" in r.text, (path, r.status_code, r.text[:200])


@pytest.mark.parametrize("api, name, value, says", [
    ("/train_start", "steps", float("nan"), "input 3 (a number) must be a finite number"),
    ("/train_start", "steps", "abc", "input 3 (a number) expects float | None, not a str"),
    ("/zero_shot", "top_k", {"a": 1}, "input 5 (a slider) expects float, not a dict"),
    ("/build_batch", "source", "zzz", "'zzz' is not one of the choices: shapes world, uploaded images, datasets source"),
])
def test_a_value_of_the_wrong_kind_is_refused_in_one_readable_line(url, api, name, value, says):
    """Gradio refuses such values before any handler runs, with a paragraph of internals (component
    lists, Python types, the original exception); the visitor reads one line instead, through /call/."""
    import httpx

    params = httpx.get(url + "gradio_api/info", timeout=30).json()["named_endpoints"][api]["parameters"]
    data = [p.get("parameter_default") for p in params]
    data[[p["parameter_name"] for p in params].index(name)] = value
    r = httpx.post(url + f"gradio_api/call{api}", content=json.dumps({"data": data}),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json() == {"detail": says}, r.text
