"""The pitfall checker flags each known trap once it is seeded into a request, and nothing in a clean one;
the "what the model saw" panel shows the tokens the text tower really got."""

import pytest

import core
from core.families import CLIP, SIGLIP, SIGLIP2
from core.pitfalls import check, pipeline_note
from core.receipts import prompt_tokens, receipt
from demo.tabs.shared.model_saw import longest_prompts, model_saw

CLEAN = dict(templates=["a photo of a {}.", "a drawing of a {}."], sent_texts=["a photo of a cat."],
             token_counts=[8, 9], context_length=77)


@pytest.mark.parametrize("family", [CLIP, SIGLIP, SIGLIP2])
def test_a_clean_request_flags_nothing(family):
    assert check(family, **CLEAN) == []


@pytest.mark.parametrize("family, seeded, code", [
    (SIGLIP, dict(rule="softmax"), "softmax_over_sigmoid"),
    (CLIP, dict(rule="sigmoid"), "sigmoid_over_softmax"),
    (SIGLIP2, dict(sent_texts=["A photo of a Cat."]), "not_lowercased"),
    (CLIP, dict(token_counts=[8, 91]), "truncated"),
    (SIGLIP, dict(templates=["{}"]), "bare_class_name"),
])
def test_each_seeded_pitfall_is_flagged_alone(family, seeded, code):
    found = check(family, **{**CLEAN, **seeded})
    assert [p.code for p in found] == [code]
    assert found[0].message and "\n" not in found[0].message


def test_capitals_matter_only_to_the_lower_cased_family_and_templates_to_the_pipeline():
    assert check(SIGLIP, **{**CLEAN, "sent_texts": ["A Cat"]}) == []
    assert pipeline_note(["This is a photo of {}."]) is None and "This is a photo of {}." in pipeline_note(["a {}."])


def test_the_panel_shows_the_tokens_the_model_got_and_flags_a_long_prompt():
    clip = core.load()
    long_name = " ".join(["red"] * 90)
    saw = model_saw(clip, ["star", long_name], ["a photo of a {}."])
    assert [p.code for p in saw.pitfalls] == ["truncated"]
    tokens = prompt_tokens(clip, ["a photo of a star.", f"a photo of a {long_name}."])
    ids = core.tokenize(clip, ["a photo of a star."])["input_ids"][0].tolist()
    assert tokens[0].tokens == clip.tokenizer.convert_ids_to_tokens(ids)  # exactly what encode gives the model
    whole = 1 + 4 + 90 + 1 + 1  # start, "a photo of a", 90 × "red", ".", end
    assert tokens[1].length == clip.context_length and tokens[1].dropped == whole - clip.context_length
    assert "star&lt;/w&gt;" in saw.markdown(50.0) and "softmax(50.00" in saw.markdown(50.0)
    sigmoid = model_saw(clip, ["star", "circle"], ["{}"], rule="sigmoid")
    assert {p.code for p in sigmoid.pitfalls} == {"sigmoid_over_softmax", "bare_class_name"}
    assert "not the model's own rule" in sigmoid.markdown(10.0)


def test_long_lists_are_checked_through_their_longest_prompts():
    names = [f"class {i}" for i in range(1000)] + ["a very long class name indeed"]
    prompts = longest_prompts(names, ["a {}.", "a photo of a {} in the wild."])
    assert "a photo of a a very long class name indeed in the wild." in prompts and len(prompts) <= 3 * 1003


def test_a_receipt_names_the_model_its_weights_and_what_turned_cosines_into_probabilities():
    clip = core.load()
    r = receipt(clip, ["a {}."], scale=42.0)
    assert (r["model"], r["family"], r["probability_rule"], r["logit_scale"], r["logit_bias"]) == \
        ("shapes-tiny", "CLIP", "softmax", 42.0, None)
    assert r["weights_revision"] == clip.revision and r["templates"] == ["a {}."]
    assert r["image_processor"]["crop_size"] == {"height": clip.image_size, "width": clip.image_size}
    assert r["libraries"]["torch"].startswith("2.")


def test_the_panel_says_how_padding_is_read_as_encode_does(tmp_path):
    """SigLIP pads to 64: masked when its tokenizer gives a mask (as encode passes it), read by the model when not."""
    from family_standins import siglip2_standin

    from core.receipts import tokenizer_settings

    clip = core.load(str(siglip2_standin(tmp_path / "s")))
    for names, masked in ((["input_ids", "attention_mask"], True), (["input_ids"], False)):
        clip.tokenizer.model_input_names = names
        sent = core.tokenize(clip, ["a star"])
        assert (sent["attention_mask"] is not None) == masked  # what the model gets
        assert prompt_tokens(clip, ["a star"])[0].masked == masked
        assert ("the pads are read" in tokenizer_settings(clip)["padding"]) == (not masked)
