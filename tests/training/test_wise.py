"""WiSE-FT (src/wise.py): mixes of a checkpoint's trunk with the pretrained one, each validated."""

import json

import pytest
import torch
from helpers import run_script

from siamese.models.checkpoints import load_checkpoint
from siamese.training.wise import mixed_state
from siamese.use.checkpoints import load_for_use


def test_a_mix_interpolates_the_trunk_and_keeps_batch_counts():
    tuned = {"trunk.w": torch.tensor([1.0, 3.0]), "trunk.bn.num_batches_tracked": torch.tensor(7)}
    pretrained = {"trunk.w": torch.tensor([0.0, 1.0]), "trunk.bn.num_batches_tracked": torch.tensor(0)}
    mixed = mixed_state(tuned, pretrained, 0.25)
    assert mixed["trunk.w"].tolist() == [0.25, 1.5]  # 0.75 * pretrained + 0.25 * tuned
    assert int(mixed["trunk.bn.num_batches_tracked"]) == 7


@pytest.mark.slow
def test_wise_validates_every_mix_and_alpha_1_is_the_checkpoint(trained_run, checkpoint, tmp_path):
    run_dir, _ = trained_run
    result = run_script("src/wise.py", f"ckpt_path={checkpoint}", "alphas=[0,0.5,1]", "accelerator=cpu",
                        f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    mixes = {row["alpha"]: row for row in json.loads((tmp_path / "metrics.json").read_text())["mixes"]}
    trained = json.loads((run_dir / "metrics.json").read_text())
    for name in ("val_all_auroc", "val_threshold", "val_auroc", "foreign_auroc"):
        assert mixes[1.0][name] == pytest.approx(trained[name], abs=1e-6), name
    trunks = {alpha: load_checkpoint(tmp_path / f"wise_{alpha:g}.ckpt")["state_dict"] for alpha in (0, 0.5, 1)}
    name = next(k for k in trunks[1] if k.startswith("network.backbone.") and k.endswith("conv1.weight"))
    assert not torch.allclose(trunks[0][name], trunks[1][name])  # the pretrained trunk is another
    assert torch.allclose(trunks[0.5][name], (trunks[0][name] + trunks[1][name]) / 2, atol=1e-6)
    # the module holds its embedder under two names: every copy of the trunk in the file is the mix
    for key, value in trunks[0.5].items():
        if key.startswith("embed_images."):
            assert torch.equal(value, trunks[0.5]["network." + key.removeprefix("embed_images.")]), key
    assert mixes[0.0]["val_loss"] != pytest.approx(mixes[1.0]["val_loss"])  # another model scored
    assert torch.equal(trunks[0.5]["network.head.weight"], trunks[1]["network.head.weight"])
    mix = load_for_use(tmp_path / "wise_0.5.ckpt")  # a checkpoint like any other, with its own threshold
    assert mix.verdict.threshold == pytest.approx(mixes[0.5]["val_threshold"], abs=1e-6)
    assert "validation chooses alpha=" in result.stdout


def test_wise_refuses_alphas_outside_0_1(checkpoint, tmp_path):
    result = run_script("src/wise.py", f"ckpt_path={checkpoint}", "alphas=[0.5,2]", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: alphas must be a list of numbers between 0 (pretrained trunk) and 1 (fine-tuned), got [0.5, 2]")
