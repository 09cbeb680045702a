"""State_dict files: reading them safely, and saying how one fails to fit a model."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from torch import nn

from siamese.errors import UserError
from siamese.files import load_torch_file


def state_dict_mismatch(model: nn.Module, state: dict) -> str | None:
    """How ``state`` fails to fit ``model`` exactly (missing, unexpected, reshaped keys), or None."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    details = [
        f"{len(keys)} {what} (first: {keys[0]})"
        for what, keys in [("missing keys", missing), ("unexpected keys", unexpected),
                           ("tensors of another shape", wrong_shape)]
        if keys
    ]
    return ", ".join(details) or None


def read_state_dict(path: Path, name: str) -> dict:
    """A state_dict from a torch file (loaded with ``weights_only``) or a ``.safetensors`` file."""
    missing = f"backbone.weights_path {path} does not exist; point it at a state_dict file of {name}"
    unreadable = (f"backbone.weights_path {path} is not a readable PyTorch or safetensors state_dict "
                  "({error}); check the file")
    if path.suffix != ".safetensors":
        state = load_torch_file(path, missing, unreadable)
    elif not path.is_file():
        raise UserError(missing)
    else:
        try:
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        except Exception as exc:  # truncated or foreign files raise many types
            raise UserError(unreadable.format(error=type(exc).__name__)) from exc
    if not isinstance(state, dict):
        raise UserError(f"backbone.weights_path {path} holds a {type(state).__name__}, not a state_dict")
    return state


def load_state_dict_file(model: nn.Module, path: Path, name: str, ignored: Iterable[str] = ()) -> None:
    """Load a state_dict file into ``model`` strictly, turning every way it can fail into a
    UserError. Keys under the ``ignored`` prefixes (a classifier the trunk does not have) are dropped."""
    state = read_state_dict(path, name)
    prefixes = tuple(f"{prefix}." for prefix in ignored)
    if prefixes:
        state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    mismatch = state_dict_mismatch(model, state)
    if mismatch:
        raise UserError(
            f"backbone.weights_path {path} does not match {name}: {mismatch}; "
            "use weights saved from that model or pick the matching backbone"
        )
    model.load_state_dict(state, strict=True)
