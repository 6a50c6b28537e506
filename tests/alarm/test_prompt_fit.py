"""Over-long prompts are cut before the assistant header (with a warning), never through it."""
import logging

import pytest
import torch

from alarm.model.splice import ASSISTANT_SUFFIX, fit_prompts, splice_packed, splice_padded, tokenize_batch
from alarm.model.tiny import tiny_tokenizer
from alarm_kernels.varlen import seqlens_to_cu_seqlens, unpack


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_long_prompt_is_cut_before_the_header(tok, caplog):
    long_prompt = "Describe every sound you hear in great detail please. " * 20
    text = tokenize_batch(tok, ["short?", long_prompt], ["ok", "fine"])
    header = tok.encode(ASSISTANT_SUFFIX, add_special_tokens=False)
    assert text.header_len == len(header)
    audio_lengths = [4, 6]
    max_length = 60
    with caplog.at_level(logging.WARNING, logger="alarm.model.splice"):
        fitted = fit_prompts(text, audio_lengths, max_length)
    assert "example 1: prompt cut by" in caplog.text and "example 0" not in caplog.text
    rows = list(unpack(fitted.suffix, fitted.cu_suffix))
    original = list(unpack(text.suffix, text.cu_suffix))
    assert torch.equal(rows[0], original[0])  # the short prompt is untouched
    assert rows[1][-len(header):].tolist() == header  # the header survives whole
    assert torch.equal(rows[1][: -len(header)], original[1][: rows[1].numel() - len(header)])  # prompt start kept
    assert text.prefix.numel() + 2 + audio_lengths[1] + rows[1].numel() == max_length

    h = 8
    embed = torch.nn.Embedding(len(tok), h)
    audio, cu = torch.randn(sum(audio_lengths), h), seqlens_to_cu_seqlens(audio_lengths)
    s, e = torch.randn(h), torch.randn(h)
    with torch.no_grad():
        packed = splice_packed(embed, text, audio, cu, s, e, max_length)
        padded = splice_padded(embed, text, list(unpack(audio, cu)), s, e, max_length)
    n = (packed["cu_seqlens"][1:] - packed["cu_seqlens"][:-1]).tolist()
    assert n[1] == max_length and (packed["labels"] != -100).sum() == len(tok.encode("ok"))  # "fine" is cut
    end = int(packed["cu_seqlens"][2])
    torch.testing.assert_close(packed["inputs_embeds"][end - len(header): end], embed(torch.tensor(header)))
    mask = padded["attention_mask"].bool()
    torch.testing.assert_close(packed["inputs_embeds"], padded["inputs_embeds"][mask])


def test_audio_that_leaves_no_room_is_refused(tok):
    text = tokenize_batch(tok, ["what?"], None)
    with pytest.raises(ValueError, match="example 0: its 50 audio tokens .* max_length=40"):
        fit_prompts(text, [50], 40)
    assert fit_prompts(text, [5], 40) is text
