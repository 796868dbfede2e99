"""Watching interpretability while a model trains (`Monitor` for plain PyTorch,
`InterpretabilityMonitor` for Lightning, `track` for saved checkpoints). Lightning is imported
only by `InterpretabilityMonitor`'s own module."""

_WHERE = {"Monitor": "check", "summary": "check", "log_values": "check",
          "InterpretabilityMonitor": "lightning", "track_checkpoints": "track"}


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_WHERE)
