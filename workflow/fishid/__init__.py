"""fishid: species photos from public collections to trained, audited classifiers."""

import os

import pandas as pd

__version__ = "0.1.0"

# pandas 3 keeps strings in pyarrow whenever pyarrow is installed, and cleanlab's Datalab brings
# it in (through Hugging Face datasets). Its strings refuse what the tables must carry (a file
# name's surrogate escapes fail on construction, not at the writer that reports them): every
# table holds Python strings, as it did before, whatever else is installed.
pd.set_option("mode.string_storage", "python")

# The same numbers on every x86 CPU: oneDNN picks its convolution kernels by the instruction set,
# and AVX-512 ones round differently from AVX2 ones (the demo's RI4 scored 0.817 on an AVX-512
# machine, 0.783 on AVX2, from the same inputs; each bit-reproducible on its own machine).
# Capped at AVX2, which every x86 CPU of the last ten years has; oneDNN reads this at its first
# convolution. ONEDNN_MAX_CPU_ISA=ALL in the environment gives the fastest kernels instead.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
