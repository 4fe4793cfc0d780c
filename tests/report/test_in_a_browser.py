"""The report as a browser renders it: every figure decodes to an image of its own size, and the
page loads nothing from elsewhere. Runs headless Chromium where it is installed (Debian:
``apt-get install chromium``, which ``.ci/run`` does), and skips cleanly where it is not."""

import json
import re
import shutil
import subprocess

import pytest
import torch

from splitlearn.report import write_report
from splitlearn.report.leakage import write_matrix_report

from .test_leakage import _runs

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)

# Once the page has loaded, write each figure's decoded size (and any load error) into the page,
# where --dump-dom returns it.
_PROBE = """<script>
window.addEventListener("load", () => {
  const figures = [...document.querySelectorAll("img[data-figure]")].map(
    (img) => [img.dataset.figure, img.complete, img.naturalWidth, img.naturalHeight]);
  document.body.setAttribute("data-probe", JSON.stringify({figures, resources: performance.getEntriesByType("resource").length}));
});
</script>"""


def _leakage_report(tmp_path):
    sweep = [{"a1": a, "test_accuracy": 0.9 - a / 10, "dcor": 0.9 - a / 2, "ssim": 0.6 - a / 3} for a in (0.0, 0.5, 1.0)]
    return (write_report(tmp_path / "report.html", runs=_runs(), config={"data": {"name": "digits"}}, sweep=sweep),
            {"accuracy", "dcor", "reconstructions", "tradeoff"})


def _matrix_report(tmp_path):
    attacks = {"reconstruction": ("reconstruction SSIM", "inputs"), "model_completion": ("completion accuracy", "labels")}
    rows = [{"defence": d, "strength": s, "test_accuracy": 0.9 - s / 10, "reconstruction SSIM": 0.9 - s / 5, "completion accuracy": 0.8}
            for d, s in (("none", 0.0), ("nopeek", 2.0), ("nopeek", 8.0), ("max_norm", 1.0))]
    matrix = {"dataset": "digits", "epochs": 3, "rows": rows, "chance": {"reconstruction SSIM": 0.37, "completion accuracy": 0.1}, "class_floor": {"reconstruction SSIM": 0.7},
              "hijacking": {"steps": 400, "public": 480, "victims": 64, "history": [[200, 0.6], [400, 0.8]], "ssim": 0.8, "mse": 0.02,
                            "checked": {"stopped_at": 47, "fakes": 5, "score": 0.0, "ssim": 0.36},
                            "honest": {"stopped_at": None, "fakes": 40, "score": 1.1, "lowest_score": 1.0, "accuracy": 0.9, "accuracy_without_check": 0.91}, "threshold": 0.2,
                            "pictures": {k: torch.rand(3, 1, 8, 8).tolist() for k in ("originals", "unaware", "checked")}},
              "attacks": {n: {"score": k, "target": t} for n, (k, t) in attacks.items()}}
    return (write_matrix_report(tmp_path / "matrix.html", matrix, defences={"nopeek": "a1 DCOR", "max_norm": "noise"}),
            {"matrix-reconstruction", "matrix-model_completion", "matrix-hijacking", "matrix-hijacking-pictures"})


@pytest.mark.skipif(BROWSER is None, reason="needs a headless Chromium (apt-get install chromium)")
@pytest.mark.parametrize("make", [_leakage_report, _matrix_report])
def test_every_figure_renders_in_a_real_browser(tmp_path, make):
    path, expected = make(tmp_path)
    probed = tmp_path / "probed.html"
    probed.write_text(path.read_text().replace("</body>", _PROBE + "</body>"))
    done = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert found, done.stdout[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    figures = {name: (complete, width, height) for name, complete, width, height in probe["figures"]}
    assert set(figures) == expected
    for name, (complete, width, height) in figures.items():
        assert complete and width > 100 and height > 100, (name, complete, width, height)
    assert probe["resources"] == 0  # self-contained: nothing fetched from anywhere
