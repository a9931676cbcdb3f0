"""Notebook tests run in smoke mode: set here (inherited by the nbval kernels), never by hand."""

import os

os.environ["ORPO_KIT_SMOKE"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would make outputs differ from run to run
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
