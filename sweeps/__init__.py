"""Named search spaces and the sweep runner (Ray Tune, Optuna, ASHA, MLflow).

``sweeps.spaces``   the registry of named spaces and profiles (plain data; no Ray)
``sweeps.tracking`` MLflow records: experiment per space, parent per sweep, child per trial x dataset
``sweeps.trial``    the Tune trainable (every dataset and seed in lockstep) and the selection searcher
``sweeps.run``      the command line: ``python sweeps/run.py --space simvae_J --profile quick``
"""
