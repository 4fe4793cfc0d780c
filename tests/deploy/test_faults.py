"""Processes killed mid-epoch (SIGKILL) or stopped (SIGTERM) and started again with the same
command: training resumes from the checkpoints and ends with the weights of a run that was
never interrupted, bit for bit; hostile messages cost the sender its stream, not the training."""

import json
import os
import shutil
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from splitlearn.cli.app import main

from .conftest import TIMEOUT, finish, free_port, write_config
from .test_deploy import _check_matches_in_process, _join


# 2 round-robin clients, 300 samples each in batches of 16: about 40 steps an epoch.
def _sections(device) -> dict:
    return dict(data={"name": "digits", "limit_train": 600, "limit_test": 100},
                train={"epochs": 2, "seed": 3, "batch_size": 16, "device": str(device)})


def _wait_for(predicate, what: str, proc=None) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process ended before {what}: {proc.communicate()[0]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def _party_step(folder) -> int:
    steps = [int(p.name[5:17]) for p in folder.glob("step-*.safetensors")] if folder.exists() else []
    return max(steps, default=0)


def _server_step(tmp_path) -> int:
    try:
        return json.loads((tmp_path / "checkpoints" / "serve" / "position.json").read_text())["coordinator"]["committed"]
    except (OSError, ValueError, KeyError):
        return 0


def _serve(spawn, config, target, certs, tmp_path, *extra):
    return spawn("serve", "--config", config, "--listen", target, "--certs", certs, "--out", tmp_path / "runs",
                 "--join-timeout", 45, "--timeout", 45, "--rejoin-timeout", 45, *extra)


@pytest.mark.parametrize("victim", ["client0", "client1"])
def test_killed_client_restarts_and_the_result_is_unchanged(tmp_path, certs, spawn, victim, device):
    config = write_config(tmp_path / "config.json", **_sections(device))
    target = f"localhost:{free_port()}"
    server = _serve(spawn, config, target, certs, tmp_path)
    joins = {c: _join(spawn, config, target, c, certs, tmp_path / "client") for c in ("client0", "client1")}
    folder = tmp_path / "client" / "checkpoints" / victim
    at = _party_step(folder) + 0  # client1 trains second: wait for its first steps
    _wait_for(lambda: _party_step(folder) >= at + 6, f"{victim} to train a few steps", server)
    joins[victim].send_signal(signal.SIGKILL)
    joins[victim].wait(TIMEOUT)
    assert joins[victim].returncode == -signal.SIGKILL
    restarted = _join(spawn, config, target, victim, certs, tmp_path / "client")
    outs = {}
    for name, proc in [("server", server), ("restarted", restarted)] + [(c, p) for c, p in joins.items() if c != victim]:
        code, outs[name] = finish(proc)
        assert code == 0, outs[name]
    assert f"{victim} was lost" in outs["server"] and f"{victim} is back" in outs["server"]
    assert "starting from its checkpoint of step" in outs["restarted"]
    _check_matches_in_process(config, tmp_path)


@pytest.mark.parametrize(("how", "every"), [(signal.SIGKILL, 7), (signal.SIGTERM, 20)])
def test_server_stopped_mid_epoch_resumes_and_the_result_is_unchanged(tmp_path, certs, spawn, how, every, device):
    """SIGKILL with a checkpoint every 7 steps: the steps since the last one run again. SIGTERM
    (checkpoints every 20 steps, the default): the server checkpoints right after the next step and
    stops there, so it resumes no earlier than where it was told to stop."""
    config = write_config(tmp_path / "config.json", **_sections(device))
    target = f"localhost:{free_port()}"
    server = _serve(spawn, config, target, certs, tmp_path, "--checkpoint-every", every)
    joins = [_join(spawn, config, target, c, certs, tmp_path / "client") for c in ("client0", "client1")]
    _wait_for(lambda: _server_step(tmp_path) >= 25, "25 committed steps", server)
    server.send_signal(how)
    code, out = finish(server)
    if how == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 0 and "Run the same command to resume" in out, out
        run_dir = next((tmp_path / "runs").iterdir())
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "stopped" and status["connected"] == [], status
    assert all(j.poll() is None for j in joins)  # the clients wait for the server to come back
    server = _serve(spawn, config, target, certs, tmp_path, "--log-format", "json", "--checkpoint-every", every)
    code, out = finish(server)
    assert code == 0, out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names[:3] == ["resume", "run_folder", "listening"] and names[-1] == "finished" and names.count("epoch") >= 1, names
    assert events[1]["run"] == events[-1]["run"] == str(next((tmp_path / "runs").iterdir()))  # named at the start
    assert events[0]["step"] >= (25 - every if how == signal.SIGKILL else 25)
    assert all({"time", "level", "message"} <= set(e) for e in events)
    for proc in joins:
        code, client_out = finish(proc)
        assert code == 0 and "reconnecting" in client_out, client_out
    _check_matches_in_process(config, tmp_path)
    run_dir = next((tmp_path / "runs").iterdir())
    assert main(["status", str(run_dir)]) == 0
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["connected"] == [], status


def test_a_client_from_another_config_is_refused_its_checkpoints(tmp_path, certs, capsys):
    first = write_config(tmp_path / "a.json")
    other = write_config(tmp_path / "b.json", train={"epochs": 3})
    out = tmp_path / "client"
    from splitlearn.checkpoint import FolderCheckpoints
    from splitlearn.config import load_config
    from splitlearn.runner import fingerprint

    FolderCheckpoints(out / "checkpoints" / "client0", tag=fingerprint(load_config(first)))
    args = ["join", "--config", other, "--server", f"127.0.0.1:{free_port()}", "--party", "client0", "--certs", str(certs),
            "--out", str(out), "--connect-timeout", "0.2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds checkpoints of another run configuration" in err and os.path.isdir(out / "checkpoints" / "client0")


def test_the_same_commands_after_a_finished_session_train_again_from_the_start(tmp_path, certs, spawn):
    """The clients keep their checkpoints of the finished session (the newest three, at steps far past
    0) and start from the newest; the new session rolls them back to step 0, their initial state."""
    config = write_config(tmp_path / "config.json", train={"epochs": 3, "seed": 3})
    for session in (1, 2):
        target = f"localhost:{free_port()}"
        server = _serve(spawn, config, target, certs, tmp_path)
        joins = [_join(spawn, config, target, c, certs, tmp_path / "client") for c in ("client0", "client1")]
        for proc in [server, *joins]:
            code, out = finish(proc)
            assert code == 0, out
        if session == 1:
            steps = sorted(p.name for p in (tmp_path / "client" / "checkpoints" / "client1").glob("step-*"))
            assert len(steps) == 4 and steps[0] == f"step-{0:012d}.safetensors"  # step 0 and the newest three
            first = {p.name: load_file(p) for p in (tmp_path / "client").glob("*.safetensors")}
            shutil.rmtree(tmp_path / "runs")
        else:
            assert "starting from its checkpoint of step" in out
    second = {p.name: load_file(p) for p in (tmp_path / "client").glob("*.safetensors")}
    assert first and second.keys() == first.keys()
    assert all(torch.equal(t, first[f][k]) for f, tensors in second.items() for k, t in tensors.items())
    _check_matches_in_process(config, tmp_path)
