"""The report page contains every figure and table it promises, as valid embedded PNGs."""

import base64
from html.parser import HTMLParser

import pytest
import torch

from splitlearn.report import RunEvidence, verdicts, write_report


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.figures, self.tables, self.captions, self._in_caption = {}, [], [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.figures[a["data-figure"]] = a["src"]
        elif tag == "table":
            self.tables.append(a["data-table"])
        elif tag == "figcaption":
            self._in_caption = True

    def handle_endtag(self, tag):
        self._in_caption = self._in_caption and tag != "figcaption"

    def handle_data(self, data):
        if self._in_caption:
            self.captions.append(data)


def _runs():
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(6, 1, 8, 8, generator=g)
    epochs = lambda d: [{"epoch": i + 1, "test_accuracy": 0.8 + 0.05 * i, "dcor": d - 0.1 * i} for i in range(3)]  # noqa: E731
    return [
        RunEvidence("vanilla", epochs(0.95), {"ssim": 0.7, "mse": 0.01}, imgs, imgs * 0.9),
        RunEvidence("NoPeek a1=0.5", epochs(0.5), {"ssim": 0.2, "mse": 0.05}, imgs, torch.rand(6, 1, 8, 8, generator=g)),
    ]


def test_report_has_every_figure_and_table(tmp_path):
    sweep = [{"a1": a, "test_accuracy": 0.9 - a / 10, "dcor": 0.9 - a / 2, "ssim": 0.6 - a / 3} for a in (0.0, 0.5, 1.0)]
    path = write_report(tmp_path / "report.html", runs=_runs(), config={"data": {"name": "digits"}, "a1": 0.5}, sweep=sweep)
    page = _Page()
    page.feed(path.read_text())
    assert set(page.figures) == {"accuracy", "dcor", "reconstructions", "tradeoff"}
    for src in page.figures.values():
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.tables == ["sweep", "attacks", "config"]
    assert len(page.captions) == len(page.figures)  # one sentence per figure
    text = path.read_text()
    assert "NoPeek a1=0.5" in text and "data.name" in text
    # Each attack shown comes with its threat model, from the attack registry.
    import html

    from splitlearn.privacy.attacks import ATTACKS

    assert "<b>reconstruction</b>: " + html.escape(ATTACKS["reconstruction"].threat_model[:60]) in text
    assert "label_direction" not in text  # no label attack was run


def test_report_without_optional_parts(tmp_path):
    runs = [RunEvidence("vanilla", [{"epoch": 1, "test_accuracy": 0.9}])]
    page = _Page()
    page.feed(write_report(tmp_path / "r.html", runs=runs, config={}).read_text())
    assert set(page.figures) == {"accuracy"} and page.tables == ["attacks", "config"]
    with pytest.raises(ValueError, match="at least one run"):
        write_report(tmp_path / "x.html", runs=[], config={})


def test_each_run_shows_its_own_configuration(tmp_path):
    vanilla, nopeek = _runs()
    base = {"split": {"configuration": "ushaped"}, "privacy": {"nopeek_a1": 0.0}, "train": {"epochs": 3}}
    vanilla.config, nopeek.config = base, base | {"privacy": {"nopeek_a1": 2.0}}
    text = write_report(tmp_path / "r.html", runs=[vanilla, nopeek], config=base).read_text()
    table = text[text.index('data-table="config"'):]
    assert "<th>vanilla</th><th>NoPeek a1=0.5</th>" in table
    first_row = table[table.index("<tbody>"):].split("</tr>")[0]
    assert "privacy.nopeek_a1" in first_row and "<td>0.0</td><td>2.0</td>" in first_row  # what differs comes first


def test_verdicts_read_each_attack_against_chance():
    run = RunEvidence("NoPeek", [], {"reconstruction SSIM": 0.61, "label attack accuracy": 0.888}, classes=10)
    said = " ".join(verdicts(run))
    assert "Inputs are still recognisable" in said and "SSIM 0.61" in said
    assert "Labels leak" in said and "89%" in said and "against 10% chance (10 classes)" in said
    quiet = RunEvidence("x", [], {"reconstruction SSIM": 0.05, "label attack accuracy": 0.12, "label norm AUC": 0.55}, classes=10)
    said = " ".join(verdicts(quiet))
    assert "little likeness" in said and "No label leakage beyond chance" in said and "Little label leakage" in said


def test_report_reconciles_ushaped_label_leakage_and_nopeek(tmp_path):
    run = RunEvidence("NoPeek a1=2", [{"epoch": 1, "test_accuracy": 0.9}], {"label attack accuracy": 0.88}, classes=10,
                      config={"split": {"configuration": "ushaped"}, "privacy": {"nopeek_a1": 2.0}})
    text = write_report(tmp_path / "r.html", runs=[run], config={}).read_text()
    assert "<ul data-verdicts>" in text and "Labels leak" in text
    assert "labels themselves never leave the client" in text and "predictive of Y by design" in text
    assert "SSIM (structural similarity)" in text
