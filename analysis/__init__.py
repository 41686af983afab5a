"""Analysis of finished sweeps: read what sweeps/ wrote (MLflow, or the per-run ``result.json``
files of the Ray experiment folders; layout in sweeps/schema.py) into one pandas frame of
per-run records, select configs, build Table 1, draw ablation and style plots, write reports.

No training happens here. Modules: ``records`` (loading, the frame and ``summarise``),
``select``, ``table``, ``ablation``, ``style``, ``report``; each script runs as
``python analysis/<name>.py --help``.
"""
import sys
from pathlib import Path

# Run as ``python analysis/<script>.py``, this folder is sys.path[0], where analysis/select.py
# would stand in for the standard library's ``select`` (pandas, subprocess and asyncio import
# it): the scripts import this package before anything else, and it takes its folder off the path.
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

