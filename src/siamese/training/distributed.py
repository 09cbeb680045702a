"""Lightning's DDP inside Hydra jobs: every rank runs this job, in this job's output folder.

Lightning starts ranks 1..n-1 by re-running the script. Under Hydra it re-runs the whole
command line with ``hydra.run.dir`` set to the run-mode pattern, so in a multirun every rank
would start the whole sweep, and the ranks' folders can differ from rank 0's. Here the other
ranks re-run only this job (its own overrides) in its own output folder, without writing a
second ``.hydra`` folder; only rank 0 writes the run's files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.layer_sync import LayerSync, _BatchNormXd
from pytorch_lightning.strategies import DDPStrategy
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from siamese.errors import UserError

# Lightning has no public way to change how DDP ranks are started, so HydraJobLauncher extends its
# private script launcher; pyproject.toml bounds pytorch-lightning to the versions this was run with.
LAUNCHER_API = ("_call_children_scripts", "_check_can_spawn_children")
try:
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
except ImportError:  # a Lightning that moved it
    _SubprocessScriptLauncher = None

# What Lightning's launcher puts into the environment of the processes of a DDP job.
DDP_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def hydra_job_command(local_rank: int) -> tuple[list[str], str]:
    """The command (and working dir) that runs the current Hydra job again as ``local_rank``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += ["--config-name", hydra_cfg.job.config_name]
    for source in hydra_cfg.runtime.config_sources:
        if source.schema == "file" and source.provider in ("main", "command-line"):
            flag = "--config-path" if source.provider == "main" else "--config-dir"
            command += [flag, source.path]
    output_dir = hydra_cfg.runtime.output_dir
    if '"' in output_dir:
        raise ValueError(f"the output dir {output_dir} holds a double quote, which DDP ranks cannot be given")
    command += list(hydra_cfg.overrides.task)
    command += [
        f'hydra.run.dir="{output_dir}"',
        "hydra.output_subdir=null",  # rank 0 has written .hydra/
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
    ]
    return command, get_original_cwd()


def check_launcher_api() -> None:
    """A UserError when this Lightning's script launcher is not the one HydraJobLauncher extends."""
    launcher = _SubprocessScriptLauncher
    if launcher is None or not all(hasattr(launcher, name) for name in LAUNCHER_API):
        raise UserError(
            f"trainer=ddp under Hydra extends the script launcher of pytorch-lightning 2.2-2.6, and this is "
            f"{pl.__version__}: install 'pytorch-lightning>=2.2,<2.7', or use trainer=default (one device)"
        )


class HydraJobLauncher(_SubprocessScriptLauncher or object):
    """Lightning's script launcher; under Hydra the other ranks run :func:`hydra_job_command`."""

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            super()._call_children_scripts()
            return
        self._check_can_spawn_children()
        environment = self.cluster_environment
        os.environ["MASTER_ADDR"] = environment.main_address
        os.environ["MASTER_PORT"] = str(environment.main_port)
        os.environ["NODE_RANK"] = str(environment.node_rank())
        os.environ["LOCAL_RANK"] = str(environment.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        for local_rank in range(1, self.num_processes):
            command, cwd = hydra_job_command(local_rank)
            self.procs.append(subprocess.Popen(command, env={**os.environ, "LOCAL_RANK": str(local_rank)}, cwd=cwd))


class HydraDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose ranks are started by :class:`HydraJobLauncher` (``trainer=ddp``, ``trainer=ddp_cpu``).

    A module that trains some parameters only in some epochs (``model.probe_epochs``: the head
    alone first) leaves DDP with parameters that get no gradient; DDP then needs
    ``find_unused_parameters``, which this strategy sets for such a module unless it was given.
    """

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if getattr(self.lightning_module, "probe_epochs", 0) > 0:
            self._ddp_kwargs.setdefault("find_unused_parameters", True)
        return super()._setup_model(model)

    def _configure_launcher(self) -> None:
        check_launcher_api()
        super()._configure_launcher()
        if type(self._launcher) is _SubprocessScriptLauncher:
            self._launcher = HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)


@contextmanager
def separate_ddp_jobs() -> Iterator[None]:
    """Leave no DDP state behind a job, so that the next job of a sweep in this process starts
    its own ranks (Lightning takes a set ``LOCAL_RANK`` to mean that someone else started them)."""
    saved = {name: os.environ.get(name) for name in DDP_ENVIRONMENT}
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class SyncBatchNorm(LayerSync):
    """``trainer.sync_batchnorm=true``: BatchNorm statistics shared by every rank, for timm trunks too.

    Lightning's own plugin converts with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, which
    turns timm's ``BatchNormAct2d`` (a norm with its activation inside) into a plain
    ``SyncBatchNorm`` that never applies the activation; its revert does not bring it back either.
    This one converts with timm's converter (``SyncBatchNormAct`` keeps the activation), and
    reverts every converted layer to the class it had, with the same parameters and statistics.
    """

    def __init__(self) -> None:
        self.original_classes: dict[str, type[nn.Module]] = {}

    def apply(self, model: nn.Module) -> nn.Module:
        from timm.layers import convert_sync_batchnorm

        self.original_classes = {name: type(module) for name, module in model.named_modules()
                                 if isinstance(module, _BatchNorm) and not isinstance(module, nn.SyncBatchNorm)}
        return convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return self._revert(model, "")

    def _revert(self, module: nn.Module, name: str) -> nn.Module:
        converted = module
        if isinstance(module, nn.SyncBatchNorm):
            converted = _unsynced(module, self.original_classes.get(name))
        for child_name, child in module.named_children():
            converted.add_module(child_name, self._revert(child, f"{name}.{child_name}" if name else child_name))
        return converted


def _unsynced(module: nn.SyncBatchNorm, original: type[nn.Module] | None) -> nn.Module:
    """A BatchNorm layer of class ``original`` (Lightning's ``_BatchNormXd`` when unknown) holding
    ``module``'s parameters, statistics, mode and (for timm's norm-act layers) activation."""
    from timm.layers import BatchNormAct2d

    arguments = (module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
    if original is not None and issubclass(original, BatchNormAct2d):
        layer = original(*arguments, apply_act=False)
        layer.act, layer.drop = module.act, module.drop
    else:
        layer = (original or _BatchNormXd)(*arguments)
    if module.affine:
        layer.weight, layer.bias = module.weight, module.bias
    layer.running_mean, layer.running_var = module.running_mean, module.running_var
    layer.num_batches_tracked = module.num_batches_tracked
    layer.train(module.training)
    return layer


def once(trainer: Any, compute: Callable[[], Any]) -> Any:
    """``compute()`` in one process and its result in all: under DDP every process holds the same
    gathered embeddings, so the all-pairs scoring (a jackknife over every image) runs on rank 0
    alone instead of once per rank on cores the ranks share."""
    if trainer is None or trainer.world_size == 1:
        return compute()
    return trainer.strategy.broadcast(compute() if trainer.is_global_zero else None, src=0)
