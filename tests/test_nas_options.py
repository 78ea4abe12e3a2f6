"""edgekit nas's options object and its verdict on the result (the CLI alone maps it to an exit code), with the
deterministic scorer of nas_helpers.py."""
from dataclasses import replace

import pytest

import edgekit
from edgekit.archsearch.options import NasOptions
from edgekit.core.errors import UsageError
from edgekit.targets.profiles import load_profile, with_overrides

from nas_helpers import SizeScorer, load, own_lock_dir, run, tiny_digits  # noqa: F401 (the fixture)


def test_no_feasible_trial_is_a_verdict_on_the_result_naming_the_budget(tmp_path):
    prof = with_overrides(load_profile("iot"), {"budget.flash_kb": 0.001})
    result, _ = run(tmp_path, profile=prof, trials=2)  # returned, not raised: the CLI maps it to exit 1
    assert not result.passed and "every trial broke flash_kb 0.001" in result.missed
    assert result.front == [] and result.bundle is None and result.bundle_passed is None  # promote_k=0: none asked
    assert (result.folder / "pareto.json").is_file() and len(load(result).trials) == 2
    asked, _ = run(tmp_path, profile=prof, trials=2, promote_k=1)
    assert asked.bundle_passed is False and not asked.passed and asked.failed_gates == []


class FinalBreaksDrop(SizeScorer):
    """Every proxy measurement holds the budgets; every full-recipe one loses 0.5 to quantization."""

    def measure(self, module, arrays, name, *, val_samples=None):
        m = super().measure(module, arrays, name, val_samples=val_samples)
        return replace(m, drop=0.5) if name.endswith("-final") else m


def test_no_promoted_member_within_the_budgets_is_a_verdict_on_the_result(tmp_path):
    prof = load_profile("iot")
    scorer = FinalBreaksDrop(prof)
    opts = NasOptions(data=tiny_digits(), profile=prof, out=tmp_path / "out", trials=2, grid="none", promote_k=1,
                      proxy_epochs=1, final_epochs=1, train_threads=1)
    result = edgekit.nas("builtin", opts, evaluator=scorer)  # the options object, as the CLI passes it
    assert len(load(result).trials) == 2 and result.front
    assert [c for c in scorer.calls if c.endswith("-final")] and len(result.promoted) == 1
    assert not result.passed and result.bundle_passed is False and result.chosen is None and result.bundle is None
    assert result.missed.startswith("no promoted member holds every budget after full training (trial ")
    assert "drop" in result.missed and result.promoted[0]["feasible"] is False


def test_nas_options_are_one_strict_object(tmp_path):
    from edgekit.archsearch.options import OptionError

    opts = NasOptions(trials=4, pick=7, hv_reference=[0.5, 2])
    assert opts.pick == "7" and opts.hv_reference == (0.5, 2) and opts.budget_s is None
    assert NasOptions().budget_s == 600.0 and NasOptions(time_budget_s=30).budget_s == 30
    assert NasOptions.from_dict(opts.to_dict()) == opts
    prof = with_overrides(load_profile("iot"), {"budget.flash_kb": 64.0})
    again = NasOptions.from_dict(NasOptions(profile=prof, out=tmp_path).to_dict())
    assert again.profile == prof and again.out == str(tmp_path)  # a profile object goes through a dict and back
    assert NasOptions(profile=prof, bits=8).device_profile().quantize.weight_bits == 8
    with pytest.raises(UsageError, match=r"unknown key 'trails' \(did you mean 'trials'\?\)"):
        NasOptions.from_dict({"trails": 3}, where="nas.json")
    with pytest.raises(UsageError, match=r"'trials' must be int, got '3'"):
        NasOptions.from_dict({"trials": "3"}, where="nas.json")
    for bad, words in [({"trials": 0}, "nas option trials must be an integer >= 1, got 0"),
                       ({"pick": "x"}, "nas option pick must be one of best, fastest, smallest or a trial number, "
                                       "got 'x'"),
                       ({"sampler": "x"}, "nas option sampler must be one of auto, tpe, gp, got 'x'"),
                       ({"sampler": "tp"}, "(did you mean 'tpe'?)"),
                       ({"grid": "fll"}, "nas option grid must be one of auto, full"),
                       ({"form": "flat"}, "nas option form must be one of auto, per-stage, compound"),
                       ({"bits": 3}, "nas option bits must be one of 4, 8, 16, 32, got 3"),
                       ({"time_budget_s": -1}, "nas option time_budget_s must be a number of seconds > 0, got -1"),
                       ({"promote_k": -1}, "promote_k must be an integer >= 0, got -1"),
                       ({"proxy_epochs": True}, "proxy_epochs must be an integer >= 1, got True"),
                       ({"hv_reference": (0.5, 0)}, "hv_reference must be (metric, p90 ms) with a p90 > 0"),
                       ({"profile": 3}, "nas option profile must be a profile name")]:
        with pytest.raises(OptionError) as err:
            NasOptions(**bad)
        assert words in str(err.value) and err.value.option == next(iter(bad)), str(err.value)
    with pytest.raises(UsageError, match=r"nas: unknown option 'trails' \(did you mean 'trials'\?\)"):
        edgekit.nas(trails=3)
    with pytest.raises(OptionError, match="nas option trials must be an integer >= 1, got 0"):
        edgekit.nas("builtin", NasOptions(trials=2), trials=0)  # keyword settings replace the options' fields, validated
