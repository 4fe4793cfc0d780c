"""``splitlearn reproduce talk-tables`` end to end."""

import argparse

from splitlearn.cli import reproduce


def _parse(argv):
    parser = argparse.ArgumentParser(prog="splitlearn")
    reproduce.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_talk_tables(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert reproduce.run(_parse(["reproduce", "talk-tables", "--out", str(tmp_path)])) == 0
    out = capsys.readouterr().out
    expected = ("Table 1: compute per client", "Table 2: bandwidth per client", "Distribution of parameters in AlexNet",
                "62,378,344 | 62,378,344", "Assumptions", "Row by row", "talk 190", "K* =")
    assert all(text in out for text in expected)
    assert (tmp_path / "crossover.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_defaults():
    args = _parse(["reproduce", "talk-tables"])
    assert (args.what, args.out, args.epochs) == ("talk-tables", "runs/talk-tables", 30)
