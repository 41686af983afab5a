"""Named search spaces and the sweep runner (Ray Tune, Optuna, ASHA, MLflow).

Plain data, no Ray (importing these loads neither Ray nor Optuna):
``sweeps.spaces``        the registry of named spaces and profiles; ``sweeps.distributions`` theirs
``sweeps.schema``        the record schema shared with the analysis: paths, tags, verdicts
``sweeps.ledger``        a sweep's records from open to close, in its files and in MLflow alike
``sweeps.tracking``      MLflow primitives; ``sweeps.mlflow_ui`` what the MLflow UI shows
``sweeps.preflight``     the checks before anything is created

Ray at the edge:
``sweeps.run``           the command line: ``python sweeps/run.py --space simvae_J --profile quick``
``sweeps.search``        the Optuna searcher inside Tune; ``sweeps.trial`` the Tune trainable
``sweeps.console``       what a sweep prints
"""
