"""The optimizer of a training run: its parameter groups at their learning rates, the linear warm-up
of those rates over the first optimizer steps, and the scheduler that takes over per epoch.

The warm-up is applied by hand, not with ``LinearLR`` + ``SequentialLR``: those chain on one
interval, but here the warm-up counts optimizer steps while the scheduler counts epochs, and the
warm-up sets each rate from its target directly (a chained ``LinearLR`` multiplies, and the rates
would differ in their last bits)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from siamese.errors import UserError, as_number


def checked_warmup_steps(value: object) -> int:
    steps = as_number(value, "model.warmup_steps", int)
    if steps < 0:
        raise UserError(f"model.warmup_steps must be 0 (no warm-up) or more, got {steps}")
    return int(steps)


def checked_probe_epochs(value: object) -> int:
    """``model.probe_epochs``: the first epochs train the head alone (``SiameseModule.on_train_epoch_start``
    freezes the trunk's trainable parameters). Not Lightning's ``BaseFinetuning``: it freezes and
    unfreezes whole modules (the trunk's frozen layers would thaw) and adds the thawed parameters to
    the optimizer as a new group, which the scheduler built before never sees."""
    epochs = as_number(value, "model.probe_epochs", int)
    if epochs < 0:
        raise UserError(f"model.probe_epochs must be 0 (fine-tune from the start) or more, got {epochs}")
    return int(epochs)


def stop_unless_finite(loss: torch.Tensor, trainer: Any, epoch: int, step: int) -> None:
    """A UserError (the checkpoints saved so far stay) when the training loss is not finite; under DDP
    on every rank when it is not finite on any, since a rank that stopped alone would hang the rest."""
    finite_here = bool(torch.isfinite(loss))
    finite = finite_here
    if trainer is not None and trainer.world_size > 1:
        finite = trainer.strategy.reduce_boolean_decision(finite_here, all=True)
    if not finite:
        value = "not finite on another process" if finite_here else loss.item()
        raise UserError(
            f"the training loss became {value} at epoch {epoch}, step {step}; "
            "lower the learning rate (model.optimizer.lr) — the checkpoints saved so far are kept"
        )


def parameter_groups(model: nn.Module, backbone: nn.Module, loss: nn.Module, backbone_lr: float | None,
                     loss_lr: float | None) -> list[dict[str, Any]]:
    """The trainable parameters of ``model``: the trunk's at ``backbone_lr`` and a proxy loss's class
    centres (ArcFace, CosFace, ...) at ``loss_lr`` when given, the rest at the optimizer's own rate."""
    trunk = [p for p in backbone.parameters() if p.requires_grad]
    proxies = [p for p in loss.parameters() if p.requires_grad] if loss_lr is not None else []
    apart = {id(p) for p in trunk + proxies}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in apart]
    if backbone_lr is None:
        groups: list[dict[str, Any]] = [{"params": rest + trunk}]
    else:
        groups = [{"params": rest}, {"params": trunk, "lr": float(backbone_lr)}]
    if proxies:
        groups.append({"params": proxies, "lr": float(loss_lr)})
    return [group for group in groups if group["params"]]


def optimizer_and_scheduler(groups: list[dict[str, Any]], optimizer: Callable[..., torch.optim.Optimizer],
                            scheduler: Callable[..., Any] | None) -> Any:
    """What ``configure_optimizers`` returns: the optimizer over ``groups`` (each remembering the rate
    its warm-up rises to) and, if any, the scheduler, stepped every epoch."""
    built = optimizer(params=groups)
    for group in built.param_groups:
        group["warmup_lr"] = group["lr"]
    if scheduler is None:
        return built
    return {"optimizer": built, "lr_scheduler": {"scheduler": scheduler(optimizer=built), "monitor": "val_loss",
                                                 "interval": "epoch"}}


def warm_up(optimizer: torch.optim.Optimizer, step: int, warmup_steps: int) -> None:
    """Before optimizer step ``step`` (from 0) of the first ``warmup_steps``: every rate at
    ``(step + 1) / warmup_steps`` of its target."""
    if step < warmup_steps:
        for group in optimizer.param_groups:
            group["lr"] = group["warmup_lr"] * (step + 1) / warmup_steps
