"""`edgekit build` on a language model, as a user runs it: the example LM (its test size, trained here in seconds)
as a Hugging Face folder, shipped to ONNX Runtime GenAI, judged by perplexity and greedy answers in the runtime,
timed in tokens/s, gated; the exit codes of a missed gate and of bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime_genai")

pytestmark = pytest.mark.slow


def cli(*args, cwd=None, timeout=900):
    return subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def tiny_dir(tinylm_test):
    return tinylm_test[0]  # a Hugging Face folder: config, safetensors, tokenizer, chat template


@pytest.fixture(scope="module")
def lm_bundle(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm")
    r = cli("build", tiny_dir, "--profile", "mobile", "--threads", "1", "--out", out, cwd=out)
    assert r.returncode == 0, r.stderr[-3000:]
    return r, out / f"{tiny_dir.name}-mobile"


def test_a_language_model_folder_builds_to_a_measured_genai_folder(lm_bundle, tiny_dir):
    r, bundle = lm_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    report = json.loads((bundle / "report.json").read_text())
    assert manifest["kind"] == "causal-lm" and manifest["passed"] is True
    (entry,) = manifest["files"]
    folder = bundle / entry["folder"]
    assert entry["format"] == "onnxruntime-genai" and entry["precision"] == "int4"
    assert {"genai_config.json", "model.onnx", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    # the shipped MatMuls really are 4-bit (read from the graph), and the folder is what the manifest hashes
    assert entry["precision_counts"].get("int4", 0) >= 8
    from edgekit.core.artifact import folder_digest

    assert folder_digest(folder) == (entry["sha256"], entry["bytes"])
    # quality in the runtime against torch fp32 on held-out windows: the tiny model at int4 stays within 5%
    q = entry["quality"]
    assert q["windows"] == 8 and q["positions"] == 8 * 255
    assert abs(q["perplexity"] / q["reference_perplexity"] - 1 - q["ppl_increase"]) < 1e-9
    assert -0.02 < q["ppl_increase"] <= 0.05 and q["top1_agreement"] > 0.8 and q["kl"] > 0
    # the source's own perplexity on that text beats the unigram baseline the example is trained against
    assert report["reference"]["perplexity"] == pytest.approx(q["reference_perplexity"], rel=1e-6)
    assert report["reference"]["perplexity"] < 150
    # speed and memory come from a fresh process running genai's generator
    s, m = entry["speed"], entry["memory"]
    assert s["decode_tokens_per_s"] > 50 and s["prefill_tokens_per_s"] > s["decode_tokens_per_s"]
    assert s["threads"] == 1 and s["prompt_tokens"] == 128 and m["context"] == 512
    assert m["peak_rss_mb"] >= m["loaded_rss_mb"] >= m["base_rss_mb"] > 0
    # every gate of the profile's [generate] section, with the measured value
    gates = {g["name"]: g for g in manifest["gates"]}
    assert set(gates) == {"perplexity", "decode_speed", "ttft", "rss", "file_size"}
    assert gates["perplexity"]["value"] == q["ppl_increase"] and gates["perplexity"]["limit"] == 0.05
    assert gates["decode_speed"]["value"] == s["decode_tokens_per_s"] and all(g["passed"] for g in gates.values())
    # the ladder's first rung (int4 RTN, asymmetric) was within the budget: one attempt, the one shipped
    (attempt,) = report["files"][0]["attempts"]
    assert attempt["chosen"] and attempt["verdict"] == "within budget" and attempt["drop"] == q["ppl_increase"]
    # the greedy answers: the source's and the file's, side by side
    answers = report["files"][0]["greedy_answers"]
    assert len(answers) == 4 and all(a["reference"] and a["answer"] for a in answers)
    text = (bundle / "report.md").read_text()
    assert "\n### Greedy answers\n" in text and "### Quantization ladder" in text and answers[0]["prompt"] in text
    assert f"{tiny_dir.name}_int4_genai" in r.stdout and "decode" in r.stdout and "perplexity gate passed" in r.stdout


def test_the_shipped_folder_runs_in_onnxruntime_genai_alone(lm_bundle):
    """What an app does: load the folder with onnxruntime-genai and generate, tokenizer included."""
    import onnxruntime_genai as og

    _, bundle = lm_bundle
    entry = json.loads((bundle / "manifest.json").read_text())["files"][0]
    model = og.Model(str(bundle / entry["folder"]))
    tokenizer = og.Tokenizer(model)
    ids = tokenizer.encode("The for statement is used to")
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 12, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(ids)
    new = []
    while not gen.is_done():
        gen.generate_next_token()
        new.append(int(gen.get_next_tokens()[0]))
    assert 1 <= len(new) <= 12 and tokenizer.decode(np.asarray(new, dtype=np.int32)) is not None


def test_fp32_matches_the_source_token_for_token(tiny_dir, tmp_path):
    """At 32 bits the folder is the source: perplexity equal to 1e-6 and every greedy answer identical (what the
    comparison would show for any file that loses nothing)."""
    from edgekit import build
    from edgekit.pipeline.lm import LmBuildResult

    result = build(str(tiny_dir), profile="server", bits=32, threads=1, out=tmp_path)
    assert isinstance(result, LmBuildResult) and result.passed, result.record.reasons
    (f,) = result.record.files
    assert f.precision == "fp32" and f.folder.endswith("_fp32_genai")
    assert abs(f.quality.ppl_increase) < 1e-6 and f.quality.top1_agreement == 1.0
    assert f.greedy and all(g.identical and g.stops_alike for g in f.greedy)


def test_a_budget_no_rung_meets_climbs_the_whole_ladder_and_exits_1(tiny_dir, tmp_path):
    profile = tmp_path / "strict.toml"
    profile.write_text('name = "strict-lm"\nextends = "mobile"\n\n[generate]\nmax_ppl_increase = 0.0\n'
                       'min_decode_tokens_per_s = 1000000000.0\nbench_context = 256\n')
    r = cli("build", tiny_dir, "--profile", profile, "--threads", "1", "--out", tmp_path / "out")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "edgekit: verdict: decode_speed gate MISSED" in r.stderr
    report = json.loads((tmp_path / "out" / f"{tiny_dir.name}-strict-lm" / "report.json").read_text())
    (f,) = report["files"]
    labels = [a["label"] for a in f["attempts"]]
    assert len(labels) == 4 and labels[-1].startswith("int8") and "RTN asymmetric" in labels[0]
    made = [a for a in f["attempts"] if a["drop"] is not None]
    assert made and all(a["verdict"] == "over budget" for a in made)
    chosen = [a for a in f["attempts"] if a["chosen"]]
    assert len(chosen) == 1 and chosen[0]["drop"] == min(a["drop"] for a in made)  # the most accurate ships
    assert any("no rung kept perplexity" in n for n in f["notes"])
    assert report["verdict"]["passed"] is False


@pytest.mark.parametrize("args, message", [
    (["--profile", "stm32h743"], "profile stm32h743 does not run language models"),
    (["--bits", "16"], "16-bit ONNX Runtime GenAI files are GPU files"),
    (["--prune-ratio", "0.5"], "prune.max_ratio do not apply to a language model build"),
    (["--formats", "tflite"], "format tflite is not a language-model format"),
    (["--data", "EMPTY"], "is empty; give some text"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_dir, tmp_path, args, message):
    (tmp_path / "empty.txt").write_text("\n\n")
    args = [str(tmp_path / "empty.txt") if a == "EMPTY" else a for a in args]
    r = cli("build", tiny_dir, *args, "--out", tmp_path / "out")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error:") and message in lines[0], lines
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing half-written


def test_bench_times_a_shipped_folder_in_tokens_per_second(lm_bundle):
    _, bundle = lm_bundle
    entry = json.loads((bundle / "manifest.json").read_text())["files"][0]
    folder = bundle / entry["folder"]
    r = cli("bench", folder, "--runs", "2", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    assert got["runtime"] == "onnxruntime-genai" and got["runs"] == 2 and len(got["decode_by_run"]) == 2
    assert got["decode_tokens_per_s"] > 50 and got["prompt_tokens"] == 128 and got["new_tokens"] == 128
    assert got["model_bytes"] == entry["bytes"] and got["kv_cache_bytes"] > 0
    r = cli("bench", folder, "--device", "adb:X")
    assert r.returncode == 2 and r.stderr.strip() == (
        "edgekit: error: --device does not apply to a language model's folder yet (it is timed on this machine, "
        "with token prompts)")
