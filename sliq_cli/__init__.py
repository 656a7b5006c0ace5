"""sliq: blind image quality assessment with SLIQUE.

    import sliq_cli
    metric = sliq_cli.load()      # the Python API (sliq_cli.api), imported on first use: `import sliq_cli` stays light
    metric("photo.jpg")           # 61.3, as metric.score
"""

__version__ = "0.1.0"
__all__ = ["Metric", "explain", "load"]


def __getattr__(name: str):
    if name in __all__:
        from sliq_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'sliq_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
