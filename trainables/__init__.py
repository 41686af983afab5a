"""Data, augmentation, the training driver and evaluation (no Ray, no MLflow).

    from trainables import train
    group = train({"method": "simvae", "dataset": "digits", "epochs": 5, "J": 4})
    group.runs[0].final["acc_mlp"]
"""
from trainables.config import ConfigError, resolve_config  # noqa: F401
from trainables.driver import ConsoleHooks, Hooks, NonFiniteLoss, Run, RunGroup, train  # noqa: F401
