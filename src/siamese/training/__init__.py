"""Training: the LightningModule, one run, the frozen-feature cache, callbacks, WiSE-FT, sweeps, DDP inside Hydra."""
