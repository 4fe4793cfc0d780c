"""``splitlearn experiment privacy``: defences against attacks, one report."""

import json
from types import SimpleNamespace

import pytest
import torch

from splitlearn.cli.app import main
from splitlearn.data.dataset import ArrayDataset
from splitlearn.runner import privacy_matrix
from tests.report.test_leakage import _Page


def test_every_attack_against_each_defence_in_one_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(privacy_matrix, "STRENGTHS", {"max_norm": (1.0,), "gradient_noise": (1.0,), "smashed_dp": (0.001,)})
    monkeypatch.setattr(privacy_matrix, "HIJACKING_STEPS", 400)
    assert main(["experiment", "privacy", "--epochs", "8", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[1/4] undefended: training and attacking" in out and "[4/4] smashed_dp 0.001: accuracy" in out  # progress
    matrix = json.loads((tmp_path / "matrix.json").read_text())
    rows = {(r["defence"], r["strength"]): r for r in matrix["rows"]}
    none, noise, max_norm, dp = rows["none", 0.0], rows["gradient_noise", 1.0], rows["max_norm", 1.0], rows["smashed_dp", 0.001]
    assert matrix["chance"]["label attack accuracy"] == 0.1 and 0 < matrix["chance"]["reconstruction SSIM"] < 0.6
    # Knowing only each sample's class (its class's mean image) scores well above chance, below the undefended attack.
    floor = matrix["class_floor"]
    assert set(floor) == {"reconstruction SSIM", "inversion SSIM"}
    assert matrix["chance"]["reconstruction SSIM"] + 0.2 < floor["reconstruction SSIM"] < none["reconstruction SSIM"] - 0.1
    assert "by class" in out
    # Undefended, every attack beats chance by a wide margin.
    for key in ("reconstruction SSIM", "inversion SSIM", "label attack accuracy", "completion accuracy"):
        assert none[key] > matrix["chance"][key] + 0.3, key
    # The label defences cut the gradient attack by 30 points or more, for a few points of accuracy at most.
    for defended in (noise, max_norm):
        assert defended["label attack accuracy"] < none["label attack accuracy"] - 0.3
        assert defended["test_accuracy"] > none["test_accuracy"] - 0.05
    # The attacker reproduces the client's release (clipping) on its auxiliary data: with almost no
    # noise the decoder still reconstructs, and the run reports its ε.
    assert dp["reconstruction SSIM"] > 0.5 and dp["dp_epsilon"] > 1000
    # A hijacking server reconstructs far above chance from public data alone; the client's check
    # stops it near chance, and raises no alarm against an honest server.
    h, blind = matrix["hijacking"], matrix["chance"]["reconstruction SSIM"]
    assert h["steps"] == 400 and len(h["history"]) == 10 and h["ssim"] > blind + 0.2
    assert h["checked"]["stopped_at"] < 200 and h["checked"]["ssim"] < blind + 0.1
    assert h["honest"]["stopped_at"] is None and h["honest"]["lowest_score"] > h["threshold"]
    assert h["honest"]["accuracy"] > h["honest"]["accuracy_without_check"] - 0.05  # the check costs a few points at most
    assert f"Hijacking (a malicious server, FSHA): reconstruction SSIM {h['ssim']:.3f} after 400 steps" in out
    assert "hijacking [1/3]" in out and "hijacking [2/3]" in out and "hijacking [3/3]" in out and "no alarm" in out
    page = _Page()
    page.feed((tmp_path / "report.html").read_text())
    assert set(page.figures) == {"matrix-reconstruction", "matrix-inversion", "matrix-label_clustering", "matrix-model_completion",
                                 "matrix-hijacking", "matrix-hijacking-pictures"}
    assert page.tables == ["hijacking", "matrix"] and len(page.captions) == 6
    assert torch.tensor(h["pictures"]["originals"]).shape == torch.tensor(h["pictures"]["checked"]).shape == (8, 1, 8, 8)
    text = (tmp_path / "report.html").read_text()
    assert "max_norm at 1: " in text and text.count("<p data-floor>") == 2
    assert f"stopped training at step {h['checked']['stopped_at']}" in text and "of test accuracy there" in text
    # each attack's section says who attacks, what they see and what they hold
    assert text.count("<p data-threat-model>") == 5 and "a malicious server that the client trains with" in text


def test_the_class_only_level_is_one_where_each_class_is_one_image():
    """Every image of a class the same: its class's mean image is the image itself (SSIM 1),
    while the mean of all images (chance) is not."""
    torch.manual_seed(0)
    patterns = torch.rand(3, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    data = ArrayDataset(patterns[labels], labels)
    built = SimpleNamespace(train=data, test=data)
    floor = privacy_matrix._class_floor(built)
    assert floor == {"reconstruction SSIM": pytest.approx(1.0), "inversion SSIM": pytest.approx(1.0)}
    assert privacy_matrix._chance(built)["reconstruction SSIM"] < 0.9
