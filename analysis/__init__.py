"""Analysis of finished sweeps: read what sweeps/ wrote (MLflow, or the per-run ``result.json``
files of the Ray experiment folders; layout in sweeps/schema.py) into one pandas frame of
per-run records, select configs, build Table 1, draw ablation and style plots, write reports.

No training happens here. Modules: ``records`` (loading, the frame and ``summarise``),
``select``, ``table``, ``ablation``, ``style``, ``report``; each script runs as
``python analysis/<name>.py --help``.
"""
