"""A model of the user's own (a graph model cut by module name) deploys like a built-in one."""

from splitlearn import deploy
from splitlearn.cli.app import main
from splitlearn.config import load_config

from .conftest import in_threads, write_config
from .test_deploy import _check_matches_in_process


def test_a_graph_model_deployed_trains_what_train_trains(tmp_path):
    config = load_config(write_config(tmp_path / "config.json", data={"limit_train": 64, "limit_test": 32},
                                      model={"name": "tests.cli.test_your_model:tiny_net", "cut": ["stem"],
                                             "kwargs": {"width": 4}},
                                      split={"configuration": "vanilla", "clients": 2}, train={"epochs": 1}),
                         {"out": str(tmp_path / "runs")})
    assert main(["certs", "--out", str(tmp_path / "certs"), "--clients", "client0,client1"]) == 0
    clients = ("client0", "client1")
    results = in_threads(config, tmp_path / "certs", {c: dict(out=tmp_path / "client") for c in clients}, timeout=20)
    assert isinstance(results["server"], deploy.ServeResult), results
    assert all(isinstance(results[c], deploy.JoinResult) for c in clients), results
    _check_matches_in_process(config, tmp_path)
