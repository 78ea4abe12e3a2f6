"""llama.cpp's parallel sequences behind one context: continuous batching and a prefix cache for a GGUF file.

One llama.cpp context holds ``slots`` sequences, each in its own KV stream of ``context`` cells (llama.cpp's
advice when sequences do not all share a long prefix: a unified cache makes every token attend over every
sequence's cells). Each ``step`` is one ``llama_decode`` of a batch that holds one token of every sequence that is
decoding and then chunks of the prompts still to be read, up to ``batch_tokens``; a sequence joins at the next step
and leaves when it ends, without waiting for the others (continuous batching, with chunked prefill).

A slot keeps its sequence's KV after the sequence ends. A new prompt takes the idle slot whose cached tokens share
the longest prefix with it (at least half the prompt, as llama.cpp's server asks; else the least recently used
slot) and computes only the rest. When a busy slot holds a longer shared prefix (a system prompt that another
request is still using), its stream is copied into the new slot with ``llama_memory_seq_cp`` (llama.cpp copies
whole streams) and the tail past the shared prefix removed; with ``unified=True`` the cells are shared instead.

Sampling is llama.cpp's sampler chain per sequence (greedy, or top-k, top-p, temperature and a seeded draw).
Only the scheduler's thread calls ``start``, ``step`` and ``finish``; ``tokenize`` and ``piece`` read the
vocabulary only.
"""
from __future__ import annotations

import ctypes
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UsageError


@dataclass(frozen=True)
class Sampling:
    """How one sequence picks its tokens; ``temperature == 0`` is greedy."""
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


@dataclass(eq=False)
class EngineSeq:
    """A sequence as the engine sees it: the prompt, where it stands, and the tokens it produced."""
    prompt: list[int]
    sampling: Sampling
    slot: int = -1
    read: int = 0  # prompt tokens already in the KV cache (reused or computed)
    reused: int = 0  # of them, taken from the prefix cache
    generated: list[int] = field(default_factory=list)
    sampler: object = None
    pending: int | None = None  # the last sampled token, not yet in the KV cache

    @property
    def prefilling(self) -> bool:
        return self.read < len(self.prompt)


@dataclass
class _Slot:
    id: int
    tokens: list[int] = field(default_factory=list)  # what the KV cache holds for this sequence id, from position 0
    busy: bool = False
    used_at: float = 0.0


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaEngine:
    """A GGUF file in llama.cpp with ``slots`` parallel sequences of up to ``context`` tokens each."""

    runtime = "llama.cpp"

    def __init__(self, path: str | Path, *, context: int, slots: int, threads: int, batch_tokens: int = 512,
                 prefix_cache: bool = True, unified: bool = False):
        import llama_cpp

        from ..runtimes.llamacpp import GgufFacts, quiet, require_llamacpp

        require_llamacpp()
        self.path = Path(path)
        self.facts = GgufFacts.read(self.path)
        if context < 2 or slots < 1 or batch_tokens < 1:
            raise UsageError(f"context {context}, slots {slots} and batch tokens {batch_tokens} must be positive")
        self.context = min(context, self.facts.context_length)
        self.slots = [_Slot(i) for i in range(slots)]
        self.batch_tokens = max(batch_tokens, slots)  # room for one decode token per sequence
        self.prefix_cache = prefix_cache
        quiet()
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            raise UsageError(f"{self.path}: llama.cpp cannot load it")
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.context * slots
        cparams.n_batch = self.batch_tokens
        cparams.n_ubatch = min(self.batch_tokens, 512)
        cparams.n_seq_max = slots
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.kv_unified = self.unified = unified
        cparams.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise UsageError(f"{self.path}: llama.cpp cannot make a context of {cparams.n_ctx} tokens")
        self._llama = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.batch_tokens, 0, 1)
        self.threads = threads
        self.capacity = self.context * slots  # KV cells in the context
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._buf = ctypes.create_string_buffer(256)
        self.chat_template = self._meta("tokenizer.chat_template")
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.bos_id = int(llama_cpp.llama_vocab_bos(self._vocab))
        self.eos_id = int(llama_cpp.llama_vocab_eos(self._vocab))

    # the vocabulary ----------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._llama.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """llama.cpp's tokens for ``text``, special tokens parsed; BOS as the vocabulary asks unless told."""
        data = text.encode("utf-8")
        add = self.add_bos if add_bos is None else add_bos
        room = len(data) + 8
        out = (self._llama.llama_token * room)()
        n = self._llama.llama_tokenize(self._vocab, data, len(data), out, room, add, True)
        if n < 0:
            out = (self._llama.llama_token * -n)()
            n = self._llama.llama_tokenize(self._vocab, data, len(data), out, -n, add, True)
        return list(out[:n])

    def piece(self, token: int) -> bytes:
        """The bytes ``token`` stands for in text (control tokens: none)."""
        n = self._llama.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._llama.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            return buf.raw[:n]
        return self._buf.raw[:n]

    def token_text(self, token: int) -> str:
        """The token as written in the vocabulary (special tokens too): for BOS/EOS in chat templates."""
        n = self._llama.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, True)
        return self._buf.raw[:max(n, 0)].decode("utf-8", "replace")

    def is_end(self, token: int) -> bool:
        return bool(self._llama.llama_vocab_is_eog(self._vocab, token))

    # sequences ---------------------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return sum(not s.busy for s in self.slots)

    @property
    def cells_held(self) -> int:
        """KV cells the slots hold (a cell shared by several slots counts once per slot: an upper bound)."""
        return sum(len(s.tokens) for s in self.slots)

    def start(self, seq: EngineSeq) -> None:
        """Give ``seq`` a free slot, reusing the longest cached prefix of its prompt (see the module's text)."""
        idle = [s for s in self.slots if not s.busy]
        if not idle:
            raise RuntimeError("no free slot")
        limit = len(seq.prompt) - 1  # the last prompt token is always computed: its logits pick the first token

        def reusable(s: _Slot) -> int:
            return min(_common(s.tokens, seq.prompt), limit) if self.prefix_cache else 0
        slot = max(idle, key=lambda s: (reusable(s), -s.used_at))  # the longest cached prefix
        if reusable(slot) < 0.5 * len(seq.prompt):  # a short match (a BOS, a common word) is not worth another
            slot = min(idle, key=lambda s: s.used_at)  # prompt's cache: the least recently used slot, as llama.cpp
        keep = reusable(slot)
        source = max(self.slots, key=reusable)
        shared = reusable(source)
        if shared > keep:  # a busy slot holds more of this prompt: share its cells
            self._llama.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
            if self.unified:  # the cells gain the slot's sequence id: nothing is copied
                self._llama.llama_memory_seq_cp(self._mem, source.id, slot.id, 0, shared)
            else:  # a stream per sequence: llama.cpp copies whole streams only; the tail is dropped after
                self._llama.llama_memory_seq_cp(self._mem, source.id, slot.id, -1, -1)
                self._llama.llama_memory_seq_rm(self._mem, slot.id, shared, -1)
            slot.tokens, keep = list(seq.prompt[:shared]), shared
        else:
            self._llama.llama_memory_seq_rm(self._mem, slot.id, keep, -1)
            slot.tokens = slot.tokens[:keep]
        slot.busy, slot.used_at = True, time.monotonic()
        seq.slot, seq.read, seq.reused = slot.id, keep, keep
        seq.sampler = self._sampler(seq.sampling)

    def _sampler(self, s: Sampling):
        L = self._llama
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if s.greedy:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        if s.top_k > 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(s.top_k))
        if s.top_p < 1.0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(s.top_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(s.temperature))
        seed = s.seed if s.seed is not None else secrets.randbits(32)
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def finish(self, seq: EngineSeq) -> None:
        """Free ``seq``'s sampler and slot; the slot keeps the KV of what was computed (the prefix cache)."""
        if seq.sampler is not None:
            self._llama.llama_sampler_free(seq.sampler)
            seq.sampler = None
        if seq.slot >= 0:
            slot = self.slots[seq.slot]
            slot.busy, slot.used_at = False, time.monotonic()
            if not self.prefix_cache:
                self._llama.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
                slot.tokens = []
            seq.slot = -1

    def step(self, seqs: list[EngineSeq]) -> tuple[list[tuple[EngineSeq, int]], int]:
        """One ``llama_decode`` over ``seqs`` (each holding a slot): every decoding sequence's pending token, then
        prompt chunks up to the batch's room. Returns the sampled (sequence, token) pairs and the prompt tokens
        read in this step."""
        batch, n, outs, prompt_read = self._batch, 0, [], 0
        for seq in seqs:
            if seq.pending is not None:
                slot = self.slots[seq.slot]
                self._put(n, seq.pending, len(slot.tokens), slot.id, True)
                slot.tokens.append(seq.pending)
                outs.append((n, seq))
                seq.pending = None
                n += 1
        for seq in seqs:
            if not seq.prefilling or n >= self.batch_tokens:
                continue
            slot = self.slots[seq.slot]
            take = min(len(seq.prompt) - seq.read, self.batch_tokens - n)
            for i in range(seq.read, seq.read + take):
                last = i == len(seq.prompt) - 1
                self._put(n, seq.prompt[i], i, slot.id, last)
                if last:
                    outs.append((n, seq))
                n += 1
            slot.tokens.extend(seq.prompt[seq.read:seq.read + take])
            seq.read += take
            prompt_read += take
        if n == 0:
            return [], 0
        batch.n_tokens = n
        rc = self._llama.llama_decode(self._ctx, batch)
        if rc == 1:  # no room in the KV cache: drop the idle slots' cached prefixes and try once more
            for slot in self.slots:
                if not slot.busy and slot.tokens:
                    self._llama.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
                    slot.tokens = []
            rc = self._llama.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} on a batch of {n} tokens")
        sampled = []
        for index, seq in outs:
            token = int(self._llama.llama_sampler_sample(seq.sampler, self._ctx, index))
            seq.generated.append(token)
            seq.pending = token
            sampled.append((seq, token))
        return sampled, prompt_read

    def _put(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits

    def close(self) -> None:
        L = getattr(self, "_llama", None)
        if L is None:
            return
        L.llama_batch_free(self._batch)
        L.llama_free(self._ctx)
        L.llama_model_free(self._model)
        self._llama = None
