"""``splitlearn serve`` + ``splitlearn join`` as separate processes over mutual TLS train exactly
what ``splitlearn train`` trains in one process, and refuse clients with bad credentials."""

import json
import re
import shutil

import grpc
import pytest
import torch
from safetensors.torch import load_file

from splitlearn import deploy, runner
from splitlearn.cli.app import main
from splitlearn.config import load_config
from splitlearn.transport.grpc import ClientTransport, StreamClosed

from .conftest import finish, free_port, in_threads, predict_in_threads, write_config


def _tensors(folder) -> dict[str, dict[str, torch.Tensor]]:
    return {p.stem: load_file(p) for p in sorted(folder.glob("*.safetensors"))}


def _check_matches_in_process(config, tmp_path, *, shared_scores: bool = False) -> None:
    """The weights the server and the clients wrote equal, bit for bit, those of ``splitlearn train``;
    so do the train losses the server reports in vanilla (also across its restarts), and its test
    scores, which a U-shaped client keeps to itself unless ``shared_scores``."""
    run_dir = next((tmp_path / "runs").iterdir())
    assert {p.name for p in run_dir.iterdir()} == {"config.json", "metrics.json", "status.json", "weights"}
    remote = _tensors(run_dir / "weights") | _tensors(tmp_path / "client")
    config = load_config(config) if isinstance(config, str) else config
    local = runner.train(config.override({"out": str(tmp_path / "local")}))
    expected = _tensors(local.run_dir / "weights")
    assert sorted(remote) == sorted(expected) and "server" in expected
    for party, tensors in expected.items():
        assert list(tensors) == list(remote[party])
        assert all(torch.equal(t, remote[party][k]) for k, t in tensors.items()), f"{party}: weights differ"
    # Where the server computes the loss (labels sent to it), it reports the same train loss.
    served_metrics = json.loads((run_dir / "metrics.json").read_text())
    trained_metrics = json.loads((local.run_dir / "metrics.json").read_text())
    # Every message of a client crossed at least once (more where steps were run again), counted across restarts too.
    sent, clients = served_metrics["bytes_sent"], served_metrics["remote_parties"]
    assert all(sent[c] >= trained_metrics["bytes_sent"][c] > 0 for c in clients), (sent, trained_metrics["bytes_sent"])
    served, trained = served_metrics["epochs"], trained_metrics["epochs"]
    if config.split.configuration == "vanilla":
        assert [e["train_loss"] for e in served] == [e["train_loss"] for e in trained]
    # Each client measured DCOR(X, Z) on its own held-out data and reported it: the same values, epoch by epoch.
    leakage = lambda epochs: [{k: e.get(k) for k in ("dcor", "dcor_by_party", "collapsed")} for e in epochs]  # noqa: E731
    assert leakage(served) == leakage(trained), (leakage(served), leakage(trained))  # none where the test split is under a batch
    scores = lambda epochs: [{k: v for k, v in e.items() if k.startswith("test_")} for e in epochs]  # noqa: E731
    if config.split.configuration != "ushaped" or shared_scores:  # scored at the server, or reported by the client
        assert scores(served) == scores(trained) and scores(served)[-1]["test_accuracy"] > 0
    else:
        assert scores(served) == [{}] * len(served)


def _join(spawn, config, target, party, certs, out, *extra):
    return spawn("join", "--config", config, "--server", target, "--party", party, "--certs", certs, "--out", out, *extra)


def _events(out: str, name: str) -> list[dict]:
    return [e for e in map(json.loads, (line for line in out.splitlines() if line.startswith("{"))) if e["event"] == name]


def test_bad_credentials_are_refused_and_the_clients_train_what_train_trains(tmp_path, certs, spawn, capsys):
    """Vanilla, 2 round-robin clients, mutual TLS: forged clients are refused, the session goes on."""
    config = write_config(tmp_path / "config.json")
    target = f"localhost:{free_port()}"
    server = spawn("serve", "--config", config, "--listen", target, "--certs", certs, "--out", tmp_path / "runs",
                   "--join-timeout", 45, "--timeout", 30)
    forged = tmp_path / "forged"
    shutil.copytree(certs, forged)
    (forged / "client0.token").write_text("not-the-token")
    (forged / "client1.token").write_text((certs / "client0.token").read_text())  # client0's token, client1's certificate
    for party, why in (("client0", "unknown bearer token"), ("client1", "certificate is for ['client1']")):
        assert main(["join", "--config", config, "--server", target, "--party", party, "--certs", str(forged),
                     "--out", str(tmp_path / "forged-out")]) == 2
        err = capsys.readouterr().err.strip()
        assert "rejected credentials" in err and why in err and "\n" not in err, err

    # a client certificate from another CA (with the right token, trusting the right CA) fails the handshake
    rogue = tmp_path / "rogue"
    assert main(["certs", "--out", str(rogue), "--server-name", "localhost", "--clients", "client0"]) == 0
    for name in ("ca.pem", "client0.token"):
        (rogue / name).write_bytes((certs / name).read_bytes())
    assert main(["join", "--config", config, "--server", target, "--party", "client0", "--certs", str(rogue),
                 "--out", str(tmp_path / "rogue-out"), "--connect-timeout", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "TLS handshake failed" in err and "\n" not in err, err

    # TLS without a client certificate fails the handshake, valid token or not
    anonymous = ClientTransport(timeout=20)
    anonymous.connect(target, name="client0", token=(certs / "client0.token").read_text(),
                      credentials=grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes()))
    with pytest.raises(StreamClosed) as refused:
        anonymous.serve()
    anonymous.close()
    assert refused.value.code is grpc.StatusCode.UNAVAILABLE

    joins = [_join(spawn, config, target, "client0", certs, tmp_path / "client"),
             _join(spawn, config, target, "client1", certs, tmp_path / "client", "--log-format", "json")]
    outs = []
    for proc in (server, *joins):
        code, out = finish(proc)
        assert code == 0, out
        outs.append(out)
    assert "(mutual TLS + tokens)" in outs[0] and "weights in" in outs[2]
    _check_matches_in_process(config, tmp_path)
    # Each join says what it did in each epoch, with the leakage it measured on its own held-out data:
    # client0 when it hands the segments on, client1 (which holds them at each epoch's end) as the
    # evaluation begins, the same DCOR the in-process run reports.
    said = re.findall(r"client0: epoch (\d): (\d+) training steps here, leakage DCOR\(X, Z\) 0\.\d{3} on its held-out data", outs[1])
    assert [epoch for epoch, _ in said] == ["1", "2"] and said[0][1] == said[1][1] != "0", outs[1]
    assert "client0: connected to" in outs[1]
    lines = _events(outs[2], "epoch")
    local = json.loads(next((tmp_path / "local").iterdir()).joinpath("metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in lines] == [1, 2] and lines[0]["steps"] == lines[1]["steps"] > 0
    # the same DCOR; the join measures it on its transport's thread, where a float32 reduction may be
    # split otherwise than in one process (seen once: 0.9491309 against 0.9491322), so to float tolerance
    assert [e["dcor"] for e in lines] == pytest.approx([e["dcor_by_party"]["client1"] for e in local], rel=1e-5, abs=1e-6)
    served = json.loads(next((tmp_path / "runs").iterdir()).joinpath("metrics.json").read_text())["epochs"]
    assert [e["dcor_by_party"] for e in served] == [{"client1": e["dcor"]} for e in lines]  # and the server's metrics hold it
    # What the deployment trained is used where the parts are: predict with the clients' folder
    # gives the predictions of the in-process run; the report renders from the server's run folder.
    run_dir, local_run = next((tmp_path / "runs").iterdir()), next((tmp_path / "local").iterdir())
    capsys.readouterr()
    assert main(["predict", str(run_dir)]) == 2
    assert "a deployment keeps each client's weights at its site (join --out); give that folder with --weights" in capsys.readouterr().err
    assert main(["predict", str(run_dir), "--weights", str(tmp_path / "client")]) == 0
    assert main(["predict", str(local_run)]) == 0
    predicted = (run_dir / "predictions-test.csv").read_text()
    assert predicted == (local_run / "predictions-test.csv").read_text() and predicted.count("\n") > 10
    assert main(["attack", "reconstruction", str(run_dir), "--weights", str(tmp_path / "client"), "--aux", "100"]) == 0
    assert main(["report", str(run_dir)]) == 0 and "DCOR" in (run_dir / "report.html").read_text()
    assert "reconstruction" in (run_dir / "report.html").read_text()


def test_vertical_deployment_trains_what_train_trains(tmp_path, certs, spawn):
    config = write_config(tmp_path / "config.json", data={"name": "breast_cancer", "limit_train": 0, "limit_test": 0},
                          split={"configuration": "vertical", "clients": 2})
    target = f"127.0.0.1:{free_port()}"
    server = spawn("serve", "--config", config, "--listen", target, "--certs", certs, "--out", tmp_path / "runs",
                   "--join-timeout", 30, "--timeout", 30)
    joins = [_join(spawn, config, target, c, certs, tmp_path / "client") for c in ("client0", "client1")]
    for proc in (server, *joins):
        code, out = finish(proc)
        assert code == 0, out
    _check_matches_in_process(config, tmp_path)


@pytest.mark.parametrize("share", [None, True])
def test_ushaped_through_the_api_in_threads_trains_what_train_trains(tmp_path, certs, share):
    """``deploy.serve`` and ``deploy.join`` on threads of one process, each with its own parties,
    without TLS (loopback): tokens only; int8 at both cuts, both ways."""
    config = load_config(write_config(tmp_path / "config.json", data={"limit_train": 64, "limit_test": 32},
                                      model={"name": "small_cnn"}, split={"configuration": "ushaped", "clients": 1},
                                      train={"epochs": 1}, compression={"codec": "int8"}), {"out": str(tmp_path / "runs")})
    assert main(["certs", "--out", str(tmp_path / "certs"), "--clients", "client"]) == 0
    results = in_threads(config, tmp_path / "certs", {"client": dict(out=tmp_path / "client", share_scores=share)}, timeout=20)
    assert isinstance(results["server"], deploy.ServeResult) and isinstance(results["client"], deploy.JoinResult), results
    assert results["client"].losses  # the client owns the labels: it scored every step
    assert "train_loss" not in results["server"].metrics["epochs"][0]
    _check_matches_in_process(config, tmp_path, shared_scores=bool(share))
    # Predicting with what was deployed: the client holds the labels, so it scores and keeps the
    # predictions, the same as predicting in one process; the server has the scores only if shared.
    run_dir = results["server"].run_dir
    done = predict_in_threads(run_dir, config, tmp_path / "certs", {"client": dict(out=tmp_path / "client", share_scores=share)})
    assert isinstance(done["server"], deploy.PredictResult) and done["client"].predictions is not None, done
    assert main(["predict", str(next((tmp_path / "local").iterdir()))]) == 0
    assert done["client"].predictions.read_text() == next((tmp_path / "local").iterdir()).joinpath("predictions-test.csv").read_text()
    assert bool(done["server"].scores["all"]) == bool(share) and done["server"].path is None


def test_server_exits_with_a_message_when_nobody_joins(tmp_path, certs, capsys):
    config = write_config(tmp_path / "config.json")
    args = ["serve", "--config", config, "--listen", f"127.0.0.1:{free_port()}", "--certs", str(certs), "--out", str(tmp_path)]
    assert main(args + ["--join-timeout", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "parties ['client0', 'client1'] did not connect within 0.5 s" in err and "\n" not in err, err


def test_join_errors_are_one_line(tmp_path, certs, capsys):
    config = write_config(tmp_path / "config.json")
    args = ["join", "--config", config, "--server", f"127.0.0.1:{free_port()}", "--certs", str(certs), "--out", str(tmp_path)]
    cases = [
        (["--party", "server"], "unknown party 'server': this config's client parties are client0, client1"),
        (["--party", "client0", "--certs", str(tmp_path)], "cannot read"),
        (["--party", "client0", "--connect-timeout", "0.5"], "unreachable"),
        (["--party", "client0", "--server", "10.1.2.3:5000", "--insecure"], "only a loopback address may go without TLS"),
    ]
    for extra, message in cases:
        assert main(args + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


def test_serve_refuses_insecure_on_a_public_address(tmp_path, certs, capsys):
    config = write_config(tmp_path / "config.json")
    assert main(["serve", "--config", config, "--listen", "0.0.0.0:0", "--certs", str(certs), "--insecure"]) == 2
    assert "only a loopback address" in capsys.readouterr().err


def test_a_crashed_serve_leaves_its_clients_waiting_to_resume_not_finished(tmp_path):
    """serve failing mid-session must not end the clients' streams as if training were over."""
    config = load_config(write_config(tmp_path / "config.json", split={"clients": 1}), {"out": str(tmp_path / "runs")})
    assert main(["certs", "--out", str(tmp_path / "certs"), "--clients", "client"]) == 0
    epochs = []

    def crash(record):
        epochs.append(record)
        raise RuntimeError("disk full")

    results = in_threads(config, tmp_path / "certs", {"client": dict(out=tmp_path / "client", reconnect_timeout=1.0)}, on_epoch=crash)
    assert len(epochs) == 1 and isinstance(results["server"], RuntimeError), results
    assert isinstance(results["client"], deploy.DeployError), results  # it tried to reconnect, then gave up


def test_a_deployed_client_runs_the_hijacking_check_over_the_wire(tmp_path, monkeypatch):
    """privacy.hijack_check in a deployment: the client's fake labels and the zero gradients of its
    fake steps pass the wire's checks, and training against the honest server finishes. (Ten fakes
    are needed for a verdict; this short run sends a few.)"""
    from splitlearn.privacy.attacks.hijacking import FakeBatchCheck

    config = load_config(write_config(tmp_path / "config.json", data={"limit_train": 256, "limit_test": 32},
                                      model={"name": "small_cnn"}, split={"configuration": "vanilla", "clients": 1},
                                      train={"epochs": 2, "batch_size": 16}, privacy={"hijack_check": 0.3}),
                         {"out": str(tmp_path / "runs")})
    assert main(["certs", "--out", str(tmp_path / "certs"), "--clients", "client"]) == 0
    seen, observe = [], FakeBatchCheck.observe

    def spy(self, grads, *, fake):
        seen.append(fake)
        return observe(self, grads, fake=fake)

    monkeypatch.setattr(FakeBatchCheck, "observe", spy)
    results = in_threads(config, tmp_path / "certs", {"client": dict(out=tmp_path / "client")}, timeout=30)
    assert isinstance(results["server"], deploy.ServeResult) and isinstance(results["client"], deploy.JoinResult), results
    assert len(seen) == 32 and 1 <= sum(seen) <= 24, seen  # every step's gradient read; some were fakes (secret draws)
