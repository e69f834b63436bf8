"""Zero-shot: the template ensemble against a hand computation, caching, parsing."""

import pytest
import torch
import torch.nn.functional as F

from core.encode import encode_images, encode_texts
from core.errors import UserInputError
from core.shapes import ShapesWorld
from core.zeroshot import (
    build_classifier,
    classify,
    classname_presets,
    parse_classnames,
    parse_templates,
    per_template_probs,
    template_presets,
)


def test_ensemble_is_renormalised_mean_of_normalised_template_embeddings(micro):
    classes, templates = ["circle", "red star"], ["a photo of a {}.", "a drawing of a {}.", "{} art"]
    head = build_classifier(micro, classes, templates)
    assert head.shape == (2, micro.embed_dim)
    for c, name in enumerate(classes):
        # by hand: encode each prompt alone, normalise, average, normalise again
        rows = [F.normalize(encode_texts(micro, [t.replace("{}", name)])[0], dim=0) for t in templates]
        expected = F.normalize(torch.stack(rows).mean(0), dim=0)
        torch.testing.assert_close(head[c], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(head.norm(dim=1), torch.ones(2))


def test_classify_probabilities_and_top_k(micro):
    images = [s.image for s in ShapesWorld(seed=3).take(3)]
    classes = ["circle", "square", "star"]
    pred = classify(micro, images, classes, ["a photo of a {}."])
    assert pred.probs.shape == (3, 3)
    torch.testing.assert_close(pred.probs.sum(1), torch.ones(3))
    # by hand: softmax(scale * img @ head.T)
    img = encode_images(micro, images)
    expected = (micro.logit_scale * img @ build_classifier(micro, classes, ["a photo of a {}."]).T).softmax(1)
    torch.testing.assert_close(pred.probs, expected, atol=1e-6, rtol=1e-5)
    top = pred.top_k(2)
    assert len(top) == 3 and len(top[0]) == 2 and top[0][0][1] >= top[0][1][1]
    assert pred.top_k(10)[0].__len__() == 3  # k is capped at the number of classes


def test_a_head_follows_weight_updates(micro_dir):
    """build_classifier is pure: after an optimizer step it gives the new weights' head (training-time evals)."""
    from core.model import load

    clip, classes, templates = load(str(micro_dir)), ["red star", "blue circle"], ["a photo of a {}."]
    before = build_classifier(clip, classes, templates)
    opt = torch.optim.SGD(clip.model.text_model.parameters(), lr=1.0)
    clip.model.text_model.zero_grad()
    encode = clip.model.get_text_features(**clip.tokenizer(["red star"], return_tensors="pt"))
    (encode if isinstance(encode, torch.Tensor) else encode.pooler_output).sum().backward()
    opt.step()
    after = build_classifier(clip, classes, templates)
    assert not torch.allclose(before, after)
    fresh = load(str(micro_dir))
    fresh.model.load_state_dict(clip.model.state_dict())
    torch.testing.assert_close(after, build_classifier(fresh, classes, templates))


def test_per_template_probs_shape(micro):
    img = encode_images(micro, [ShapesWorld().take(1)[0].image])
    p = per_template_probs(micro, img, ["x", "y"], ["{}", "a {}"])
    assert p.shape == (2, 1, 2)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 1))


def test_parse_classnames():
    assert parse_classnames("cat, dog,  cat ,") == ["cat", "dog"]
    assert parse_classnames("red star\nblue, circle\n\n") == ["red star", "blue, circle"]
    assert parse_classnames("ca\u200bt\x00") == ["cat"]
    assert parse_classnames("猫, 🐱, قطة") == ["猫", "🐱", "قطة"]
    with pytest.raises(UserInputError, match="no class names"):
        parse_classnames(" , \n ")
    with pytest.raises(UserInputError, match="limit"):
        parse_classnames("x" * 10_000)
    with pytest.raises(UserInputError, match="limit"):
        parse_classnames(",".join(str(i) for i in range(5001)))


@pytest.mark.parametrize("bad", ["a photo", "a {0}", "a {name}", "a {{}}", "a %s", "{} and {}"])
def test_parse_templates_rejects_malformed(bad):
    with pytest.raises(UserInputError, match="exactly one"):
        parse_templates(bad)


def test_presets_are_complete():
    t = template_presets()
    assert len(t["openai_imagenet_80"]) == 80 and len(t["openai_imagenet_7"]) == 7
    assert len(t["cifar"]) == 18 and t["single"] == ["a photo of a {}."] and "shapes_world" in t
    for templates in t.values():
        parse_templates(templates)
    c = classname_presets()
    assert len(c["cifar10"]) == 10 and len(c["cifar100"]) == 100 and len(c["imagenet1k"]) == 1000
    assert len(c["shapes_world_shapes"]) == 8 and len(c["shapes_world_colours"]) == 8 and len(c["shapes_world_combos"]) == 64


def test_text_edge_cases_have_defined_behaviour():
    """Documented in docs/app.md ('What the text boxes accept')."""
    assert parse_classnames("cat, cat, dog") == ["cat", "dog"]  # duplicates: first kept
    assert parse_classnames("\u202ecat\u202c, d\u200dog\x00") == ["cat", "dog"]  # bidi, zero-width, NUL removed
    assert parse_classnames("🐱 cat, قطة") == ["🐱 cat", "قطة"]  # emoji and right-to-left scripts kept
    assert len(parse_classnames("\n".join(f"class {i}" for i in range(5000)))) == 5000  # the limit itself is fine
    assert parse_templates("a photo\u200b of a {}.\x00") == ["a photo of a {}."]
    for bad in ("a photo of a %s.", "a {0}", "a {name}", "a {{}}", "no slot"):
        with pytest.raises(UserInputError, match="exactly one"):
            parse_templates(bad)
