"""tangshi: Chinese classical poetry with recurrent networks (RNN, LSTM, GRU).

`from tangshi import Poet` loads a checkpoint or the bundled model (torch is imported lazily).
"""

__version__ = "0.1.0"

__all__ = ["Poet", "__version__"]


def __getattr__(name: str):
    if name == "Poet":
        from tangshi.api import Poet

        return Poet
    raise AttributeError(f"module 'tangshi' has no attribute {name!r}")
