"""``splitlearn runs`` lists run folders, and a crafted file spoils only its own row."""

import json

from splitlearn.cli.app import main


def test_runs_lists_finished_unfinished_and_unreadable_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich fits the table to the terminal
    out = tmp_path / "runs"
    assert main(["train", "--epochs", "1", "--clients", "1", "--out", str(out)]) == 0
    (done,) = out.iterdir()
    broken = out / "20260101-000000-vanilla-digits"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"split": {"configuration": "vanilla"}, "data": {"name": "digits"}}))
    (broken / "metrics.json").write_text("{not json")
    started = out / "20260101-000001-ushaped-digits"
    started.mkdir()
    (started / "config.json").write_text(json.dumps({"split": {"configuration": ["[bold]x"]}}))
    (out / "not-a-run").mkdir()
    capsys.readouterr()
    assert main(["runs", str(out)]) == 0
    text = capsys.readouterr().out
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line and "run" not in line.split("│")[1]}
    assert set(lines) == {done.name, broken.name, started.name}
    accuracy = json.loads((done / "metrics.json").read_text())["epochs"][-1]["test_accuracy"]
    assert "finished" in lines[done.name] and f"{accuracy:.3f}" in lines[done.name] and "in-process" in lines[done.name]
    assert "unreadable (metrics.json: JSONDecodeError)" in lines[broken.name]
    assert "started" in lines[started.name] and "?" in lines[started.name]


def test_runs_on_an_empty_or_missing_folder(tmp_path, capsys):
    assert main(["runs", str(tmp_path)]) == 0
    assert "no run folders" in capsys.readouterr().out
    assert main(["runs", str(tmp_path / "absent")]) == 2
    assert "is not a folder" in capsys.readouterr().err
