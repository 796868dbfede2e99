"""A local weight file onto a studied architecture, the one rule for every command that takes
one (`--model NAME@/path/to/weights` in score, sae fit, visualize; the checkpoints of `track`):

- a state dict saved with `torch.save(model.state_dict())`, or a Lightning `.ckpt` whose
  `state_dict` keys carry a prefix such as `model.` (found by matching the architecture's keys);
- a classifier of another size is the model's own (a network trained on 10 classes has a
  10-way head): the architecture's classifier is resized to it before loading;
- every other tensor must match in name and shape, or the file is refused naming one that
  does not. Reading a file runs no code (`weights_only`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def read_state(path: Path, model_keys: dict) -> tuple[dict, int | None]:
    """The checkpoint's tensors under the model's own key names, and its global step where it
    records one. `model_keys`: name -> shape of the architecture's state dict."""
    state, step = _tensors(path)
    return _matched(state, model_keys, path), (int(step) if step is not None else None)


def _matched(state: dict, model_keys: dict, path: Path) -> dict:
    prefix = _prefix(state, model_keys)
    if prefix is None:
        example = next(iter(model_keys))
        raise InputError(f"{path}: not a checkpoint of this architecture (no key prefix maps "
                         f"its tensors onto the model's, e.g. {example!r}); check --model")
    mine = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(model_keys[k])}" for k, v in mine.items()
             if tuple(v.shape) != tuple(model_keys[k])]
    if wrong:
        raise InputError(f"{path}: not a checkpoint of this architecture: {len(wrong)} "
                         f"tensor(s) of another shape, e.g. {wrong[0]}; check --model")
    return mine


def fit_classifier(module, path: Path) -> None:
    """Resize `module`'s classifier to the classes of the one in the file at `path`, where they
    differ; an unreadable file leaves it (`read_state` words the error when the file is read)."""
    try:
        state, _ = _tensors(path)
    except InputError:
        return
    _resize_classifier(module, state)


def load_weight_file(module, path: Path) -> int | None:
    """Load the file at `path` (read once) into `module`, its classifier resized where the
    file's is another size; returns the file's global step where it records one."""
    state, step = _tensors(path)
    _resize_classifier(module, state)
    module.load_state_dict(_matched(state, {k: v.shape for k, v in module.state_dict().items()},
                                    path))
    return int(step) if step is not None else None


def _resize_classifier(module, state: dict) -> None:
    """timm's `reset_classifier` to the rows of the state's one classifier weight; a state
    without a recognisable classifier leaves it (`_matched` then says what does not fit)."""
    import torch

    head = getattr(module, "pretrained_cfg", {}).get("classifier")
    shapes = {k: v.shape for k, v in module.state_dict().items()}
    if not head or f"{head}.weight" not in shapes:
        return
    found = [v for k, v in state.items() if k == f"{head}.weight" or k.endswith(f".{head}.weight")]
    if len(found) == 1 and found[0].shape[0] != shapes[f"{head}.weight"][0]:
        device = next(module.parameters()).device
        with torch.random.fork_rng():  # the new layer's init draws nothing from the caller's RNG
            module.reset_classifier(int(found[0].shape[0]))
        module.to(device).requires_grad_(False).eval()


def _tensors(path: Path) -> tuple[dict, object]:
    import torch

    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:  # tensors and plain containers only: reading a checkpoint runs no code
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(f"{path}: not a readable checkpoint ({type(err).__name__}); give a "
                         "state dict saved with torch.save or a Lightning .ckpt") from err
    step = data.get("global_step") if isinstance(data, dict) else None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(f"{path}: holds no state dict of tensors; give model.state_dict() "
                         "saved with torch.save, or a Lightning .ckpt")
    return state, step


def _prefix(state: dict, model_keys: dict) -> str | None:
    """The prefix (possibly empty) under which `state` holds exactly the model's keys."""
    first = next(iter(model_keys))
    for key in state:
        if key.endswith(first) and (key == first or key[-len(first) - 1] == "."):
            prefix = key[: len(key) - len(first)]
            if {k[len(prefix):] for k in state if k.startswith(prefix)} == set(model_keys):
                return prefix
    return None
