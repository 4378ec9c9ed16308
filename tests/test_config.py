"""Hardware profiles and model configs load, and bad files fail naming file and field."""
import copy

import pytest
import yaml

from sparq_perf.errors import UserError
from sparq_perf.hardware import builtin_profiles, get_profile, load_profile_file
from sparq_perf.models import builtin_models, get_model

REQUIRED = ["a100-40gb-sxm", "a100-80gb-sxm", "a100-80gb-pcie", "h100-sxm", "h100-pcie", "h200", "l4", "a10g",
            "l40s", "rtx4090", "mi300x", "ipu-gc200", "ipu-bow", "epyc-7763"]


def test_every_required_profile_ships_and_loads():
    assert set(REQUIRED) <= set(builtin_profiles())


def test_aliases_resolve_to_stated_defaults():
    assert get_profile("h100").name == "h100-sxm"
    assert get_profile("a100").name == "a100-80gb-sxm"


def test_datasheet_anchors():
    # SPARQ.md section 6
    assert get_profile("h100-sxm").memory_tiers[0].peak_bandwidth_bytes_per_s == 3.35e12
    assert get_profile("a100-40gb-sxm").memory_tiers[0].peak_bandwidth_bytes_per_s == 1555e9
    assert get_profile("h200").memory_tiers[0].peak_bandwidth_bytes_per_s == 4.8e12
    ipu = get_profile("ipu-bow")
    assert ipu.kind == "ipu" and len(ipu.memory_tiers) == 2
    assert ipu.memory_tiers[0].bandwidth_bytes_per_s > 100 * ipu.memory_tiers[1].bandwidth_bytes_per_s


def _h100():
    return yaml.safe_load(open(get_profile("h100-sxm").path.replace("hw_profiles/", _dir() + "/")))


def _dir():
    from importlib import resources
    return str(resources.files("sparq_perf.hw_profiles"))


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(bogus=1), "unknown field(s) bogus"),
    (lambda d: d.pop("cache_bytes"), "missing field(s) cache_bytes"),
    (lambda d: d.update(compute_units=0), "compute_units must be a positive integer"),
    (lambda d: d["memory_tiers"][0].update(peak_bandwidth_bytes_per_s=-3), "peak_bandwidth_bytes_per_s must be a positive number"),
    (lambda d: d["memory_tiers"][0].update(achievable_bandwidth_fraction=1.5), "must be in (0, 1]"),
    (lambda d: d["sources"].pop("cache_bytes"), "no source for cache_bytes"),
    (lambda d: d["peak_flops_per_s"].pop("bf16"), "missing field(s) bf16"),
    (lambda d: d.update(kind="tpu"), "kind must be one of"),
])
def test_bad_profile_names_file_and_field(tmp_path, mutate, needle):
    data = copy.deepcopy(_h100())
    mutate(data)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as e:
        load_profile_file(path)
    assert str(path) in str(e.value) and needle in str(e.value)


def test_user_profile_path_works(tmp_path):
    data = _h100()
    data["name"] = "my-gpu"
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(data))
    assert get_profile(str(path)).name == "my-gpu"


def test_models_by_published_sizes():
    # parameter counts of the published checkpoints, in billions
    sizes = {"llama2-7b": 6.74, "llama2-13b": 13.02, "llama2-70b": 68.98, "llama3-8b": 8.03, "llama3-70b": 70.55,
             "mistral-7b": 7.24, "gemma-2b": 2.51, "gemma-7b": 8.54}
    for name, billions in sizes.items():
        assert get_model(name).n_params / 1e9 == pytest.approx(billions, abs=0.01), name
    assert get_model("gemma-2b").n_kv_heads == 1  # MQA
    assert set(builtin_models()) >= {"pythia-1.4b", "pythia-2.8b", "pythia-6.9b"}


def test_bad_model_file(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("mine: {n_layers: 2, d_model: 64, n_heads: 3, n_kv_heads: 2, d_head: 16, d_ff: 128, vocab: 10}\n")
    with pytest.raises(UserError, match="multiple of n_kv_heads"):
        get_model(str(path))
    path.write_text("mine: {n_layers: 2, d_model: 64, n_heads: 4, n_kv_heads: 2, d_head: 16, d_ff: 128, vocab: 10, colour: 1}\n")
    with pytest.raises(UserError, match="unknown field"):
        get_model(str(path))
