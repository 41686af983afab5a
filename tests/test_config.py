import math

import pytest

from trainables.config import COMMON, ConfigError, resolve_config


def test_defaults_fill_in_by_precedence():
    cfg = resolve_config({"method": "simvae", "dataset": "mnist"})
    assert cfg["lr"] == 8e-5 and cfg["epochs"] == 400 and cfg["batch_size"] == 128  # official
    assert cfg["J"] == 10 and cfg["sigma2"] == 0.15
    assert math.isclose(cfg["likelihood_scale"], math.exp(4.6), rel_tol=1e-6)
    cfg = resolve_config({"method": "simvae", "dataset": "digits", "lr": "3e-4", "J": "4"})
    assert cfg["lr"] == 3e-4 and cfg["J"] == 4 and isinstance(cfg["J"], int)
    assert cfg["eval_every"] == max(1, cfg["epochs"] // 20)


def test_every_common_key_has_a_help_line():
    assert all(spec.help for spec in COMMON.values())


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"method": "nope"}, "unknown method 'nope'"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
        ({"sigmaa2": 1}, "unknown key sigmaa2"),
        ({"J": 1}, "J=1"),
        ({"sigma2": 0}, "sigma2=0.0"),
        ({"sigma2": -1}, "sigma2=-1.0"),
        ({"epochs": 0}, "epochs=0"),
        ({"J": 8, "batch_size": 4}, "batch_size=4 is smaller than J=8"),
        ({"J": "four"}, "J='four' is not a valid int"),
        ({"lr": "nan"}, "lr=nan"),
    ],
)
def test_bad_values_are_one_line_errors(overrides, fragment):
    config = {"method": "simvae", "dataset": "digits", **overrides}
    with pytest.raises(ConfigError) as err:
        resolve_config(config)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg


def test_beta_must_be_non_negative():
    with pytest.raises(ConfigError, match="beta"):
        resolve_config({"method": "betavae", "dataset": "digits", "beta": -0.5})
    assert resolve_config({"method": "betavae", "dataset": "digits", "beta": 0})["beta"] == 0


def test_method_keys_do_not_leak_across_methods():
    with pytest.raises(ConfigError, match="unknown key sigma2 for method vae"):
        resolve_config({"method": "vae", "dataset": "digits", "sigma2": 0.1})


def test_images_per_step_sets_the_views_per_step_for_every_J():
    simvae = resolve_config({"method": "simvae", "dataset": "digits", "J": 4, "images_per_step": 32})
    vae = resolve_config({"method": "vae", "dataset": "digits", "images_per_step": 32})
    assert simvae["batch_size"] == 128 and vae["batch_size"] == 32  # same images, J views each
    with pytest.raises(ConfigError, match="both set"):
        resolve_config({"method": "vae", "dataset": "digits", "images_per_step": 32, "batch_size": 64})


def test_a_set_batch_size_replaces_a_profiles_images_per_step():
    from sweeps.spaces import expand, run_configs

    plan = expand("simvae_J", "laptop", sets={"batch_size": 64})
    (cfg,) = {tuple(sorted(c.items())) for c in run_configs(plan, {"J": 4}) if c["dataset"] == "mnist"}
    cfg = dict(cfg)
    assert "images_per_step" not in cfg and resolve_config(cfg)["batch_size"] == 64
    plan = expand("simvae_J", "laptop")
    (cfg,) = [c for c in run_configs(plan, {"J": 4}) if c["dataset"] == "mnist"]
    assert resolve_config(cfg)["batch_size"] == 128 * 4
