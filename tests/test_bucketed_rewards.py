"""Full mode on CPU runs length-sorted micro-batches: same rewards (and gradients) as one padded forward."""

from __future__ import annotations

import torch

from faro_core.models.reward import bucketed_rewards, length_buckets, load_sequence_classifier, pad_encodings
from faro_core.paths import embedded_encoder


def test_length_buckets_cover_each_position_once_within_budget() -> None:
    lengths = [5, 60, 12, 33, 128, 7, 7, 90]
    buckets = length_buckets(lengths, 128)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for b in buckets:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 128
    assert length_buckets([], 64) == []


def test_bucketed_rewards_match_one_padded_forward() -> None:
    torch.manual_seed(0)
    tok, model = load_sequence_classifier(embedded_encoder())
    model.eval()  # no dropout: the two paths must agree to float rounding
    prompts = ["Who was late?", "A long context " * 12 + "Who was it?", "Q", "Another question about someone?"]
    responses = ["The old man", "The young woman who came in late yesterday", "Unknown", "Cannot be determined"]
    enc = tok(prompts, responses, truncation="longest_first", max_length=64)
    encs = [{k: enc[k][i] for k in enc} for i in range(len(prompts))]
    ref = model(**tok.pad(encs, return_tensors="pt")).logits.squeeze(-1)
    ref.sum().backward()
    g_ref = model.classifier.weight.grad.clone()
    model.zero_grad()
    out = bucketed_rewards(model, tok, encs, "cpu", max_tokens=40)
    out.sum().backward()
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(model.classifier.weight.grad, g_ref, atol=1e-4)


def test_pad_encodings_equals_the_tokenizers_pad_on_both_sides() -> None:
    """The per-step padding gives exactly the tensors of ``tokenizer.pad`` (right and left), and builds the
    attention mask when the encodings carry none."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_encoder())
    enc = tok(["Who was late?", "A long context " * 5, "Q"], ["The old man", "Nobody", "Unknown answer"])
    encs = [{k: enc[k][i] for k in enc} for i in range(3)]
    for side in ("right", "left"):
        tok.padding_side = side
        ref = tok.pad(encs, return_tensors="pt")
        got = pad_encodings(encs, tok.pad_token_id, side)
        assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
        bare = pad_encodings([{"input_ids": e["input_ids"]} for e in encs], tok.pad_token_id, side)
        assert torch.equal(bare["attention_mask"], ref["attention_mask"])
