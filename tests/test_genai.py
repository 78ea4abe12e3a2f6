"""ONNX Runtime GenAI folders: the builder run offline on tiny random decoder LMs made from configs (no download),
their logits against torch's, genai's greedy generation against torch's, the LM bench, and the refusals."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.core.errors import StageError, UsageError
from edgekit.core.lm_results import LmBench
from edgekit.export.genai import (GenaiExport, GenaiOptions, builder_failure, check_hf_folder, export_genai,
                                  quantized_nodes)

pytest.importorskip("onnxruntime_genai")
VOCAB = 320
EOS = 2


def train_tokenizer(folder: Path) -> None:
    """A byte-level BPE trained offline on text that ships with Python, saved as AutoTokenizer loads it."""
    import pydoc_data.topics
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)[:40]]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)


def save_lm(folder: Path, kind: str) -> Path:
    """A 2-layer random LM of ``kind`` (llama, qwen2, gpt2), hidden 64, 4 heads (2 KV heads), tied embeddings,
    weights drawn wider than the default so greedy generation does not repeat one token."""
    import torch
    import transformers as tf

    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=EOS, tie_word_embeddings=True, initializer_range=0.2)
    config = {
        "llama": lambda: tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                        **common),
        "qwen2": lambda: tf.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                        **common),
        "gpt2": lambda: tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **common),
    }[kind]()
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(folder)
    train_tokenizer(folder)
    return folder


class Lazy(dict):
    """Made on first use, once per module: a test's setup pays only for what it reads."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, key):
        self[key] = value = self.make(key)
        return value


@pytest.fixture(scope="module")
def lms(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lms")
    return Lazy(lambda kind: save_lm(root / kind, kind))


@pytest.fixture(scope="module")
def exported(lms, tmp_path_factory) -> dict[str, Path]:
    """The llama LM at fp32, int4 (block 32) and int8, each exported once when first asked for."""
    root = tmp_path_factory.mktemp("genai")
    extra = {"fp32": {}, "int4": {"block_size": 32}, "int8": {}}
    return Lazy(lambda precision: export_genai(lms["llama"], root / precision, precision=precision,
                                               **extra[precision]))


def torch_logits(hf_dir: Path, window: np.ndarray) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        return model(torch.from_numpy(window)).logits[0].numpy()


def window_of(hf_dir: Path, length: int = 64) -> np.ndarray:
    """Real text through the folder's own tokenizer."""
    import pydoc_data.topics
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(hf_dir)(pydoc_data.topics.topics["while"])["input_ids"]
    return np.asarray(ids[:length], dtype=np.int64)[None]


# ---- options and refusals, without the builder ------------------------------------------------------------------
def test_options_refuse_bad_values_in_one_line():
    cases = [({"precision": "fp16"}, "precision 'fp16' is not one of fp32, int8, int4"),
             ({"precision": "int4", "block_size": 48}, "block_size 48 is not one of 16, 32, 64, 128, 256"),
             ({"precision": "fp32", "block_size": 32}, "block_size apply to int8/int4 files only, not to fp32"),
             ({"precision": "int4", "accuracy_level": 5}, "accuracy_level 5 is not one of 1 (fp32)"),
             ({"precision": "int4", "algo": "gptq"}, "algo 'gptq' is not one of default, rtn, k_quant"),
             ({"precision": "int8", "int8_layers": ("lm_head",)}, "int8_layers apply to int4 files only"),
             ({"precision": "int4", "int8_layers": ("layer3",)}, "int8 layer 'layer3' is neither lm_head"),
             ({"precision": "fp32", "symmetric": False}, "symmetric apply to int8/int4 files only"),
             ({"precision": "int4", "algo": "k_quant_mixed", "exclude_lm_head": True},
              "the LM head cannot be both excluded from quantization and at int8")]
    for kwargs, text in cases:
        with pytest.raises(UsageError, match=None) as info:
            GenaiOptions(**kwargs)
        assert text in str(info.value) and "\n" not in str(info.value), (kwargs, str(info.value))


def test_options_become_the_builders_arguments():
    assert GenaiOptions("fp32").builder_args() == ["-p", "fp32", "-e", "cpu", "--extra_options", "hf_token=false"]
    args = GenaiOptions("int4", block_size=64, accuracy_level=1, algo="k_quant_mixed",
                        int8_layers=("/model/layers.1/mlp/down_proj/MatMul", "lm_head"), exclude_lm_head=False)
    made = args.builder_args()
    assert made[:9] == ["-p", "int4", "-e", "cpu", "--extra_options", "hf_token=false", "block_size=64",
                        "accuracy_level=1", "algo_config=k_quant"]
    assert not any(a.startswith("matmul_mixed_precision") for a in made)  # the structured list replaces it
    overrides = json.loads(made[made.index("--target_options") + 1])["quant_config"]["weights"]["overrides"]
    assert overrides == [{"match": {"preset": "last_matmul"}, "type": "int8"},
                         {"match": {"preset": "mixed_layers"}, "type": "int8"},
                         {"match": {"name": "/model/layers.1/mlp/down_proj/MatMul"}, "type": "int8"}]
    presets = GenaiOptions("int4", algo="k_quant_mixed").builder_args()  # as the builder's own alias expands
    assert presets[-2:] == ["algo_config=k_quant", "matmul_mixed_precision=last_matmul:int8,mixed_layers:int8"]
    assert "nodes_to_exclude=/lm_head/MatMul" in GenaiOptions("int8", exclude_lm_head=True).builder_args()
    assert "is_symmetric=false" in GenaiOptions("int4", symmetric=False).builder_args()
    assert not any("symmetric" in a for a in GenaiOptions("int4").builder_args())  # the builder's default: symmetric
    assert GenaiOptions.from_dict(args.to_dict()) == args


def test_builder_failure_is_one_line():
    unsupported = "Traceback (most recent call last):\n  File x\nNotImplementedError: The m model is not currently supported."
    assert builder_failure(unsupported, "GPT2LMHeadModel", "0.18.0") == (
        "the ONNX Runtime GenAI format cannot hold GPT2LMHeadModel: onnxruntime-genai 0.18.0's builder does not map "
        "that architecture")
    gguf = "NotImplementedError: The gguf quantized model is not currently supported."
    assert builder_failure(gguf, "LlamaForCausalLM", "0.18.0") == (
        "onnxruntime-genai 0.18.0's builder cannot read weights quantized as 'gguf' (config.json's "
        "quantization_config); give it the float weights, without that entry")
    other = "Reading layer 1\nTraceback (most recent call last):\nValueError: bad thing: here\n"
    assert builder_failure(other, "LlamaForCausalLM", "0.18.0") == "onnxruntime-genai's builder failed: ValueError: bad thing: here"


def test_bad_source_folders_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no config.json"):
        check_hf_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(UsageError, match=r"no weights \(\*.safetensors"):
        check_hf_folder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match="no tokenizer"):
        check_hf_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    assert check_hf_folder(tmp_path) == "LlamaForCausalLM"
    out = tmp_path / "taken"
    out.mkdir()
    (out / "x").write_text("keep me")
    with pytest.raises(UsageError, match="already exists"):
        export_genai(tmp_path, out, precision="fp32")
    assert (out / "x").read_text() == "keep me"


def test_runner_and_bench_refuse_what_is_not_a_genai_folder(tmp_path):
    from edgekit.measure.lm_bench import bench_lm
    from edgekit.runtimes.genai import GenaiRunner

    with pytest.raises(UsageError, match="not an ONNX Runtime GenAI folder"):
        GenaiRunner(tmp_path)
    with pytest.raises(UsageError, match="not an LM folder: no ONNX Runtime GenAI genai_config.json, no GGUF model.gguf, "
                                         "no OpenVINO openvino_model.xml with openvino_tokenizer.xml and no "
                                         "ExecuTorch model.pte with its edgekit_export.json"):
        bench_lm(tmp_path)


def test_lm_bench_round_trips():
    bench = LmBench(folder="f", runtime="onnxruntime-genai", threads=1, prompt_tokens=8, new_tokens=8, context=32,
                    runs=3, warmup=1, prefill_tokens_per_s=1000.0, decode_tokens_per_s=100.0, ttft_ms=8.0,
                    peak_rss_mb=80.0, base_rss_mb=40.0, loaded_rss_mb=60.0, model_bytes=10, kv_cache_bytes=4096, load_ms=5.0,
                    decode_by_run=(99.0, 100.0, 101.0), notes=("a",))
    data = bench.to_dict()
    assert data["decode_by_run"] == [99.0, 100.0, 101.0] and data["notes"] == ["a"]
    assert LmBench.from_dict(json.loads(json.dumps(data))) == bench


def test_the_lm_bench_times_a_fresh_prompt_each_run():
    """openvino-genai's prefix cache serves a repeated prompt's KV blocks, so the bench draws a new prompt for every
    warm-up and timed run (and the context fill)."""
    from edgekit.measure.lm_bench_worker import measure

    seen = []

    def run(prompt, new_tokens, chunk=None):
        seen.append(tuple(int(t) for t in prompt))
        return {"prefill": 1.0, "decode": 1.0, "ttft_ms": 1.0}

    pool = np.arange(10, 1000, dtype=np.int32)
    args = {"prompt_tokens": 16, "new_tokens": 4, "warmup": 2, "runs": 3, "context": 64}
    timed, _ = measure(run, pool, np.random.default_rng(0), args)
    assert len(timed) == 3 and len(seen) == 6 and len(set(seen)) == 6


# ---- the builder, the runtimes and the bench --------------------------------------------------------------------
@pytest.mark.slow
def test_fp32_folder_matches_torch(lms, exported):
    from edgekit.runtimes.genai import GenaiRunner

    folder = exported["fp32"]
    names = {p.name for p in folder.iterdir()}
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json",
            "edgekit_export.json"} <= names
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left over
    record = GenaiExport.read(folder)
    assert record.architecture == "LlamaForCausalLM" and record.options == GenaiOptions("fp32")
    assert record.builder.startswith("onnxruntime-genai 0.18")
    assert set(record.precision_map.values()) == {"fp32"} and "/lm_head/MatMul" in record.precision_map
    window = window_of(lms["llama"])
    ours = GenaiRunner(folder, threads=1).logits(window)
    ref = torch_logits(lms["llama"], window)
    assert ours.shape == ref.shape == (64, VOCAB) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.slow
def test_fp32_greedy_generation_is_torchs(lms, exported):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgekit.runtimes.genai import GenaiRunner

    runner = GenaiRunner(exported["fp32"], threads=1)
    text = "The while statement is used for repeated execution"
    prompt = AutoTokenizer.from_pretrained(lms["llama"])(text)["input_ids"]
    assert runner.encode(text) == prompt  # genai's tokenizer reads the folder's files as transformers does
    assert runner.decode(prompt) == text
    model = AutoModelForCausalLM.from_pretrained(lms["llama"]).eval()
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(24):  # greedy with the EOS masked, as genai's exact-length generation does
            logits = model(torch.tensor([seq])).logits[0, -1]
            logits[EOS] = -float("inf")
            seq.append(int(logits.argmax()))
    ours = runner.generate(prompt, 24, eos_ids=())
    assert ours == seq[len(prompt):]
    assert len(set(ours)) > 3  # a real sequence, not one token repeated
    stop = ours[5]
    assert runner.generate(prompt, 24, eos_ids=(stop,)) == ours[:ours.index(stop) + 1]
    sampled = runner.generate(prompt, 24, greedy=False, seed=7, eos_ids=())
    assert sampled == runner.generate(prompt, 24, greedy=False, seed=7, eos_ids=()) and len(sampled) == 24


def rtn_logits(hf_dir: Path, window: np.ndarray, bits: int, block: int = 32) -> np.ndarray:
    """torch's logits with every Linear and the embedding rounded to ``bits`` symmetric blocks of ``block`` (RTN):
    what an int4/int8 weight-only file should lose, computed without ONNX Runtime."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    qmax = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                w = module.weight.reshape(module.weight.shape[0], -1, block)
                scale = w.abs().amax(-1, keepdim=True) / qmax
                module.weight.copy_((torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale).reshape(
                    module.weight.shape))
        return model(torch.from_numpy(window)).logits[0].numpy()


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


@pytest.mark.slow
def test_int4_and_int8_lose_what_rounding_their_weights_loses(lms, exported):
    """Measured on this random model (weights drawn at 0.2, wider than a trained model's): int4 block 32 has
    a relative logit error of 0.55 (mean cosine 0.85, top-1 agreement 0.41), RTN int4 in torch 0.59; int8
    0.043 (cosine 0.999), RTN int8 in torch 0.036. Each file must err like its rounding, not more."""
    from edgekit.runtimes.genai import GenaiRunner

    window = window_of(lms["llama"])
    ref = torch_logits(lms["llama"], window)
    errors = {}
    for precision, bits in (("int4", 4), ("int8", 8)):
        ours = GenaiRunner(exported[precision]).logits(window)
        errors[precision] = relative_error(ours, ref)
        rounded = relative_error(rtn_logits(lms["llama"], window, bits), ref)
        assert 0.5 * rounded < errors[precision] < 2 * rounded, (precision, errors[precision], rounded)
        assert set(GenaiExport.read(exported[precision]).precision_map[n]
                   for n in quantized_nodes(exported[precision])) == {precision}
    assert 1e-3 < errors["int8"] < errors["int4"] / 5
    sizes = {p: (exported[p] / "model.onnx.data").stat().st_size for p in ("fp32", "int8", "int4")}
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"]


@pytest.mark.slow
def test_chosen_matmuls_at_int8_in_an_int4_file(lms, tmp_path):
    log = io.StringIO()
    node = "/model/layers.0/mlp/down_proj/MatMul"
    folder = export_genai(lms["llama"], tmp_path / "mixed", precision="int4", algo="rtn",
                          int8_layers=(node, "lm_head"), log=log)
    precisions = GenaiExport.read(folder).precision_map
    assert precisions[node] == precisions["/lm_head/MatMul"] == "int8"
    assert precisions["/model/layers.1/mlp/down_proj/MatMul"] == "int4"
    assert "--target_options" in log.getvalue()
    assert precisions["/model/embed_tokens/Gather"] == "fp32"  # the builder unties it with exact names


@pytest.mark.slow
def test_the_lm_head_at_int8_keeps_the_tied_embedding_quantized(lms, tmp_path):
    precisions = GenaiExport.read(export_genai(lms["llama"], tmp_path / "kqm", precision="int4",
                                               algo="k_quant_mixed")).precision_map
    assert precisions["/lm_head/MatMul"] == "int8" and precisions["/model/embed_tokens/Gather"] == "int8"
    assert precisions["/model/layers.0/mlp/down_proj/MatMul"] == "int8"  # mixed_layers: the first eighth
    assert precisions["/model/layers.1/mlp/up_proj/MatMul"] == "int4"


@pytest.mark.slow
def test_bench_measures_the_folder(exported):
    from edgekit.measure.lm_bench import bench_lm
    from edgekit.runtimes.genai import folder_bytes

    folder = exported["int4"]
    bench = bench_lm(folder, threads=1, prompt_tokens=32, new_tokens=16, context=128, runs=2)
    assert bench.prefill_tokens_per_s > 0 and bench.decode_tokens_per_s > 0 and bench.ttft_ms > 0
    assert bench.context_decode_tokens_per_s > 0 and len(bench.decode_by_run) == 2
    assert bench.peak_rss_mb >= bench.loaded_rss_mb > bench.base_rss_mb > 0
    assert bench.model_bytes == folder_bytes(folder) == sum(p.stat().st_size for p in folder.iterdir())
    assert bench.kv_cache_bytes == 2 * 2 * 2 * 16 * 128 * 4  # layers, KV heads, head size, context, fp32
    assert bench.cpu["cores"] >= 1 and bench.runtime == "onnxruntime-genai"
    with pytest.raises(UsageError, match="longer than the model's context"):
        bench_lm(folder, prompt_tokens=200, new_tokens=100)


@pytest.mark.slow
def test_a_qwen2_model_exports_and_matches_torch(lms, tmp_path):
    from edgekit.runtimes.genai import GenaiRunner

    folder = export_genai(lms["qwen2"], tmp_path / "qwen2", precision="fp32")
    assert GenaiExport.read(folder).architecture == "Qwen2ForCausalLM"
    window = window_of(lms["qwen2"], 32)
    assert np.abs(GenaiRunner(folder).logits(window) - torch_logits(lms["qwen2"], window)).max() < 1e-3


@pytest.mark.slow
def test_an_architecture_the_builder_does_not_map_is_a_stage_error(lms, tmp_path):
    out = tmp_path / "gpt2"
    with pytest.raises(StageError) as info:
        export_genai(lms["gpt2"], out, precision="int4")
    assert info.value.stage == "export onnx int4"
    assert "cannot hold GPT2LMHeadModel" in info.value.reason and "\n" not in info.value.reason
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.slow
def test_a_builder_failure_names_its_reason_and_leaves_nothing(lms, tmp_path):
    out = tmp_path / "bad"
    out.mkdir()  # an empty folder made for it is replaced; on failure it stays as it was
    with pytest.raises(StageError) as info:
        export_genai(lms["llama"], out, precision="int4", int8_layers=("/model/layers.7/mlp/down_proj/MatMul",))
    assert "did not match an emitted node: /model/layers.7/mlp/down_proj/MatMul" in info.value.reason
    assert out.is_dir() and not any(out.iterdir()) and [p.name for p in tmp_path.iterdir()] == ["bad"]
    shutil.rmtree(out)


@pytest.mark.slow
def test_a_graph_that_does_not_load_is_caught(lms, tmp_path):
    """onnxruntime-genai 0.18's builder exits 0 with a graph ONNX Runtime refuses when the default algo puts the
    LM head of a model with tied embeddings at int8; the export's own load check catches it and says why."""
    out = tmp_path / "tied"
    with pytest.raises(StageError) as info:
        export_genai(lms["llama"], out, precision="int4", int8_layers=("lm_head",))
    assert "the builder wrote a model ONNX Runtime cannot load" in info.value.reason
    assert "algo='rtn' or 'k_quant' does not" in info.value.reason and not out.exists()
