"""Failure injection for tests: a VAE whose loss turns NaN after a number of optimiser steps.

Production code has no failure switch; tests register this method where they need a diverging
run: in their own process (``registered()``), or in Ray's worker processes
(``worker_setup`` as ``runtime_env={"worker_process_setup_hook": ...}``; pickled by value).
"""
from __future__ import annotations

import contextlib

NAME = "vae_nan"


def register() -> None:
    """Add ``vae_nan`` to the method registry (idempotent)."""
    from models import METHODS, register as add
    from models.base import Hyperparameter, at_least
    from models.vae import VAE

    if NAME in METHODS:
        return

    class DivergingVAE(VAE):
        """TEST ONLY: a VAE whose loss becomes NaN after ``nan_after_steps`` optimiser steps."""

        name = NAME
        display = "VAE (diverging)"
        hyperparameters = {**VAE.hyperparameters,
                           "nan_after_steps": Hyperparameter(10**9, "steps before the loss turns NaN",
                                                             at_least(0), int)}

        def loss(self, views, clean):
            terms = super().loss(views, clean)
            self.steps = getattr(self, "steps", 0) + 1
            if self.steps > self.hp["nan_after_steps"]:
                terms["loss"] = terms["loss"] * float("nan")
            return terms

    add(DivergingVAE)


def unregister() -> None:
    from models import METHODS

    METHODS.pop(NAME, None)


@contextlib.contextmanager
def registered():
    register()
    try:
        yield NAME
    finally:
        unregister()


def worker_setup() -> None:
    """Ray worker_process_setup_hook: register the method in every worker."""
    register()
