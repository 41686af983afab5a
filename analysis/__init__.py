"""Analysis of finished sweeps: read what sweeps/ wrote (MLflow, or the Ray experiment folders'
``trials.csv``), select configs, build Table 1, draw ablation and style plots, write reports.

No training happens here. Modules: ``records`` (loading), ``select``, ``table``, ``ablation``,
``style``, ``report``; each script runs as ``python analysis/<name>.py --help``.
"""
