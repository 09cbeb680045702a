"""Test-only pieces that a training subprocess loads through Hydra (PYTHONPATH=tests)."""

import os
import signal

import pytorch_lightning as pl
import torch

from siamese.models.losses import ContrastiveLoss


class SignalAt(pl.Callback):
    """Send ``signal_name`` to this process at the start of batch ``batch`` of epoch ``epoch``
    (``epoch=-1``: of testing). ``group``: to the whole process group (workers too), as a
    terminal's Ctrl-C or a scheduler's SIGTERM does."""

    def __init__(self, epoch: int, batch: int = 0, signal_name: str = "SIGKILL", group: bool = False) -> None:
        self.epoch, self.batch, self.signal, self.group = epoch, batch, getattr(signal, signal_name), group

    def _send(self) -> None:
        if self.signal == signal.SIGINT and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            # started in the background (nohup, `cmd &` without job control): Ctrl-C reaches a terminal's run
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.group:
            os.killpg(os.getpgid(0), self.signal)
        else:
            os.kill(os.getpid(), self.signal)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self._send()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.epoch == -1 and batch_idx == self.batch:
            self._send()


class SigtermThenWorkerDeath(pl.Callback):
    """A SIGTERM to this process at ``hook`` (``on_fit_start``: before Lightning handles signals;
    ``on_train_start``: while it does), then the error a DataLoader worker killed by the same
    signal gives: how a scheduler's or pkill's SIGTERM to every process of a job can reach the
    main one before Lightning's own stop."""

    def __init__(self, hook: str = "on_train_start") -> None:
        self.hook = hook

    def _signal_then_fail(self, hook: str) -> None:
        if hook == self.hook:
            os.kill(os.getpid(), signal.SIGTERM)
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")

    def on_fit_start(self, trainer, pl_module) -> None:
        self._signal_then_fail("on_fit_start")

    def on_train_start(self, trainer, pl_module) -> None:
        self._signal_then_fail("on_train_start")


class NaNAfter(ContrastiveLoss):
    """The contrastive loss, until ``steps`` training steps have passed: then NaN."""

    def __init__(self, margin: float = 1.0, miner=None, steps: int = 3) -> None:
        super().__init__(margin, miner)
        self.steps, self.calls = steps, 0

    def forward(self, embeddings, labels, batch):
        loss = super().forward(embeddings, labels, batch)
        if self.training:
            self.calls += 1
            if self.calls > self.steps:
                return loss * torch.tensor(float("nan"))
        return loss


class Payload:
    """Unpickling this creates the file ``path``: what a malicious checkpoint could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))



class LastCheckpointEpochs(pl.Callback):
    """Record, at the start of every training epoch, the epoch stored in ``checkpoints/last.ckpt``."""

    def __init__(self, dirpath: str) -> None:
        self.path, self.seen = os.path.join(dirpath, "last.ckpt"), []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        exists = os.path.exists(self.path)
        self.seen.append(torch.load(self.path, weights_only=True)["epoch"] if exists else None)


class NaNOnRank(ContrastiveLoss):
    """The contrastive loss, NaN on DDP rank ``rank`` from its ``step``-th training step on."""

    def __init__(self, margin: float = 1.0, miner=None, rank: int = 1, step: int = 2) -> None:
        super().__init__(margin, miner)
        self.rank, self.step, self.calls = rank, step, 0

    def forward(self, embeddings, labels, batch):
        loss = super().forward(embeddings, labels, batch)
        if self.training and torch.distributed.is_initialized() and torch.distributed.get_rank() == self.rank:
            self.calls += 1
            if self.calls >= self.step:
                return loss * torch.tensor(float("nan"))
        return loss


class RecordLossParameters(pl.Callback):
    """Write this rank's loss parameters (a proxy loss's proxies) at the start and at the end of training
    to ``loss_parameters_rank<R>.json`` in the run dir."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = [p.detach().flatten().tolist() for p in pl_module.loss.parameters()]

    def on_train_end(self, trainer, pl_module) -> None:
        import json

        end = [p.detach().flatten().tolist() for p in pl_module.loss.parameters()]
        path = os.path.join(trainer.default_root_dir, f"loss_parameters_rank{trainer.global_rank}.json")
        with open(path, "w") as handle:
            json.dump({"start": self.start, "end": end}, handle)


class RecordTrainingBatches(pl.Callback):
    """Write what every training batch of this rank held (positions, classes of side a, same) to
    ``training_batches_rank<R>.json`` in the run dir at the end of training."""

    def __init__(self) -> None:
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append({"epoch": trainer.current_epoch, "position": batch.position.tolist(),
                             "class_a": batch.class_a.tolist(), "same": batch.same.tolist()})

    def on_train_end(self, trainer, pl_module) -> None:
        import json

        path = os.path.join(trainer.default_root_dir, f"training_batches_rank{trainer.global_rank}.json")
        with open(path, "w") as handle:
            json.dump(self.batches, handle)
