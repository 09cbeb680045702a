"""CheckpointOnInterrupt: the moment of a stop in interrupted.ckpt, and never a run's starting point."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from siamese.training.callbacks import CheckpointOnInterrupt


class Regression(pl.LightningModule):
    def __init__(self, stop_at_step: int | None = None):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.stop_at_step = stop_at_step

    def training_step(self, batch, batch_index):
        if self.global_step == self.stop_at_step:
            raise KeyboardInterrupt  # Ctrl-C
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(model: pl.LightningModule, folder, max_epochs: int) -> pl.Trainer:
    data = DataLoader(TensorDataset(torch.randn(8, 2), torch.randn(8, 1)), batch_size=4)
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=[CheckpointOnInterrupt(str(folder))], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, train_dataloaders=data)
    return trainer


def test_a_stop_saves_the_moment_and_a_new_fit_in_that_folder_starts_from_scratch(tmp_path):
    with pytest.raises(SystemExit):  # Lightning ends a Ctrl-C with exit status 1
        fit(Regression(stop_at_step=5), tmp_path, max_epochs=4)  # 2 steps an epoch: stopped in epoch 2
    interrupted = torch.load(tmp_path / "interrupted.ckpt", weights_only=True)
    assert (interrupted["epoch"], interrupted["global_step"]) == (2, 5)
    # Lightning's own OnExceptionCheckpoint turns fit(ckpt_path=None) into ckpt_path="last": this fit would
    # continue from that mid-epoch checkpoint (epoch 2 of 1: nothing trained) instead of training epoch 0
    trainer = fit(Regression(), tmp_path, max_epochs=1)
    assert (trainer.current_epoch, trainer.global_step) == (1, 2)
