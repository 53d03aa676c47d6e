"""The privacy config section, its validation and configs/privacy.py."""

import math

import pytest

from comdml_jax.config_check import validate_config
from comdml_jax.errors import ConfigError
from comdml_jax.privacy.config import DpSpec, PrivacySpec, validate_privacy
from configs import default
from configs import privacy as privacy_configs


def test_default_is_all_off_and_hashable():
    c = default.get_config()
    validate_privacy(c)
    spec = PrivacySpec.from_config(c)
    assert spec == PrivacySpec() and not spec.dp.enabled and spec.for_steps() is None
    assert hash(spec) == hash(PrivacySpec())
    assert {spec: 1}[PrivacySpec()] == 1
    del c.privacy
    validate_privacy(c)  # a config without the section is all-off
    assert PrivacySpec.from_config(c) == PrivacySpec()


def test_for_steps_keeps_only_what_changes_the_steps():
    dp_only = PrivacySpec(dp=DpSpec(mechanism="laplace"))
    assert dp_only.for_steps() is None
    a = PrivacySpec(dp=DpSpec(mechanism="gaussian"), nopeek=True, nopeek_alpha=0.3, patch_size=5)
    b = PrivacySpec(nopeek=True, nopeek_alpha=0.3, patch_size=2)
    assert a.for_steps() == b.for_steps() == PrivacySpec(nopeek=True, nopeek_alpha=0.3)
    s = PrivacySpec(patch_shuffle=True, patch_size=4, nopeek_alpha=0.9).for_steps()
    assert s == PrivacySpec(patch_shuffle=True, patch_size=4)


def test_dp_spec_noise_scales():
    g = DpSpec(mechanism="gaussian", clip_norm=2.0, noise_multiplier=0.5)
    assert g.noise_multiplier_of_mechanism == 0.5 and g.noise_scale(2.0) == 1.0
    lap = DpSpec(mechanism="laplace", clip_norm=3.0, epsilon_per_round=0.5)
    assert lap.noise_multiplier_of_mechanism == 2.0 and lap.noise_scale(3.0) == 6.0
    assert DpSpec(mechanism="laplace", epsilon_per_round=math.inf).noise_scale(1.0) == 0.0


@pytest.mark.parametrize(
    "field, value, fix",
    [
        ("dp.mechanism", "gauss", "none, gaussian, laplace"),
        ("dp.placement", "server", "local, central"),
        ("dp.clip_norm", 0.0, "> 0"),
        ("dp.clip_norm", -1.0, "> 0"),
        ("dp.noise_multiplier", -0.1, ">= 0"),
        ("dp.noise_multiplier", math.inf, ">= 0"),
        ("dp.epsilon_per_round", 0.0, "> 0"),
        ("dp.delta", 0.0, r"\(0, 1\)"),
        ("dp.delta", 1.0, r"\(0, 1\)"),
        ("nopeek_alpha", 1.5, r"\[0, 1\]"),
        ("nopeek_alpha", -0.1, r"\[0, 1\]"),
        ("patch_size", 0, ">= 1"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(field, value, fix):
    c = default.get_config()
    node = c.privacy
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ConfigError, match=rf"--config\.privacy\.{field}=.* is invalid: .*{fix}"):
        validate_privacy(c)


def test_non_bool_switches_and_float_patch_size_are_refused():
    c = default.get_config()
    with c.unlocked():
        c.privacy.nopeek = None
    with pytest.raises(ConfigError, match="privacy.nopeek"):
        validate_privacy(c)
    c = default.get_config()
    with c.unlocked():
        del c.privacy.patch_size
        c.privacy.patch_size = 2.5
    with pytest.raises(ConfigError, match="privacy.patch_size"):
        validate_privacy(c)


def test_unclipped_noiseless_dp_is_valid():
    c = default.get_config()
    c.privacy.dp.mechanism = "gaussian"
    c.privacy.dp.clip_norm = math.inf
    c.privacy.dp.noise_multiplier = 0.0
    c.privacy.dp.epsilon_per_round = math.inf
    validate_privacy(c)


@pytest.mark.parametrize("option", privacy_configs.OPTIONS)
@pytest.mark.parametrize("small", [False, True])
def test_privacy_configs_select_the_paper_settings(option, small):
    c = privacy_configs.get_config(f"{option},small" if small else option)
    validate_config(c)
    validate_privacy(c)
    spec = PrivacySpec.from_config(c)
    assert spec.nopeek == (option == "dcor") and spec.patch_shuffle == (option == "shuffle")
    if option == "dcor":
        assert spec.nopeek_alpha == 0.5
    if option == "shuffle":
        assert spec.patch_size == 2
    if option == "dp":
        assert (spec.dp.mechanism, spec.dp.placement) == ("laplace", "local")
        assert (spec.dp.epsilon_per_round, spec.dp.delta) == (0.5, 1e-5)
    else:
        assert not spec.dp.enabled
    assert c.method == "comdml" and c.participation == 0.2
    if small:
        assert c.num_agents == 20 and c.model.name == "resnet8_basic"
        assert 0 < c.data.train_subset <= 10_000 and c.rounds <= 30
    else:
        assert (c.num_agents, c.model.name, c.rounds, c.data.name) == (
            100,
            "resnet56",
            100,
            "cifar10",
        )
        assert c.data.train_subset == 0 and c.optim.plateau_factor == 0.5


@pytest.mark.parametrize("arg", ["dcorr", "dp,shuffle", "small,small", "dp,big"])
def test_privacy_config_rejects_a_bad_argument(arg):
    with pytest.raises(ValueError, match="OPTION\\[,small\\].*none, dcor, shuffle, dp"):
        privacy_configs.get_config(arg)


def test_privacy_config_default_argument_is_no_privacy():
    assert PrivacySpec.from_config(privacy_configs.get_config()) == PrivacySpec()
    assert privacy_configs.parse_arg("small,dp") == ("dp", True)
