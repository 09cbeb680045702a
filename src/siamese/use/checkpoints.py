"""A trained checkpoint made ready for use: its embedder, verdict and fingerprint (``load_for_use``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from siamese.errors import UserError
from siamese.models.checkpoints import check_fits, current_targets, load_checkpoint
from siamese.models.embedder import Embedder
from siamese.verdict import Verdict


@dataclass(frozen=True)
class TrainedModel:
    """What using a checkpoint needs: its embedder (in eval mode, with its preprocessing), its
    verdict, a fingerprint of its weights and threshold, and its path."""

    embedder: Embedder
    verdict: Verdict
    fingerprint: str
    path: Path


def checkpoint_fingerprint(checkpoint: dict) -> str:
    """A short hash of a checkpoint's weights and threshold: equal for the same model saved twice."""
    digest = hashlib.sha256()
    for name, tensor in sorted(checkpoint["state_dict"].items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


EMBEDDER_PREFIX = "network."  # the training module's attribute that holds the embedder


def load_for_use(path: str | Path, device: str = "cpu", threshold: float | None = None,
                 checkpoint: dict[str, Any] | None = None, test_views: int | None = None,
                 join_pretrained: float | None = None) -> TrainedModel:
    """The checkpoint's embedder and verdict, built from what the checkpoint stores for use (no
    training module, no download); ``threshold`` replaces the checkpoint's, ``test_views`` the
    views its embeddings average (``siamese.models.embedder.TEST_VIEWS``), ``join_pretrained`` the
    weight of its pretrained features (a checkpoint trained with ``model.network.join_pretrained``)."""
    checkpoint = load_checkpoint(path) if checkpoint is None else checkpoint
    spec, verdict = checkpoint.get("embedder"), checkpoint.get("verdict")
    if spec is None or verdict is None:
        raise UserError(f"{path} holds no embedder or verdict to use; pass a checkpoint written by src/train.py")
    if "resize" not in spec["preprocessing"]:  # trained before the resize policy: squashed
        spec = {**spec, "preprocessing": {**spec["preprocessing"], "resize": "squash"}}
    embedder: Embedder = instantiate(current_targets(spec))
    state = {k[len(EMBEDDER_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(EMBEDDER_PREFIX)}
    check_fits(embedder, {"state_dict": state})
    embedder.load_state_dict(state, strict=True)
    if test_views is not None:
        embedder.set_test_views(test_views, "test_views")
    embedder.set_join_weight(join_pretrained)
    return TrainedModel(
        embedder.to(device).eval(), Verdict.from_dict(verdict).with_threshold(threshold),
        checkpoint_fingerprint(checkpoint), Path(path),
    )
