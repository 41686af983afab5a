"""Networks and objectives (pure torch: no Ray, no MLflow).

``METHODS`` maps a method name to its ``Method`` class; each module below registers itself, and
the order of these lines is the order tables and figures list the methods in (the paper's
Table 1 rows: baselines, discriminative, generative).
"""
from models.base import FAMILIES, METHODS, Hyperparameter, Method, NetSpec, register  # noqa: F401

# One line per method module (importing it registers its methods).
from models import random_encoder  # noqa: F401,E402
from models import pixels  # noqa: F401,E402
from models import simclr  # noqa: F401,E402
from models import moco  # noqa: F401,E402
from models import vicreg  # noqa: F401,E402
from models import vae  # noqa: F401,E402  vae, betavae
from models import crvae  # noqa: F401,E402
from models import simvae  # noqa: F401,E402
