"""fishid: species photos from public collections to trained, audited classifiers."""

import pandas as pd

__version__ = "0.1.0"

# pandas 3 keeps strings in pyarrow whenever pyarrow is installed, and cleanlab's Datalab brings
# it in (through Hugging Face datasets). Its strings refuse what the tables must carry (a file
# name's surrogate escapes fail on construction, not at the writer that reports them): every
# table holds Python strings, as it did before, whatever else is installed.
pd.set_option("mode.string_storage", "python")
