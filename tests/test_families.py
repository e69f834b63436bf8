"""Model families (core.families): each loads, and its zero-shot probabilities are transformers' own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from family_standins import metaclip2_standin, siglip2_standin
from PIL import Image

import core
from core.errors import ModelLoadError, UserInputError
from core.zeroshot import classify

LABELS = ["circle", "star", "square"]
TEMPLATE = "a photo of a {}."


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {"siglip2": siglip2_standin(root / "siglip2"), "metaclip_2": metaclip2_standin(root / "metaclip2")}


def _images(n=3):
    return [Image.fromarray((np.random.RandomState(i).rand(40, 48, 3) * 255).astype("uint8")) for i in range(n)]


@pytest.mark.parametrize("name, rule", [("siglip2", "sigmoid"), ("metaclip_2", "softmax")])
def test_zero_shot_probabilities_are_transformers_pipelines(folders, name, rule):
    """The independent oracle: transformers' zero-shot pipeline on the same folder, labels and template."""
    from transformers import pipeline

    clip = core.load(str(folders[name]))
    assert clip.family.name == name and clip.family.rule == rule
    ours = classify(clip, _images(), LABELS, [TEMPLATE])
    pipe = pipeline("zero-shot-image-classification", model=str(folders[name]), device="cpu")
    for i, image in enumerate(_images()):
        theirs = {o["label"]: o["score"] for o in pipe(image, candidate_labels=LABELS, hypothesis_template=TEMPLATE)}
        np.testing.assert_allclose(ours.probs[i].numpy(), [theirs[c] for c in LABELS], atol=1e-4)
    assert ours.rule == rule


def test_a_sigmoid_model_gets_independent_probabilities_with_its_bias_never_a_softmax(folders):
    clip = core.load(str(folders["siglip2"]))
    assert clip.logit_bias == pytest.approx(-1.5) and clip.logit_scale == pytest.approx(float(np.exp(2.3)), rel=1e-5)
    ours = classify(clip, _images(), LABELS, [TEMPLATE])
    image_emb = core.encode_images(clip, _images())
    text_emb = core.encode_texts(clip, [TEMPLATE.format(c) for c in LABELS])
    logits = clip.logit_scale * image_emb @ text_emb.T
    np.testing.assert_allclose(ours.probs.numpy(), torch.sigmoid(logits + clip.logit_bias).numpy(), atol=1e-6)
    assert not torch.allclose(ours.probs, logits.softmax(-1), atol=1e-3)  # what a softmax would wrongly show
    assert not torch.allclose(ours.probs.sum(1), torch.ones(3), atol=1e-2)  # they need not sum to 1
    assert "need not sum to 1" in clip.family.rule_text()


def test_siglip2_reads_lower_case_as_it_was_trained(folders):
    clip = core.load(str(folders["siglip2"]))
    upper = core.encode_texts(clip, ["A Photo Of A STAR."])
    lower = core.encode_texts(clip, ["a photo of a star."])
    assert torch.allclose(upper, lower)
    meta = core.load(str(folders["metaclip_2"]))  # a cased family keeps the case
    assert not torch.allclose(core.encode_texts(meta, ["A Photo Of A STAR."]), core.encode_texts(meta, ["a photo of a star."]))


def test_the_sigmoid_loss_of_a_batch_is_numpys_with_the_bias_and_the_scale_unclamped():
    from core.loss import similarity

    rng = np.random.default_rng(0)
    img, txt = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    out = similarity(torch.tensor(img), torch.tensor(txt), scale=117.0, bias=-12.5)
    a = img / np.linalg.norm(img, axis=1, keepdims=True)
    b = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    logits = 117.0 * a @ b.T - 12.5  # SigLIP's scale stays above CLIP's clamp of 100
    labels = 2 * np.eye(5) - 1
    expected = np.sum(np.log1p(np.exp(-labels * logits))) / 5  # -log sigmoid(label * logit), summed, over n
    assert float(out.sigmoid_loss) == pytest.approx(expected, rel=1e-5) and out.scale == pytest.approx(117.0)
    assert similarity(torch.tensor(img), torch.tensor(txt), scale=117.0).scale == 100.0  # CLIP's clamp
    assert similarity(torch.tensor(img), torch.tensor(txt), scale=117.0).sigmoid_loss is None


def test_the_matrix_of_a_sigmoid_model_shows_its_loss_beside_clips(folders):
    from demo.inputs.pairs import shapes_pairs
    from demo.tabs.matrix.batch import SIGMOID_VIEW, compute_matrix, new_batch

    clip = core.load(str(folders["siglip2"]))
    result = compute_matrix(clip, new_batch(shapes_pairs(4), "shapes world", 8), "cosine")
    assert result.data["sigmoid_loss"] is not None and result.data["logit_bias"] == pytest.approx(-1.5)
    assert "sigmoid loss" in result.figures_md.lower() and "what CLIP's loss would give" in result.figures_md
    cells = compute_matrix(clip, new_batch(shapes_pairs(4), "shapes world", 8), SIGMOID_VIEW, extra_captions=["a cat"])
    logits = np.array(cells.data["cosine"]) * cells.data["logit_scale"]  # 4 images × 5 captions: not square
    np.testing.assert_allclose(cells.data["values"], 1 / (1 + np.exp(-(logits - 1.5))), atol=1e-5)
    with pytest.raises(UserInputError, match="for sigmoid-trained models"):  # never a sigmoid of CLIP's logits
        compute_matrix(core.load(), new_batch(shapes_pairs(4), "shapes world", 8), SIGMOID_VIEW)


def test_unsupported_checkpoints_are_refused_with_what_is_supported(folders, tmp_path):
    naflex = tmp_path / "naflex"
    naflex.mkdir()
    (naflex / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    with pytest.raises(ModelLoadError, match="NaFlex.*fixed-resolution"):
        core.load(str(naflex))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="CLIP, SigLIP, SigLIP 2 .* MetaCLIP 2"):
        core.load(str(bert))


@pytest.fixture(scope="module")
def siglip_url(folders):
    from conftest_app import running_app

    env = {"CLIP_LAB_MODEL_DIRS": str(folders["siglip2"].parent), "CLIP_LAB_MODEL": str(folders["siglip2"])}
    with running_app(env) as url:  # the SigLIP 2 stand-in is the app's default model
        yield url


def test_the_zero_shot_tab_shows_a_sigmoid_models_own_rule_and_numbers(siglip_url, folders):
    """Through the app's API: the probabilities are the pipeline's, the rule and bias are in the JSON, and the
    text on screen says the probabilities are independent."""
    from gradio_client import Client, handle_file
    from transformers import pipeline

    image = folders["siglip2"].parent / "one.png"
    _images(1)[0].save(image)
    client = Client(siglip_url, verbose=False)
    out = client.predict(image=handle_file(str(image)), classnames="\n".join(LABELS), templates=TEMPLATE,
                         api_name="/zero_shot")
    data = next(o for o in out if isinstance(o, dict) and "probability_rule" in o)
    info = next(o for o in out if isinstance(o, str) and "Logit scale" in o)
    assert data["probability_rule"] == "sigmoid" and data["logit_bias"] == pytest.approx(-1.5)
    assert "need not sum to 1" in info and "e⁵" not in info  # no softmax odds for a sigmoid model
    first = data["per_template_first_image"][0]["classes"][LABELS[0]]
    assert first["logit"] == pytest.approx(data["logit_scale"] * first["cosine"] - 1.5, abs=1e-4)  # the bias included
    pipe = pipeline("zero-shot-image-classification", model=str(folders["siglip2"]), device="cpu")
    theirs = {o["label"]: o["score"] for o in pipe(Image.open(image), candidate_labels=LABELS, hypothesis_template=TEMPLATE)}
    ours = {c["class"]: c["probability"] for c in data["images"][0]["top_k"]}
    for label in LABELS:
        assert ours[label] == pytest.approx(theirs[label], abs=1e-4)
    receipt = data["receipt"]  # what made these numbers travels with them
    assert receipt["family"] == "SigLIP 2" and receipt["probability_rule"] == "sigmoid"
    assert receipt["logit_bias"] == pytest.approx(-1.5) and receipt["templates"] == [TEMPLATE]
    assert receipt["tokenizer"]["lowercase"] and receipt["image_processor"]["size"] == {"height": 32, "width": 32}
    assert receipt["libraries"]["transformers"] and len(receipt["weights_revision"]) == 16
    saw = next(o for o in out if isinstance(o, str) and "as the text tower got them" in o)
    assert "lower-cased first" in saw and "max_length 64" in saw and "No known pitfall" in saw


def test_evaluates_confidences_follow_the_families_rule_and_its_accuracy_does_not_depend_on_it():
    """Evaluate's per-image confidences (its tables and CSVs) are sigmoid(scale · cos + b) for a sigmoid model;
    its accuracy ranks the classes, the same under either rule."""
    import torch.nn.functional as F

    from demo.tabs.evaluate.study import evaluate

    class Encoded:  # an encoded labelled set: 12 images of 3 classes
        image_emb = F.normalize(torch.randn(12, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
        caption_emb, names, thumbs, description = None, [f"#{i}" for i in range(12)], [b""] * 12, "test set"

        def task(self, label):
            return "shape", LABELS, [i % 3 for i in range(12)]

    templates = F.normalize(torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1)), dim=-1).numpy()  # [T, C, D]
    args = (Encoded(), "shape", LABELS, templates, ["a {}.", "the {}."], 117.0, "m")
    soft = evaluate(*args, select=False, probe=False)
    sig = evaluate(*args, select=False, probe=False, logit_bias=-12.5, rule="sigmoid")
    head = F.normalize(torch.from_numpy(templates).mean(0), dim=-1)
    logits = 117.0 * Encoded.image_emb @ head.T
    expected = torch.sigmoid(logits - 12.5)[torch.arange(12), torch.as_tensor(sig.pred)].numpy()
    np.testing.assert_allclose(sig.p_pred, expected, atol=1e-6)
    assert (sig.pred == soft.pred).all() and sig.metrics["top1"] == soft.metrics["top1"]
    assert not np.allclose(sig.p_pred, soft.p_pred, atol=1e-3)


def test_the_comparison_shows_each_model_under_its_own_rule_and_flags_a_softmax_over_sigmoid(siglip_url, folders):
    """Through the app's API: SigLIP 2 beside MetaCLIP 2, each model's probabilities are the pipeline's on that
    model; one softmax for both is flagged on the SigLIP side and makes its probabilities sum to 1."""
    from gradio_client import Client, handle_file
    from transformers import pipeline

    paths = []
    for i, im in enumerate(_images(3)):
        paths.append(folders["siglip2"].parent / f"cmp{i}.png")
        im.save(paths[-1])
    client = Client(siglip_url, verbose=False)
    ask = dict(image=handle_file(str(paths[0])), images=[handle_file(str(p)) for p in paths[1:]],
               classnames="\n".join(LABELS), templates=TEMPLATE, model_a=str(folders["siglip2"]),
               model_b=str(folders["metaclip_2"]), api_name="/compare_models")
    summary, _, per_image, _, saw_a, saw_b, data = client.predict(**ask)
    a, b = data["models"]
    assert (a["probability_rule"], b["probability_rule"]) == ("sigmoid", "softmax")
    assert a["receipt"]["family"] == "SigLIP 2" and b["receipt"]["family"] == "MetaCLIP 2"
    for side, name in ((a, "siglip2"), (b, "metaclip_2")):
        pipe = pipeline("zero-shot-image-classification", model=str(folders[name]), device="cpu")
        for path, answer in zip(paths, side["images"]):
            theirs = {o["label"]: o["score"] for o in pipe(Image.open(path), candidate_labels=LABELS,
                                                             hypothesis_template=TEMPLATE)}
            for label in LABELS:
                assert answer["probabilities"][label] == pytest.approx(theirs[label], abs=1e-4)
        assert side["pitfalls"] == [] and side["seconds"] > 0
    tops = [(max(x["probabilities"], key=x["probabilities"].get), max(y["probabilities"], key=y["probabilities"].get))
            for x, y in zip(a["images"], b["images"])]
    assert data["top1_agreement"] == pytest.approx(sum(p == q for p, q in tops) / 3)
    assert [row[-1] == "✓" for row in per_image["data"]] == [p == q for p, q in tops]
    assert "Top-1 agreement" in summary and "need not sum to 1" in summary and "No known pitfall" in saw_a
    *_, saw_a, saw_b, wrong = client.predict(**{**ask, "rule": "softmax for both"})
    assert [p["code"] for p in wrong["models"][0]["pitfalls"]] == ["softmax_over_sigmoid"]
    assert wrong["models"][1]["pitfalls"] == [] and "softmax_over_sigmoid" in saw_a
    assert sum(wrong["models"][0]["images"][0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(Exception, match="same model"):
        client.predict(**{**ask, "model_b": str(folders["siglip2"])})


def test_the_comparison_answers_an_mcp_client_with_the_apis_numbers(siglip_url, folders):
    from test_mcp import call_tools

    from gradio_client import Client

    args = {"classnames": "\n".join(LABELS), "templates": TEMPLATE, "model_a": str(folders["metaclip_2"]),
            "model_b": str(folders["siglip2"])}
    _, answers = call_tools(siglip_url, {"compare_models": args})
    assert not answers["compare_models"].isError, answers["compare_models"].content
    mine = json.loads(answers["compare_models"].content[0].text)
    theirs = Client(siglip_url, verbose=False).predict(**args, api_name="/compare_models")[-1]
    for m, t in zip(mine["models"], theirs["models"]):
        assert m["images"] == t["images"] and m["probability_rule"] == t["probability_rule"]


def test_in_the_browser_a_comparison_commits_model_b_with_enter_and_flags_a_wrong_rule(siglip_url, folders):
    """As a visitor: open Compare, type model B and press Enter, Compare; then one softmax for both is
    flagged on the SigLIP side, and the chart's title says the rule is not each model's own."""
    from conftest_app import launch_chromium
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(siglip_url)
        page.get_by_role("tab", name="Compare models").click()
        a = page.locator("#cmp-a input")
        a.wait_for()
        page.wait_for_function("() => document.querySelector('#cmp-a input').value.length > 0")  # filled on load
        b = page.locator("#cmp-b input")
        b.click()
        b.fill(str(folders["metaclip_2"]))
        b.press("Enter")
        page.locator("#cmp-run").click()
        summary = page.locator("#cmp-summary")
        summary.get_by_text("Top-1 agreement").wait_for()
        assert "SigLIP 2" in summary.inner_text() and "MetaCLIP 2" in summary.inner_text()
        page.get_by_text("softmax for both").click()
        page.locator("#cmp-run").click()
        summary.get_by_text("softmax_over_sigmoid").wait_for()
        # the chart is drawn after the summary: wait for its title rather than read it at once
        page.wait_for_function("() => document.querySelector('#cmp-plot').innerText.includes(\"not each model's own rule\")")
        assert "softmax_over_sigmoid" in page.locator("#cmp-saw-a").inner_text()
        browser.close()
