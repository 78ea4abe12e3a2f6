"""Text data for language models: reading .txt/.jsonl, the built-in text, and the seeded split into calibration
windows, validation windows and prompts (edgekit.core.text)."""
import json

import numpy as np
import pytest

from edgekit.core.errors import UsageError
from edgekit.core.text import Text, builtin_text, first_sentences, read_text, split_text


class Bytes:
    """A duck-typed tokenizer: one id per UTF-8 byte, EOS 0 between documents."""
    eos_token_id = 0

    def encode(self, text, add_special_tokens=False):
        return list(text.encode())


def _one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_txt_documents_are_blank_line_separated(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("First paragraph\nstill first.\n\n  \nSecond one.\r\n\r\nThird.\n", encoding="utf-8")
    text = read_text(f)
    assert text.documents == ("First paragraph\nstill first.", "Second one.", "Third.")
    assert text.prompts == () and text.source == str(f)


def test_jsonl_text_and_prompts(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "A document."}\n\n{"prompt": "Say hi."}\n{"text": "Both.", "prompt": "And a prompt."}\n')
    text = read_text(f)
    assert text.documents == ("A document.", "Both.")
    assert text.prompts == ("Say hi.", "And a prompt.")


@pytest.mark.parametrize("content, needle", [
    (b"", "is empty"),
    (b"  \n\n", "is empty"),
    (b"caf\xe9 au lait\n", "is not UTF-8 (byte 3, line 1)"),
])
def test_bad_txt_files_get_one_line(tmp_path, content, needle):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    with pytest.raises(UsageError) as exc:
        read_text(f)
    assert needle in _one_line(exc) and str(f) in str(exc.value)


@pytest.mark.parametrize("lines, needle", [
    (['{"text": "ok"}', '[1, 2]'], "line 2: a JSON list, not an object"),
    (['{"text": "ok"}', '{"title": "x", "body": "y"}'], "line 2: no 'text' or 'prompt' field (it has: body, title)"),
    (['{"text": "ok"', ], "line 1: not JSON"),
    (['{"text": 3}'], "line 1: 'text' is a int, not a string"),
    (['{"prompt": "only prompts"}'], "has no 'text' field on any line"),
])
def test_bad_jsonl_lines_name_the_file_and_line(tmp_path, lines, needle):
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError) as exc:
        read_text(f)
    assert needle in _one_line(exc) and str(f) in str(exc.value)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(UsageError) as exc:
        read_text(tmp_path / "nope.txt")
    assert "not found" in _one_line(exc)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(UsageError) as exc:
        read_text(tmp_path / "data.csv")
    assert "unsupported type '.csv'" in _one_line(exc)


def test_builtin_text_parts_are_disjoint_and_noted():
    train, held, everything = builtin_text("train"), builtin_text("heldout"), builtin_text("all")
    assert len(train.documents) + len(held.documents) == len(everything.documents)
    assert not set(train.documents) & set(held.documents)
    assert 300_000 < everything.chars < 2_000_000  # ~0.5 MB of English
    assert held.chars > 50_000
    assert "built-in English text" in held.notes[0] and "heldout" in held.notes[0]
    assert builtin_text() == held
    with pytest.raises(UsageError, match="unknown"):
        builtin_text("test")


def _positions(data, windows):
    """Each window's rows as tuples, for overlap checks."""
    return {tuple(w) for w in windows}


def test_split_windows_are_seeded_disjoint_and_prompts_avoid_validation():
    text = builtin_text()
    tok = Bytes()
    a = split_text(text, tok, context=256, seed=0)
    b = split_text(text, tok, context=256, seed=0)
    c = split_text(text, tok, context=256, seed=1)
    assert a.calibration.dtype == np.int64 and a.calibration.shape == (16, 256) and a.validation.shape == (8, 256)
    assert np.array_equal(a.validation, b.validation) and np.array_equal(a.calibration, b.calibration)
    assert a.prompts == b.prompts and len(a.prompts) == 8
    assert not np.array_equal(a.validation, c.validation)
    assert not _positions(a, a.calibration) & _positions(a, a.validation)
    # the windows are cut from one stream: every validation window's bytes are somewhere in the text
    stream = b"\x00".join(d.encode() for d in text.documents) + b"\x00"
    for window in a.validation:
        assert bytes(window.astype(np.uint8)) in stream
    # no prompt is inside a validation window
    val_bytes = [bytes(w.astype(np.uint8)).replace(b"\x00", b" ") for w in a.validation]
    for prompt in a.prompts:
        assert all(prompt.encode()[:60] not in v for v in val_bytes), prompt
    assert a.summary()["tokens"] == len(stream) and a.notes == text.notes


def test_split_uses_the_texts_own_prompts_and_checks_their_length():
    text = Text(documents=("x" * 1000,), prompts=("short one", "p" * 70), source="mine.jsonl")
    data = split_text(text, Bytes(), context=100, seed=0, validation=2, calibration=2)
    assert data.prompts == ("short one", "p" * 70)
    with pytest.raises(UsageError) as exc:
        split_text(text, Bytes(), context=64, seed=0)
    assert "mine.jsonl: prompt 2 has 70 tokens, the context is 64" in _one_line(exc)


def test_short_text_says_how_many_tokens_it_has_and_needs():
    with pytest.raises(UsageError) as exc:
        split_text(Text(documents=("a" * 300,), source="short.txt"), Bytes(), context=256)
    assert "short.txt has 301 tokens; it needs at least 512" in _one_line(exc)


def test_small_text_shrinks_the_splits_and_says_so():
    data = split_text(["b" * 1023, "c" * 1000], Bytes(), context=256, seed=3)  # 2025 tokens: 7 windows
    assert len(data.validation) == 3 and len(data.calibration) == 4
    assert any("3 validation and 4 calibration windows instead of 8 and 16" in n for n in data.notes)


def test_split_with_a_real_tokenizer():
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(builtin_text("train").documents[:200],
                            trainers.BpeTrainer(vocab_size=500, show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    data = split_text(builtin_text(), tok, context=128, seed=0, calibration=4, validation=4, prompts=3)
    assert data.validation.shape == (4, 128) and data.validation.max() < 500 and len(data.prompts) == 3
    assert data.tokens < builtin_text().chars * 0.6  # merges make tokens fewer than bytes


def test_first_sentences_skip_code_and_headings():
    assert first_sentences("   x = 1\n   y = 2 and a long line of code follows here ok") is None
    assert first_sentences("The \"assert\" statement\n**********************") is None
    doc = "A mapping object maps hashable values to objects. Mappings are mutable. " + "More text. " * 30
    assert first_sentences(doc, 80) == "A mapping object maps hashable values to objects. Mappings are mutable."


def test_jsonl_file_end_to_end(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps({"text": f"Document {i}. " * 20}) for i in range(20)) + "\n"
                 + json.dumps({"prompt": "Tell me about document 3."}) + "\n")
    data = split_text(read_text(f), Bytes(), context=128, seed=0, validation=4, calibration=4)
    assert data.prompts == ("Tell me about document 3.",) and data.source == str(f)
