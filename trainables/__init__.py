"""Data, augmentation, the one-config training loop and evaluation (Ray only at the edge).

    from trainables import train
    metrics = train({"method": "simvae", "dataset": "digits", "epochs": 5, "J": 4})
"""
from trainables.config import ConfigError, resolve_config  # noqa: F401
from trainables.train import ConsoleHooks, Hooks, NonFiniteLoss, train, tune_trainable  # noqa: F401
