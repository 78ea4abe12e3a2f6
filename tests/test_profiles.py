import pytest

from edgekit.core.errors import UsageError
from edgekit.targets.profiles import list_profiles, load_profile, with_overrides


@pytest.mark.parametrize("name, ratio, bits, threads", [("mobile", 0.7, 8, 4), ("iot", 0.8, 4, 1), ("server", 0.5, 16, 0)])
def test_seed_profiles(name, ratio, bits, threads):
    p = load_profile(name)
    assert p.prune.method == "structured" and p.prune.max_ratio == ratio
    assert p.quantize.weight_bits == bits
    assert p.target.threads == threads
    assert p.budget.max_accuracy_drop > 0 and p.budget.p90_latency_ms > 0


def test_iot_and_mobile_have_memory_budgets():
    assert load_profile("iot").budget.flash_kb and load_profile("iot").budget.ram_kb
    assert load_profile("mobile").budget.flash_kb and load_profile("mobile").budget.rss_mb


def test_server_uses_every_core():
    import os
    assert load_profile("server").target.resolved_threads == os.cpu_count()


def test_boards_extend_base_profiles():
    names = {p.name for p in list_profiles()}
    assert {"iot", "mobile", "server", "rpi4", "stm32h743"} <= names
    rpi = load_profile("rpi4")
    assert rpi.extends == "mobile" and rpi.quantize.weight_bits == 8 and rpi.budget.p90_latency_ms == 40.0
    stm = load_profile("stm32h743")
    assert stm.extends == "iot" and stm.budget.flash_kb == 1536 and stm.quantize.weight_bits == 4


def test_profile_from_path_extends_by_name_and_by_relative_path(tmp_path):
    (tmp_path / "base.toml").write_text('name = "base"\nextends = "iot"\n[budget]\np90_latency_ms = 5.0\n')
    (tmp_path / "board.toml").write_text('name = "board"\nextends = "base.toml"\n[target]\nthreads = 2\n')
    p = load_profile(str(tmp_path / "board.toml"))
    assert (p.name, p.target.threads, p.budget.p90_latency_ms, p.prune.max_ratio) == ("board", 2, 5.0, 0.8)


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\nextends = "iot"\n[prune]\nmax_ratoi = 0.5\n')
    with pytest.raises(UsageError) as err:
        load_profile(str(path))
    assert "prune.max_ratoi" in str(err.value) and "bad.toml" in str(err.value)
    assert "did you mean 'max_ratio'" in str(err.value)


@pytest.mark.parametrize("body, needle", [
    ('[prune]\nmax_ratio = 1.5\n', "max_ratio must be in [0, 1), got 1.5"),
    ('[quantize]\nweight_bits = 3\n', "weight_bits must be 4, 8, 16 or 32, got 3"),
    ('[target]\nthreads = "four"\n', "'target.threads' must be int, got 'four'"),
    ('[target]\nruntimes = ["tensorrt"]\n', "unknown runtime 'tensorrt'"),
])
def test_bad_values_are_named(tmp_path, body, needle):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\nextends = "iot"\n' + body)
    with pytest.raises(UsageError) as err:
        load_profile(str(path))
    assert needle in str(err.value) and "bad.toml" in str(err.value)


def test_unknown_profile_suggests():
    with pytest.raises(UsageError, match="unknown profile 'mobil'.*did you mean 'mobile'"):
        load_profile("mobil")


def test_extends_cycle(tmp_path):
    (tmp_path / "a.toml").write_text('name = "a"\nextends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('name = "b"\nextends = "a.toml"\n')
    with pytest.raises(UsageError, match="loops back"):
        load_profile(str(tmp_path / "a.toml"))


def test_overrides_return_a_new_profile():
    base = load_profile("iot")
    new = with_overrides(base, {"target.threads": 2})
    assert new.target.threads == 2 and base.target.threads == 1
    assert new.to_dict()["prune"] == base.to_dict()["prune"]


def test_errors_name_the_file_that_holds_the_key(tmp_path):
    (tmp_path / "base.toml").write_text('name = "base"\nextends = "iot"\n[bench]\nbogus = 1\n')
    (tmp_path / "child.toml").write_text('name = "child"\nextends = "base.toml"\n')
    with pytest.raises(UsageError, match=r"base.toml: unknown key 'bench.bogus'"):
        load_profile(str(tmp_path / "child.toml"))
    (tmp_path / "orphan.toml").write_text('name = "o"\nextends = "gone.toml"\n')
    with pytest.raises(UsageError, match=r"orphan.toml: extends = 'gone.toml': profile file gone.toml not found"):
        load_profile(str(tmp_path / "orphan.toml"))
