"""The built-in example language model: a small Llama-architecture model that edgekit trains offline on the
built-in English text (Python's own ``pydoc_data.topics``), so an LM build needs nothing from a hub.

A SentencePiece BPE tokenizer with byte fallback is trained on the text's train part, with ``<|endoftext|>``
(BOS), ``<|im_end|>`` (EOS), ``<|pad|>`` and a ChatML chat template. The model learns from the same part: plain
paragraphs, each ended by EOS, and every second paragraph that opens with prose as a short chat turn (the user says
its first sentence, the assistant the next sentence or two, then EOS), so most greedy answers under the chat template
stop at EOS (10 of 16 held-out prompts at the test size). The held-out part (every 5th paragraph,
``builtin_text("heldout")``) is what its perplexity is measured on, and what a build validates on without ``--data``.

Training is seeded, runs a fixed number of steps on one thread in a child process, and is deterministic. The
result is cached as a Hugging Face folder under ``$XDG_CACHE_HOME/edgekit/tinylm-<version>`` (``~/.cache`` by
default), written to a temporary folder and renamed.
``python -m edgekit.examples.tinylm [test]`` builds it and prints its card.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

VERSION = "3"  # 3: a SentencePiece tokenizer (llama.cpp converts it); 2: one-thread worker, short chat turns
CHAT_EVERY, ANSWER_CHARS = 2, 150  # chat turns: one in CHAT_EVERY prose paragraphs, answers cut to ANSWER_CHARS
CARD, SPM_MODEL = "edgekit_tinylm.json", "tokenizer.model"
BOS, EOS, PAD, IM_START = "<|endoftext|>", "<|im_end|>", "<|pad|>", "<|im_start|>"
CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
                 "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")


@dataclass(frozen=True)
class TinySize:
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    seq: int  # training sequence length
    batch: int
    steps: int
    lr: float
    context: int = 1024  # max_position_embeddings (RoPE: no learned positions)
    seed: int = 0


SIZES = {
    "default": TinySize(vocab=4096, hidden=128, layers=4, heads=4, kv_heads=2, intermediate=384, seq=256, batch=8,
                        steps=300, lr=4e-3),
    "test": TinySize(vocab=1024, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=192, seq=128, batch=16,
                     steps=250, lr=4e-3, context=512),
}


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit"


def tinylm_dir(progress: Callable[[str], None] | None = None, *, size: str = "default") -> Path:
    """The cached example LM's Hugging Face folder; trained (minutes on 2 cores; ``size="test"``: seconds) when
    missing."""
    from ..core.errors import UsageError

    if size not in SIZES:
        raise UsageError(f"tinylm size '{size}' is unknown; choose one of {', '.join(SIZES)}")
    dest = cache_root() / (f"tinylm-{VERSION}" if size == "default" else f"tinylm-{size}-{VERSION}")
    if (dest / CARD).is_file():
        return dest
    if dest.exists():  # a folder without its card is no finished build (the card is written before the rename)
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _build_in_worker(tmp, size, progress or (lambda _msg: None))
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / CARD).is_file():  # not another process's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _build_in_worker(dest: Path, size: str, progress: Callable[[str], None]) -> None:
    """Train in a child process on one thread: the result does not depend on the machine's core count, and on
    busy shared cores one thread runs 3-15x faster than torch's default two (measured here). Its progress lines are
    passed on as they come."""
    import subprocess
    import sys
    import tempfile

    from ..core.errors import StageError

    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edgekit.examples.tinylm", "--build", str(dest), size],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        for line in proc.stdout or ():
            progress(line.rstrip())
        code = proc.wait()
        err.seek(0)
        tail = [ln for ln in err.read().splitlines() if ln.strip()][-1:] or ["no output"]
    if code != 0 or not (dest / CARD).is_file():
        raise StageError("example", f"training the example LM failed (exit {code}): {tail[0][:300]}")


def load_tinylm(progress: Callable[[str], None] | None = None, *, size: str = "default"):
    """The example LM as a Model (kind ``causal-lm``)."""
    from dataclasses import replace

    from ..sources.lm import load_causal_lm

    folder = tinylm_dir(progress, size=size)
    model = load_causal_lm(folder)
    card = json.loads((folder / CARD).read_text())
    meta = dict(model.meta, trained_on=card["trained_on"], heldout=card["heldout"])
    return replace(model, name="tinylm" if size == "default" else f"tinylm-{size}", loader="example",
                   origin=f"example:tinylm{'' if size == 'default' else ':' + size}", meta=meta)


def train_tokenizer(documents: tuple[str, ...], vocab: int):
    """A SentencePiece BPE tokenizer with byte fallback (Llama 2's kind: llama.cpp's converter reads its
    ``tokenizer.model`` with the real piece scores, so llama.cpp tokenizes as the source does), with BOS/EOS/PAD,
    ``<|im_start|>`` and the ChatML template, loaded as transformers' tokenizer. Its ``spm_model`` attribute holds
    the ``tokenizer.model`` bytes the folder ships."""
    import io
    import tempfile

    import sentencepiece as spm
    from transformers import AutoTokenizer

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(documents), model_writer=buf, vocab_size=vocab, model_type="bpe", byte_fallback=True,
        character_coverage=0.9995, num_threads=1, unk_id=0, bos_id=1, eos_id=2, pad_id=3, unk_piece="<unk>",
        bos_piece=BOS, eos_piece=EOS, pad_piece=PAD, user_defined_symbols=[IM_START],
        normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False,
        split_digits=False, allow_whitespace_only_pieces=True, max_sentence_length=1 << 20, input_sentence_size=0,
        shuffle_input_sentence=False, minloglevel=2)
    with tempfile.TemporaryDirectory(prefix="edgekit-tinylm-tok-") as folder:
        (Path(folder) / SPM_MODEL).write_bytes(buf.getvalue())
        (Path(folder) / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "LlamaTokenizer", "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
            "unk_token": "<unk>", "add_bos_token": False, "add_eos_token": False, "legacy": False,
            "clean_up_tokenization_spaces": False}))
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.spm_model = buf.getvalue()
    return tokenizer


def training_stream(documents: tuple[str, ...], tokenizer) -> np.ndarray:
    """The train part as one token stream: paragraphs ended by EOS; every CHAT_EVERY-th paragraph that opens with
    prose becomes a chat turn (user: its first sentence; assistant: the sentences that follow, up to ANSWER_CHARS,
    then EOS)."""
    from ..core.text import encode, first_sentences

    eos, out, eligible = tokenizer.convert_tokens_to_ids(EOS), [], 0
    for doc in documents:
        first = first_sentences(doc, 160)
        flat = " ".join(doc.split())
        rest = flat[len(first):].strip() if first and flat.startswith(first) else ""
        if first and rest:
            eligible += 1
            if eligible % CHAT_EVERY == 0:
                answer = first_sentences(rest, ANSWER_CHARS) or rest[:ANSWER_CHARS]
                out.extend(encode(tokenizer, tokenizer.apply_chat_template(
                    [{"role": "user", "content": first}], tokenize=False, add_generation_prompt=True) + answer))
                out.append(eos)
                continue
        out.extend(encode(tokenizer, doc))
        out.append(eos)
    return np.asarray(out, dtype=np.int64)


def build_tinylm(dest: Path, size: TinySize, progress: Callable[[str], None]) -> dict:
    """Train the tokenizer and the model and write the folder (model, tokenizer, chat template, card) to ``dest``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from ..core.text import builtin_text, split_text
    from ..runtimes.torch_runner import caller_rng_kept

    start = time.perf_counter()
    train_text, heldout = builtin_text("train"), builtin_text("heldout")
    tokenizer = train_tokenizer(train_text.documents, size.vocab)
    stream = training_stream(train_text.documents, tokenizer)
    valid = split_text(heldout, tokenizer, context=size.seq, seed=size.seed, validation=16, calibration=1).validation
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (BOS, EOS, PAD)}
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=size.hidden, intermediate_size=size.intermediate,
                         num_hidden_layers=size.layers, num_attention_heads=size.heads,
                         num_key_value_heads=size.kv_heads, max_position_embeddings=size.context,
                         tie_word_embeddings=True, bos_token_id=ids[BOS], eos_token_id=ids[EOS],
                         pad_token_id=ids[PAD], rms_norm_eps=1e-5)
    progress(f"tinylm: training a {size.layers}-layer Llama (hidden {size.hidden}, vocab {len(tokenizer)}) on "
             f"{len(stream)} tokens of the built-in text, {size.steps} steps")
    with caller_rng_kept():
        torch.manual_seed(size.seed)
        model = LlamaForCausalLM(config)
        losses = _train(model, stream, size, progress)
    model.eval()
    ppl = _perplexity(model, valid)
    unigram = unigram_perplexity(stream, valid, len(tokenizer))
    seconds = time.perf_counter() - start
    progress(f"tinylm: held-out perplexity {ppl:.1f} (unigram baseline {unigram:.1f}) after {seconds:.0f} s")
    model.generation_config = GenerationConfig(bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD])
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    (dest / SPM_MODEL).write_bytes(tokenizer.spm_model)
    card = {"version": VERSION, "size": asdict(size), "parameters": int(sum(p.numel() for p in model.parameters())),
            "train_tokens": int(len(stream)), "trained_on": train_text.source, "heldout": heldout.source,
            "heldout_windows": int(len(valid)), "heldout_perplexity": round(ppl, 3),
            "unigram_perplexity": round(unigram, 3), "final_train_loss": round(float(np.mean(losses[-10:])), 4),
            "train_seconds": round(seconds, 1), "torch_threads": torch.get_num_threads(),
            "notes": list(train_text.notes)}
    (dest / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def _train(model, stream: np.ndarray, size: TinySize, progress: Callable[[str], None]) -> list[float]:
    import torch

    data = torch.from_numpy(stream)
    gen = torch.Generator().manual_seed(size.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=size.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, size.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / size.steps)))))
    model.train()
    losses = []
    for step in range(size.steps):
        starts = torch.randint(0, len(data) - size.seq - 1, (size.batch,), generator=gen)
        batch = torch.stack([data[s:s + size.seq] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        losses.append(float(loss.detach()))
        if (step + 1) % max(1, size.steps // 10) == 0:
            progress(f"tinylm: step {step + 1}/{size.steps}, loss {np.mean(losses[-10:]):.3f}")
    return losses


def _perplexity(model, windows: np.ndarray) -> float:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for window in windows:
            ids = torch.from_numpy(window[None])
            loss = model(input_ids=ids, labels=ids).loss
            total += float(loss) * (len(window) - 1)
            count += len(window) - 1
    return math.exp(total / count)


def unigram_perplexity(train: np.ndarray, windows: np.ndarray, vocab: int) -> float:
    """The baseline a model must beat: token frequencies of the training stream (add-one), on the windows'
    predicted tokens."""
    counts = np.bincount(train, minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    targets = windows[:, 1:].reshape(-1)
    return float(np.exp(-logp[targets].mean()))


def _main(argv: list[str]) -> None:
    """``python -m edgekit.examples.tinylm [SIZE]``: build (or find) the cached model and print its card.
    ``--build DEST SIZE`` is the worker tinylm_dir() starts: it trains into DEST on one thread."""
    if argv[:1] == ["--build"]:
        import torch

        torch.set_num_threads(1)  # this process only trains the model (see _build_in_worker)
        build_tinylm(Path(argv[1]), SIZES[argv[2]], lambda msg: print(msg, flush=True))
        return
    folder = tinylm_dir(print, size=argv[0] if argv else "default")
    print(folder)
    print((folder / CARD).read_text())


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
