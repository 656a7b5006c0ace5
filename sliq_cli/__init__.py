"""sliq: blind image quality assessment with SLIQUE."""

__version__ = "0.1.0"
