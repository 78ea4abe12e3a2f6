"""BuildOptions: one frozen, validated object; unknown keys and bad values are errors that name the option."""
import dataclasses

import pytest

import edgekit
from edgekit.core.errors import UsageError
from edgekit.pipeline.options import BuildOptions


def test_keywords_and_the_object_are_the_same_options():
    opts = BuildOptions.of(profile="mobile", formats=["onnx"], keep=["conv1"], bits=8, prune_ratio=0.5)
    assert opts == BuildOptions(profile="mobile", formats=("onnx",), keep=("conv1",), bits=8, prune_ratio=0.5)
    assert opts.overrides == {"quantize.weight_bits": 8, "prune.max_ratio": 0.5, "prune.keep": ("conv1",)}
    prof = opts.resolved_profile()
    assert prof.name == "mobile" and prof.quantize.weight_bits == 8 and prof.prune.max_ratio == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.bits = 4  # type: ignore[misc]


@pytest.mark.parametrize("bad, words", [
    ({"bits": 3}, "build option 'bits' must be one of 4, 8, 16, 32, got 3"),
    ({"task": "ranking"}, "build option 'task' must be one of classification, regression, generic, got 'ranking'"),
    ({"calibration": "mse"}, "build option 'calibration' must be one of minmax, entropy, percentile, got 'mse'"),
    ({"prune_method": "magic"}, "build option 'prune_method' must be one of structured, unstructured, none"),
    ({"prune_ratio": 1.5}, "build option 'prune_ratio' must be in [0, 1), got 1.5"),
    ({"lowrank": -0.1}, "build option 'lowrank' must be in [0, 1), got -0.1"),
    ({"calib_samples": 0}, "build option 'calib_samples' must be an integer >= 1, got 0"),
    ({"threads": -1}, "build option 'threads' must be an integer >= 0, got -1"),
    ({"share_bits": 9}, "build option 'share_bits' must be at most 8, got 9"),
    ({"formats": ()}, "build option 'formats' must name at least one format, got ()"),
    ({"output_tasks": {"prob": "probability:x"}}, "build option 'output_tasks' prob:"),
    ({"static_shape": {"time": 0}}, "build option 'static_shape' time: the size must be a positive integer, got 0"),
])
def test_a_bad_value_is_a_usage_error_naming_the_option(bad, words):
    with pytest.raises(UsageError) as err:
        BuildOptions(**bad)
    assert words in str(err.value) and err.value.exit_code == 2


def test_an_unknown_option_is_named_with_a_suggestion():
    with pytest.raises(UsageError, match=r"unknown build option 'prune_ration' \(did you mean 'prune_ratio'\?\)"):
        BuildOptions.of(prune_ration=0.5)
    with pytest.raises(UsageError, match=r"unknown build option 'trheads'"):
        edgekit.build(trheads=2)  # the keyword form checks before any work
    with pytest.raises(UsageError, match=r"unknown key 'bitz' \(did you mean 'bits'\?\)"):
        BuildOptions.from_dict({"bitz": 4}, where="options.json")
    with pytest.raises(TypeError, match="either a BuildOptions or keyword options"):
        edgekit.build(None, BuildOptions(), bits=4)
