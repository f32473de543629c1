"""Measuring models and poems: losses, the evaluation suite, readers, calibration.

`SETTINGS` and `EXTRA_SAMPLERS` are here, not in `suite`, so that `tangshi eval --help` shows them
without importing torch.
"""

from tangshi.prosody.regular import FORMS

SETTINGS = ("free", "begin", *FORMS, "acrostic")  # the kinds of poem the suite writes (`tangshi eval --settings`)
EXTRA_SAMPLERS = ((1.0, 0.0), (0.8, 0.1))  # (temperature, diversity) the readers measure beside the default sampler
