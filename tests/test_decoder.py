"""The decoder trained on frozen representations (for methods without one): as long as the
reconstruction error needs, no longer."""
import math
import re

import pytest

from trainables.driver import Run
from trainables.evaluate import decoder as dec

TINY = {"dataset": "digits", "train_size": 300, "test_size": 200, "epochs": 1, "device": "cpu", "seed": 3,
        "method": "random"}


def _fit(monkeypatch, tol, cap):
    monkeypatch.setattr(dec, "DECODER_TOL", tol)
    run = Run({**TINY, "decoder_epochs": cap})
    lines = []
    nll = dec.train_frozen_decoder(run.method, run.splits, run.cfg, run.device, log=lines.append)
    used, limit = map(int, re.search(r"(\d+) of at most (\d+) epochs", lines[0]).groups())
    assert limit == cap and math.isfinite(nll) and nll > 0
    assert f"validation NLL/image {nll:.2f}" in lines[0]
    return used, nll, run


@pytest.mark.parametrize("cap", [1, 3])
def test_no_tolerance_trains_to_the_cap(monkeypatch, cap):
    """A zero tolerance stops only when an epoch makes the validation NLL worse; on a fresh
    decoder the first few epochs all improve it, so the cap decides."""
    used, _, _ = _fit(monkeypatch, 0.0, cap)
    assert used == cap


def test_an_epoch_that_improves_less_than_the_tolerance_ends_training(monkeypatch):
    # Any second epoch improves by less than 100% of the NLL: two epochs, the second the judge.
    used, _, _ = _fit(monkeypatch, 1.0, 50)
    assert used == 2


def test_default_rule_stops_before_a_generous_cap_and_the_returned_nll_is_the_decoders(monkeypatch):
    used, nll, run = _fit(monkeypatch, dec.DECODER_TOL, 200)
    assert 2 <= used < 200
    # the NLL returned is the attached decoder's own on the validation images
    import torch

    from models.likelihoods import reconstruction_nll
    from trainables.evaluate.features import encode
    x = run.splits.val.x
    with torch.no_grad():
        own = reconstruction_nll(run.method.decoder(encode(run.method.represent, x)), x,
                                 run.method.net.likelihood, 1.0).mean()
    assert float(own) == pytest.approx(nll, rel=1e-5)


def test_a_bf16_run_trains_its_decoder_in_bf16_with_float32_parameters_and_loss(monkeypatch):
    """Under the run's autocast the decoder's layers compute in bfloat16 (its output is bfloat16 in
    training), its parameters stay float32, and it reaches the float32 decoder's validation NLL
    within a few percent; without autocast its output is float32."""
    import torch

    from trainables.precision import autocast

    dtypes = {}

    def fit(cast):
        run = Run({**TINY, "decoder_epochs": 3})
        nll = dec.train_frozen_decoder(run.method, run.splits, run.cfg, run.device, log=lambda line: None,
                                       autocast=cast)
        dtypes[cast is not None] = {p.dtype for p in run.method.decoder.parameters()}
        return nll

    seen_out = []
    from models import networks
    build = networks.build_decoder

    def spying_build(net):
        decoder = build(net)
        decoder.register_forward_hook(lambda m, i, o: seen_out.append(o.dtype) if m.training else None)
        return decoder
    monkeypatch.setattr(networks, "build_decoder", spying_build)

    nll32 = fit(None)
    assert set(seen_out) == {torch.float32}
    seen_out.clear()
    nll16 = fit(autocast(torch.device("cpu"), True))
    assert set(seen_out) == {torch.bfloat16}
    assert dtypes == {False: {torch.float32}, True: {torch.float32}}
    assert nll16 == pytest.approx(nll32, rel=0.05) and nll16 != nll32
