"""ExecuTorch LM folders: optimum-executorch's program (static KV cache, custom SDPA, XNNPACK) on the Qwen2 and Gemma 3
families built from configs (no download), its logits in ExecuTorch's runtime against torch's and its greedy tokens
against transformers'; torchao's ladder as a unit with given perplexities; the example LM built with
`--formats executorch` as a user runs it, then timed and validated from the folder alone; the exporter's setup and
an unloadable tokenizer named in one line."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("executorch")
pytest.importorskip("pytorch_tokenizers")
pytestmark = pytest.mark.slow
sys.path.insert(0, str(Path(__file__).parent))
from lm_helpers import CORPUS, save_folder, tiny_model, tiny_tokenizer  # noqa: E402


def cli(*args, cwd=None, env=None, timeout=900):
    return subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def exported(folder: Path, dest: Path, options, max_seq_len: int = 64) -> Path:
    from edgekit.export.executorch_lm import export, write_record

    path, report = export(folder, dest, options, max_seq_len, io.StringIO())
    write_record(path, options, max_seq_len, report)
    return path


@pytest.mark.parametrize("kind", ["qwen2", "gemma3"])
def test_optimum_executorchs_program_matches_torch_in_executorchs_runtime(kind, tokenizer, tmp_path):
    import torch

    from edgekit.export.executorch_lm import EtLmOptions
    from edgekit.runtimes.executorch_lm import EtLmFacts, EtLmRunner

    model = tiny_model(kind, tokenizer, hidden_size=64, intermediate_size=96)
    folder = save_folder(model, tokenizer, tmp_path / kind)
    fp32 = exported(folder, tmp_path / f"{kind}-fp32", EtLmOptions("fp32", embedding="none"))
    facts = EtLmFacts.read(fp32)
    assert facts.layers == 2 and facts.kv_heads == 2 and facts.context_length == 64
    assert facts.tokenizer == "tokenizer.json" and facts.vocab_size == len(tokenizer)
    head = getattr(model.config, "head_dim", None) or 64 // 4
    assert facts.head_size == head and facts.kv_cache_bytes() == 2 * 2 * 2 * head * 64 * 4  # the static cache, fp32
    window = np.asarray([tokenizer.encode(CORPUS[:400], add_special_tokens=False)[:48]])
    with torch.inference_mode():
        want = model(torch.as_tensor(window)).logits[0].float().numpy()
    runner = EtLmRunner(fp32)
    got = runner.logits(window)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-3, np.abs(got - want).max()
    again = runner.logits(window[:, :20])  # a later window from position 0 overwrites the cache
    assert np.abs(again - want[:20]).max() < 1e-3
    # the whole cache: one call takes at most 63 tokens, so 64 go in two pieces; 65 do not fit
    full = np.asarray([tokenizer.encode(CORPUS, add_special_tokens=False)[:65]])
    with torch.inference_mode():
        want64 = model(torch.as_tensor(full[:, :64])).logits[0].float().numpy()
    assert facts.prefill_limit == 63 and np.abs(runner.logits(full[:, :64]) - want64).max() < 1e-3
    from edgekit.core.errors import UsageError

    with pytest.raises(UsageError, match="does not fit the program's static cache"):
        runner.logits(full)
    # the runner's loop (the prompt in one call, then a call per token) gives transformers' greedy tokens, also with
    # the prompt fed in chunks
    prompt = window[0, :12].tolist()
    with torch.inference_mode():
        ref = model.generate(torch.as_tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=None,
                             pad_token_id=facts.eos_token_ids[0])[0, 12:].tolist()
    assert runner.generate(prompt, 10, ignore_eos=True) == ref == runner.generate(prompt, 10, ignore_eos=True, chunk=5)
    assert runner.tokenize("The quick brown fox") == tokenizer.encode("The quick brown fox", add_special_tokens=False)
    with pytest.raises(UsageError, match="static cache"):
        runner.generate(prompt, 60)


def test_the_executorch_ladder_stops_at_the_first_rung_within_budget(tmp_path, tokenizer):
    """The ladder as a unit: a real program from optimum-executorch, a judge whose perplexity increase is given
    (the climb past a rung over budget: the screen test below, and run_attempts' own tests). The 64-wide layers
    take groups of 64 where 128 is asked."""
    from edgekit.core.lm_record import LmQualityFigures
    from edgekit.quantize.executorch_lm import climb, rungs

    assert [r.label for r in rungs(4)] == [
        "8da4w group 128, embeddings 8w", "8da4w group 64, embeddings 8w", "8da4w group 32, embeddings 8w",
        "8da4w group 32, lm_head 8da8w, embeddings 8w", "8da8w per channel, embeddings 8w (the 4-bit ladder's last rung)"]
    assert [r.label for r in rungs(8)] == ["8da8w per channel, embeddings 8w"] and rungs(32)[0].label == "fp32"
    folder = save_folder(tiny_model("llama", tokenizer, hidden_size=64, intermediate_size=96), tokenizer,
                         tmp_path / "llama")
    given = [0.01]
    judged = []

    def judge(path):
        judged.append(path.name)
        assert json.loads((path / "edgekit_export.json").read_text())["format"] == "executorch"
        rise = given.pop(0)
        return LmQualityFigures(10 * (1 + rise), 10.0, rise, 0.01, 0.9, 2, 10)

    chosen, attempts, notes = climb(folder, 64, tmp_path / "work", judge, 4, 0.05, 600.0, io.StringIO())
    assert judged == ["attempt-0"]  # the first rung is within +5%: nothing more is exported
    assert [a.verdict for a in attempts] == ["within budget"] and attempts[0].chosen
    # width 64: group 128 falls back to 64; the 96-wide down projections to 32
    assert attempts[0].figures["weights"] == {"embedding 8w per channel": 1, "linear 8da4w g64": 12,
                                              "linear 8da4w g32": 2, "lm_head 8da4w g64": 1}
    assert chosen.label == "8da4w group 128, embeddings 8w" and notes == []


def test_the_torch_screen_forecasts_each_rung(tmp_path, tinylm_test):
    """The screen: the model quantized as each rung asks, run in torch on the given windows (no export); finer
    steps lose less, and a rung screened over the budget is listed without an export while the last rung is
    exported whatever its forecast."""
    from edgekit.core.lm_record import LmQualityFigures
    from edgekit.export.executorch_lm import EtLmOptions, screen
    from edgekit.quantize.executorch_lm import climb

    from transformers import AutoTokenizer

    folder = tinylm_test[0]  # trained: quantization costs it perplexity (a random model's is flat)
    ids = AutoTokenizer.from_pretrained(folder).encode(CORPUS, add_special_tokens=False)
    windows = np.asarray([ids[i:i + 48] for i in (0, 40, 80)])
    coarse, fine = screen(folder, [EtLmOptions("8da4w", 0), EtLmOptions("8da8w", 0)], windows, io.StringIO())
    assert 0 < fine < coarse < 1, (coarse, fine)
    judged = []

    def judge(path):
        judged.append(path.name)
        return LmQualityFigures(10.0, 10.0, 0.0, 0.0, 1.0, 2, 10)

    # a budget below every 4-bit forecast: the four 4-bit rungs are screened out, only 8da8w is exported
    chosen, attempts, _ = climb(folder, 64, tmp_path / "work", judge, 4, fine / 2, 600.0, io.StringIO(),
                                calibration=windows)
    assert judged == ["attempt-0"] and chosen.label.startswith("8da8w")
    assert [a.measured_in for a in attempts] == ["torch (screen)"] * 4 + ["ExecuTorch"]
    assert all(a.error.startswith("screened out in torch: +") and a.error.endswith("; not exported")
               for a in attempts[:4])
    assert all(a.figures["screen_ppl_increase"] > fine / 2 for a in attempts[:4])
    # the 8-bit program: every projection 8da8w, the embedding int8 per row
    assert chosen.figures["weights"] == {"embedding 8w per channel": 1, "linear 8da8w per channel": 14,
                                         "lm_head 8da8w per channel": 1}, chosen.figures["weights"]


def test_an_unloadable_tokenizer_and_a_missing_exporter_are_one_line(tmp_path, tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from edgekit.core.errors import StageError
    from edgekit.export.executorch_lm import runner_tokenizer

    # a Metaspace pre-tokenizer (SentencePiece-style) without its tokenizer.model: pytorch-tokenizers cannot load it
    tok = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    (tmp_path / "sp").mkdir()
    tok.save(str(tmp_path / "sp" / "tokenizer.json"))
    with pytest.raises(StageError) as info:
        runner_tokenizer(tmp_path / "sp")
    assert info.value.stage == "export executorch" and "\n" not in info.value.reason
    assert "pytorch-tokenizers" in info.value.reason and "tokenizer.json" in info.value.reason
    folder = save_folder(tiny_model("llama", tokenizer), tokenizer, tmp_path / "llama")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "empty-cache"))
    env.pop("EDGEKIT_OPTIMUM_EXECUTORCH", None)
    r = cli("build", folder, "--formats", "executorch", "--out", tmp_path / "out", env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    (line,) = r.stderr.strip().splitlines()
    assert "optimum-executorch's exporter is not set up for this environment" in line
    assert "run `edgekit setup optimum-executorch` once" in line
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.fixture(scope="module")
def et_bundle(tinylm_test, tmp_path_factory):
    tiny_dir = tinylm_test[0]
    out = tmp_path_factory.mktemp("lm-et")
    r = cli("build", tiny_dir, "--profile", "mobile", "--formats", "executorch", "--threads", "1", "--out", out,
            cwd=out)
    assert r.returncode == 0, r.stderr[-3000:]
    return r, out / f"{tiny_dir.name}-mobile", tiny_dir


def test_the_executorch_folder_is_judged_and_timed_in_executorch(et_bundle):
    """`--formats executorch`: the example's 4-bit program (8da4w in groups of 64, the ladder's first rung holds),
    judged in ExecuTorch against torch, its SentencePiece tokenizer (the example's tokenizer.json has a Metaspace
    pre-tokenizer pytorch-tokenizers does not take) compared with the source's, timed in a fresh process."""
    r, bundle, tiny_dir = et_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    (entry,) = manifest["files"]
    folder = bundle / entry["folder"]
    assert entry["folder"] == f"{tiny_dir.name}_int4_executorch" and entry["runtime"] == "executorch"
    assert {"model.pte", "tokenizer.model", "config.json", "edgekit_export.json"} <= {p.name for p in folder.iterdir()}
    export = json.loads((folder / "edgekit_export.json").read_text())
    assert export["options"] == {"linear": "8da4w", "group_size": 128, "head": "same", "embedding": "8w",
                                 "qparams": "hqq_scale_only"}
    assert export["tokenizer"] == "tokenizer.model" and export["exporter"].startswith("optimum-executorch 1.1.0")
    assert export["max_seq_len"] == 512 and export["metadata"]["get_max_seq_len"] == 512  # the model's context
    assert entry["precision_counts"] == export["weight_types"] == {
        "embedding 8w per channel": 1, "linear 8da4w g64": 14, "lm_head 8da4w g64": 1}
    q = entry["quality"]
    assert q["windows"] == 8 and -0.02 < q["ppl_increase"] <= 0.05 and q["top1_agreement"] > 0.8
    assert entry["greedy"]["prompts"] == 4 and entry["greedy"]["identical"] >= 1
    notes = json.loads((bundle / "report.json").read_text())["files"][0]["notes"]
    assert "executorch's tokenizer splits all 4 prompts as the source's does" in notes
    s = entry["speed"]
    assert s["decode_tokens_per_s"] > 50 and s["threads"] == 1 and s["ttft_ms"] > 0
    assert entry["memory"]["kv_cache_bytes"] == 2 * 2 * 2 * 16 * 512 * 4  # K+V x layers x heads x size x 512, fp32
    assert manifest["recommended"] == entry["folder"]
    assert "Made by optimum-executorch 1.1.0" in (bundle / "report.md").read_text()
    assert "Registering" not in r.stdout + r.stderr  # pytorch-tokenizers' C++ log stays off the terminal


def test_the_executorch_folder_runs_alone_and_is_benched_and_validated(et_bundle):
    """What an app does: ExecuTorch's own TextLLMRunner (C++: the program, the tokenizer file, its sampler) loads
    the folder and writes text; `edgekit bench` and `edgekit validate` take the folder."""
    _, bundle, tiny_dir = et_bundle
    (entry,) = json.loads((bundle / "manifest.json").read_text())["files"]
    folder = bundle / entry["folder"]
    code = ("import sys, json, executorch.extension.llm.custom_ops.custom_ops, executorch.kernels.quantized\n"
            "from executorch.extension.llm.runner import TextLLMRunner, GenerationConfig\n"
            "r = TextLLMRunner(sys.argv[1] + '/model.pte', sys.argv[1] + '/tokenizer.model'); out = []\n"
            "r.generate('The for statement is used to', GenerationConfig(echo=False, max_new_tokens=12, "
            "temperature=0.0), token_callback=out.append)\nprint(json.dumps(''.join(out)))")
    r = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1]).strip(), r.stderr[-2000:]
    r = cli("bench", folder, "--runs", "2", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    assert got["runtime"] == "executorch" and len(got["decode_by_run"]) == 2 and got["decode_tokens_per_s"] > 50
    r = cli("validate", folder, "--model", tiny_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    rise = float(next(line for line in r.stdout.splitlines() if "increase" in line).split()[1].rstrip("%"))
    assert rise == pytest.approx(100 * entry["quality"]["ppl_increase"], abs=0.006), r.stdout
