"""Every option of every config group composes and instantiates."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import CONF, ROOT, compose_train
from hydra.utils import instantiate
from pytorch_lightning.callbacks import ProgressBar

from siamese.data.datamodule import PairDataModule
from siamese.models.miners import BatchPairs
from siamese.training.module import SiameseModule
from siamese.training.run import build_trainer, instantiate_group

GROUPS = ["paths", "backbone", "data", "model", "model/loss", "trainer", "callbacks", "logger", "experiment", "debug", "sweep"]
OPTIONS = [(group, path.relative_to(CONF / group).with_suffix("").as_posix()) for group in GROUPS
           for path in sorted((CONF / group).glob("*.yaml" if group == "model" else "**/*.yaml"))]
OFFLINE = ["backbone.weights=null"]


def test_every_group_has_options():
    assert {group for group, _ in OPTIONS} == set(GROUPS)


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group, option, tmp_path):
    timm = "pretrained" in compose_train([f"{group}={option}"], tmp_path).backbone
    cfg = compose_train([f"{group}={option}", *(["backbone.pretrained=false"] if timm else OFFLINE)], tmp_path)
    assert isinstance(instantiate(cfg.data), PairDataModule)
    assert isinstance(instantiate(cfg.model), SiameseModule)
    for entry in [*instantiate_group(cfg.callbacks), *instantiate_group(cfg.logger)]:
        assert isinstance(entry, (pl.Callback, pl.loggers.Logger))
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        assert cfg.trainer.devices in (1, -1)  # composes; instantiating needs a GPU
    else:
        assert isinstance(instantiate(cfg.trainer, logger=False), pl.Trainer)


def test_no_experiment_is_built_on_another():
    from omegaconf import OmegaConf

    experiments = sorted((CONF / "experiment").rglob("*.yaml"))
    assert {path.relative_to(CONF / "experiment").as_posix() for path in experiments} >= {
        "tutorial.yaml", "photos.yaml", "history/lite0_ema_auroc.yaml"}
    for path in experiments:
        for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults", []):
            assert isinstance(entry, dict) and all(key.startswith("override /") for key in entry), (path, entry)


def test_the_paths_group_says_where_everything_lives(tmp_path):
    default = compose_train([], tmp_path)
    assert (default.data.root, default.data.download, default.data.foreign) == ("data/", True, None)
    assert default.backbone.weights_path is None
    shared = compose_train(["paths=shared"], tmp_path)
    assert (shared.data.root, shared.data.download) == ("../shared/data160", False)
    assert shared.data.foreign == "../shared/flower_photos"
    assert shared.backbone.weights_path == "../shared/weights/mobilenet_v2_imagenet_quant.pth"
    photos = compose_train(["experiment=photos", "paths=shared"], tmp_path)
    assert photos.backbone.weights_path == "weights/tf_efficientnet_lite0.pth"
    assert compose_train(["paths=shared", "backbone=resnet18"], tmp_path).backbone.weights_path is None
    assert compose_train(["paths.data=/photos", "paths.download=false"], tmp_path).data.root == "/photos"


def test_the_seeds_x_splits_sweep_is_the_grid_of_the_results_tables():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=photos", "sweep=seeds_x_splits"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == {"data.split": "stratified,official,unseen_classes", "seed": "1,2,3"}
    assert {"sweep", "paths"} <= set(cfg.hydra.job.config.override_dirname.exclude_keys)  # not in job folder names


def test_top_level_keys_reach_the_deeper_configs(tmp_path):
    cfg = compose_train(["margin=2.0", "batch_size=32", "image_size=96", "seed=3", *OFFLINE], tmp_path)
    assert cfg.model.loss.margin == 2.0 and instantiate(cfg.model.loss).margin == 2.0
    data = instantiate(cfg.data)
    assert (data.batch_size, data.image_size, data.seed) == (32, 96, 3)


def test_defaults_follow_the_tutorial(tmp_path):
    cfg = compose_train([], tmp_path)
    assert (cfg.margin, cfg.batch_size, cfg.image_size) == (1.0, 8, 224)
    assert cfg.backbone.name == "mobilenet_v2" and cfg.backbone.weights == "DEFAULT"
    assert cfg.backbone.trainable_fraction == 0.1
    assert (cfg.data.root, cfg.data.download, cfg.data.split) == ("data/", True, "official")
    assert cfg.callbacks.early_stopping.monitor == "val_loss" and cfg.callbacks.early_stopping.patience == 30
    assert cfg.trainer.max_epochs == 200 and cfg.model.optimizer.lr == 1e-3


def test_tutorial_experiment_ports_the_recipe(tmp_path):
    cfg = compose_train(["experiment=tutorial", *OFFLINE], tmp_path)
    assert cfg.model.network.normalize_embedding is False
    assert cfg.data.split == "stratified" and cfg.data.augmentation == "tutorial"
    assert cfg.model.threshold == 0.5 and cfg.batch_size == 8


def test_finetune_last_blocks_trains_blocks_14_to_18_on_cached_features(tmp_path):
    cfg = compose_train(["experiment=history/finetune_last_blocks", *OFFLINE], tmp_path)
    assert cfg.data.augmentation == "none" and cfg.model.cache_frozen_features is True
    module = instantiate(cfg.model)
    backbone = module.network.backbone
    assert backbone.frozen_blocks == 14 and len(backbone.trunk) == 19
    assert all(p.requires_grad for p in backbone.trunk[14:].parameters())
    assert module.network.normalize_embedding is True
    optimizer = module.configure_optimizers()["optimizer"]
    assert [group["lr"] for group in optimizer.param_groups] == [cfg.model.optimizer.lr, cfg.model.backbone_lr]


def test_finetune_last_blocks_batch_pairs_adds_the_miner_flips_and_margin(tmp_path):
    cfg = compose_train(["experiment=history/finetune_last_blocks_batch_pairs", *OFFLINE], tmp_path)
    assert cfg.data.augmentation == "flip" and cfg.model.cache_frozen_features is True
    assert cfg.callbacks.early_stopping.monitor == "val_loss" and cfg.trainer.max_epochs == 20
    module = instantiate(cfg.model)
    assert isinstance(module.loss.miner, BatchPairs) and module.loss.miner.margin == module.loss.margin == 1.4
    assert module.network.backbone.frozen_blocks == 14 and module.backbone_lr == 1e-4


def test_lite0_ema_auroc_is_lite0_batch_pairs_plus_the_average_and_the_auroc_checkpoint(tmp_path):
    from omegaconf import OmegaConf

    from siamese.training.callbacks import AveragedWeights

    offline = ["backbone.pretrained=false"]
    best = compose_train(["experiment=history/lite0_ema_auroc", *offline], tmp_path)
    base = compose_train(["experiment=history/lite0_batch_pairs", *offline], tmp_path)
    assert (best.callbacks.model_checkpoint.monitor, best.callbacks.model_checkpoint.mode) == ("val_all_auroc", "max")
    assert best.callbacks.early_stopping.monitor == "val_loss"  # stopping stays on the loss
    averaging = [c for c in instantiate_group(best.callbacks) if isinstance(c, AveragedWeights)]
    assert len(averaging) == 1 and best.callbacks.ema.decay == 0.99
    plain = lambda cfg: OmegaConf.to_container(cfg, resolve=True)  # noqa: E731
    assert {k: v for k, v in plain(best).items() if k != "callbacks"} == \
        {k: v for k, v in plain(base).items() if k != "callbacks"}  # nothing else differs


def test_every_target_uses_one_lightning_namespace():
    texts = "\n".join(path.read_text() for path in Path(CONF).rglob("*.yaml"))
    assert "pytorch_lightning." in texts
    assert "lightning.pytorch" not in texts and "_target_: lightning." not in texts


@pytest.mark.parametrize("setting, shown", [("false", False), ("true", True), ("null", False)])  # null: stdout is no tty here
def test_the_progress_bar_callback_follows_enable_progress_bar(setting, shown, tmp_path):
    cfg = compose_train([f"trainer.enable_progress_bar={setting}", "trainer.accelerator=cpu"], tmp_path)
    trainer = build_trainer(cfg.trainer, instantiate_group(cfg.callbacks), logger=False)
    bars = [c for c in trainer.callbacks if isinstance(c, ProgressBar)]
    assert trainer.progress_bar_callback is (bars[0] if shown else None) and len(bars) == int(shown)
    if shown:
        assert bars[0].refresh_rate == cfg.callbacks.progress_bar.refresh_rate  # the configured bar, not Lightning's


def _scalar_defaults(node) -> dict:
    """The plain values of a config node: no interpolations, no nested configs."""
    from omegaconf import OmegaConf

    return {key: node[key] for key in node if key != "_target_" and not OmegaConf.is_interpolation(node, key)
            and not OmegaConf.is_config(node[key])}


CONFIG_NODES = {  # config file -> the node of it that instantiates a class
    "data/flowers102.yaml": "", "model/siamese.yaml": "",
    "model/siamese.yaml:network": "network", "model/loss/contrastive.yaml": "", "model/loss/pml.yaml": "",
    "backbone/torchvision.yaml": "", "backbone/timm.yaml": "",
}


@pytest.mark.parametrize("source", list(CONFIG_NODES))
def test_the_python_defaults_are_the_yaml_defaults(source):
    """The configs are the reference: a class built directly (tests, notebooks) behaves as configured."""
    import inspect

    from hydra.utils import get_class
    from omegaconf import OmegaConf

    node = OmegaConf.load(CONF / source.split(":")[0])
    for key in filter(None, CONFIG_NODES[source].split(".")):
        node = node[key]
    parameters = inspect.signature(get_class(node._target_).__init__).parameters
    differing = {key: (value, parameters[key].default) for key, value in _scalar_defaults(node).items()
                 if key in parameters and parameters[key].default is not inspect.Parameter.empty
                 and parameters[key].default != value}
    assert differing == {}, f"{source}: yaml value vs python default"


def generalise_lever(name):
    """The overrides of lever ``name`` in benchmarks/generalise.sh (overrides of history/photos_contrastive)."""
    script = (ROOT / "benchmarks" / "generalise.sh").read_text()
    return next(line.strip().strip('"').split()[1:] for line in script.splitlines()
                if line.strip().startswith(f'"{name} '))


def test_the_contrastive_photos_recipe_is_the_best_128_px_recipe_at_160_px_on_photos_that_keep_their_shape(tmp_path):
    from omegaconf import OmegaConf

    offline = ["backbone.pretrained=false"]
    photos = compose_train(["experiment=history/photos_contrastive", *offline], tmp_path)
    best = compose_train(["experiment=history/lite0_ema_auroc", "image_size=160", *offline], tmp_path)
    assert OmegaConf.to_container(photos, resolve=True) == OmegaConf.to_container(best, resolve=True)
    assert photos.data.resize == "crop" and photos.callbacks.model_checkpoint.monitor == "val_all_auroc"


def test_the_photos_recipe_is_the_row_proxy_anchor_256_of_generalise_sh(tmp_path):
    from omegaconf import OmegaConf

    offline = ["backbone.pretrained=false"]
    measured = compose_train(["experiment=history/photos_contrastive", *generalise_lever("proxy_anchor_256"), *offline],
                             tmp_path)
    photos = compose_train(["experiment=photos", *offline], tmp_path)
    assert OmegaConf.to_container(photos, resolve=True) == OmegaConf.to_container(measured, resolve=True)
    assert photos.model.loss.name == "ProxyAnchorLoss" and photos.model.loss.miner is None
    assert (photos.model.network.embedding_dim, photos.model.loss_lr) == (256, 1.0e-2)


def test_the_new_kinds_recipe_is_the_row_of_generalise_sh_that_validation_chose_on_unseen_kinds(tmp_path):
    from omegaconf import OmegaConf

    offline = ["backbone.pretrained=false"]
    measured = compose_train(["experiment=history/photos_contrastive", "data.split=unseen_classes",
                              "callbacks.early_stopping.patience=3", *generalise_lever("normalized_softmax_256_joined"),
                              *offline], tmp_path)
    new_kinds = compose_train(["experiment=new_kinds", *offline], tmp_path)
    assert OmegaConf.to_container(new_kinds, resolve=True) == OmegaConf.to_container(measured, resolve=True)
    assert (new_kinds.model.network.embedding_dim, new_kinds.model.network.join_pretrained) == (256, 0.5)
    assert new_kinds.model.loss.name == "NormalizedSoftmaxLoss" and new_kinds.model.loss.miner is None
