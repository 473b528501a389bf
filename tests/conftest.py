import os

import matplotlib

matplotlib.use("Agg")

os.environ.setdefault("OPENBLAS_NUM_THREADS", os.environ.get("OPENBLAS_NUM_THREADS", "2"))
