"""selfalign: self-improving language models with their own internal reward models."""

__version__ = "0.1.0"
