"""Stateful OpenVINO LM folders beyond the example's build (tests/test_lm_build.py): optimum-intel's exporter on the
Qwen2 and Gemma 3 families built from configs (no download), the IR's logits in OpenVINO against torch's and
openvino-genai's greedy tokens against transformers'; NNCF's ladder as a unit with given perplexities; the exporter's
setup named in one line when it is missing."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino_genai")
pytestmark = pytest.mark.slow
sys.path.insert(0, str(Path(__file__).parent))
from lm_helpers import CORPUS, save_folder, tiny_model, tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.mark.parametrize("kind", ["qwen2", "gemma"])
def test_optimum_intels_ir_matches_torch_in_openvino_and_openvino_genai(kind, tokenizer, tmp_path):
    import torch

    from edgekit.export.openvino_lm import OvLmOptions, compress, export_base, weight_types
    from edgekit.runtimes.openvino_lm import OvLmFacts, OvLmRunner

    model = tiny_model(kind, tokenizer, hidden_size=64)
    folder = save_folder(model, tokenizer, tmp_path / kind)
    log = io.StringIO()
    base = export_base(folder, tmp_path / f"{kind}-ov", log)
    facts = OvLmFacts.read(base)
    assert facts.layers == 2 and facts.kv_heads == 2 and facts.vocab_size == len(tokenizer)
    window = np.asarray([tokenizer.encode(CORPUS[:400], add_special_tokens=False)[:48]])
    with torch.inference_mode():
        want = model(torch.as_tensor(window)).logits[0].float().numpy()
    # the IR itself, at f32 (a CPU with AVX512-BF16 or AMX runs it in bf16 by default: 3e-3 off here)
    runner = OvLmRunner(base, threads=1, context=64, precision="f32")
    got = runner.logits(window)
    assert got.shape == want.shape and np.abs(got - want).max() < 2e-3, np.abs(got - want).max()
    # openvino-genai's own greedy loop (its KV cache) gives transformers' greedy tokens
    prompt = window[0, :12].tolist()
    with torch.inference_mode():
        ref = model.generate(torch.as_tensor([prompt]), max_new_tokens=10, do_sample=False,
                             eos_token_id=None, pad_token_id=facts.eos_token_ids[0])[0, 12:].tolist()
    assert runner.generate(prompt, 10, ignore_eos=True) == ref
    assert runner.tokenize("The quick brown fox") == tokenizer.encode("The quick brown fox", add_special_tokens=False)
    # int8 weights: 8-bit matrices in the IR, logits still close
    q8 = compress(base, tmp_path / f"{kind}-int8", OvLmOptions("int8_asym"), None, log)
    assert weight_types(q8 / "openvino_model.xml").get("int8", 0) >= 8
    got8 = OvLmRunner(q8, threads=1, context=64).logits(window)
    assert np.abs(got8 - want).max() < 0.2 and (got8.argmax(-1) == want.argmax(-1)).mean() > 0.9


def test_an_architecture_the_exporter_does_not_know_is_one_line(tokenizer, tmp_path):
    """optimum-intel 2.2.0 has no OpenVINO config for Helium (a causal LM transformers knows): the stage fails with
    the exporter's reason in one line, which a build lists as the format's failure while the others ship."""
    import transformers

    from edgekit.core.errors import StageError
    from edgekit.export.openvino_lm import export_base

    config = transformers.HeliumConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       head_dim=16, max_position_embeddings=128)
    model = transformers.AutoModelForCausalLM.from_config(config)
    folder = save_folder(model, tokenizer, tmp_path / "helium")
    with pytest.raises(StageError) as info:
        export_base(folder, tmp_path / "helium-ov", io.StringIO())
    assert info.value.stage == "export openvino" and "\n" not in info.value.reason
    assert info.value.reason.startswith("optimum-intel's exporter failed (exit 1):") and "helium" in info.value.reason
    assert not (tmp_path / "helium-ov" / "openvino_model.xml").exists()


def test_the_openvino_ladder_stops_at_the_first_rung_within_budget(tmp_path, tokenizer):
    """The ladder as a unit: real folders from NNCF, a judge whose perplexity increases are given."""
    from edgekit.core.lm_record import LmQualityFigures
    from edgekit.export.openvino_lm import export_base
    from edgekit.quantize.openvino_lm import climb

    model = tiny_model("llama", tokenizer, hidden_size=64)
    base = export_base(save_folder(model, tokenizer, tmp_path / "llama"), tmp_path / "base", io.StringIO())
    given = [0.09, 0.07, 0.04, 0.01, 0.0]
    judged = []

    def judge(path):
        import json

        judged.append(path.name)
        rise = given.pop(0)
        assert json.loads((path / "config.json").read_text())["model_type"] == "llama"
        return LmQualityFigures(10 * (1 + rise), 10.0, rise, 0.01, 0.9, 2, 10)

    windows = np.random.default_rng(0).integers(4, len(tokenizer), size=(4, 32))
    chosen, attempts, notes = climb(base, windows, tmp_path / "work", judge, 4, 0.05, 600.0, io.StringIO())
    assert judged == ["attempt-0", "attempt-1", "attempt-2"]  # stops at the first rung within +5%
    assert [a.verdict for a in attempts] == ["over budget", "over budget", "within budget"]
    assert chosen.label == "int4_asym, group 64, AWQ, scale estimation" and attempts[2].chosen
    assert chosen.figures["weights"].get("int4", 0) >= 8  # the data-aware rung really is 4-bit
    # optimum-intel's fp32 IR pins an f16 KV cache; a compressed rung leaves it to the CPU plugin, as optimum-intel's
    # own compressed export does
    import openvino as ov

    option = ["runtime_options", "KV_CACHE_PRECISION"]
    assert ov.Core().read_model(base / "openvino_model.xml").has_rt_info(option)
    assert not ov.Core().read_model(chosen.made[0].path / "openvino_model.xml").has_rt_info(option)
    assert notes == []  # int4 held: nothing to explain


def test_a_missing_exporter_is_one_line_naming_the_setup_step(tmp_path, tokenizer):
    folder = save_folder(tiny_model("llama", tokenizer), tokenizer, tmp_path / "llama")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "empty-cache"))
    env.pop("EDGEKIT_OPTIMUM_INTEL", None)
    r = subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", "build", str(folder),
                        "--formats", "openvino", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    (line,) = r.stderr.strip().splitlines()
    assert "optimum-intel's exporter is not set up for this environment" in line
    assert "run `edgekit setup optimum-intel` once" in line
    assert not (tmp_path / "out").exists()  # refused before anything was written
    env["EDGEKIT_OPTIMUM_INTEL"] = str(tmp_path / "no-python")
    r = subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", "build", str(folder),
                        "--formats", "openvino", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 2 and r.stderr.strip() == (
        f"edgekit: error: EDGEKIT_OPTIMUM_INTEL names no Python: {tmp_path / 'no-python'}")
