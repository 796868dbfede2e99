"""interpscore: learn to predict per-unit human interpretability (IMI 2-AFC) of vision networks.

The package namespace stays light: heavy libraries (torch, timm, lightning) are imported by the
submodules that need them, so `interpscore --help` starts in well under a second.
"""

__version__ = "0.1.0"


def __getattr__(name):
    """`interpscore.load(CKPT)` without importing torch at `import interpscore`."""
    if name == "load":
        from .metric.scorer import load

        return load
    raise AttributeError(f"module 'interpscore' has no attribute {name!r}")
