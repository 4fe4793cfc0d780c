"""``data.sites = "own"``: each client of a deployment trains on its own files (``join
--data-root``), which no other process reads; the server builds the model from the declared
sample shape and classes. The result equals the same parties trained in one process."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import splitlearn
from splitlearn import deploy, runner
from splitlearn.cli.app import main
from splitlearn.config import load_config
from splitlearn.data.idx import write_idx
from splitlearn.runner import assembly
from splitlearn.split.cast import build_parties
from splitlearn.split.simulation import Simulation
from splitlearn.transport.local import LocalTransport

from .conftest import in_threads, predict_in_threads, write_config

OWN = {"name": "fashion_mnist", "sites": "own", "sample_shape": [1, 28, 28], "num_classes": 10}


def _site(folder, seed: int, n_train: int, n_test: int):
    """A Fashion-MNIST folder (gzipped IDX) of random images and labels: one site's own data."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for stem, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return folder


def _tensors(folder) -> dict[str, dict[str, torch.Tensor]]:
    return {p.stem: load_file(p) for p in sorted(folder.glob("*.safetensors"))}


def _png_site(folder, seed: int, n: int):
    """An image folder of ``n`` 8x8 grayscale PNG tiles per class ('tumour' brighter than 'stroma')."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, name in enumerate(("stroma", "tumour")):
        (folder / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 128, (8, 8), dtype=np.uint8) + 100 * k).save(folder / name / f"{i}.png")
    return folder


def _csv_site(folder, seed: int, n: int):
    from tests.cli.test_train_own_data import write_table

    folder.mkdir()
    return write_table(folder / "cohort.csv", n=n, features=5, seed=seed)


@pytest.mark.parametrize(("data", "make"), [
    ({"name": "csv", "sample_shape": [5], "label_column": "diagnosis", "id_column": "patient", "classes": ["negative", "positive"]}, _csv_site),
    ({"name": "imagefolder", "sample_shape": [1, 8, 8], "image_mode": "grayscale", "classes": ["stroma", "tumour"]}, _png_site),
])
def test_sites_bring_their_own_tables_and_image_folders(tmp_path, data, make):
    """Two hospitals, each with its own CSV (or PNG folder): the deployment trains what the same
    parties with the same files train in one process."""
    sites = {"client0": make(tmp_path / "site0", 0, 40), "client1": make(tmp_path / "site1", 1, 30)}
    config = load_config(write_config(tmp_path / "config.json", data=data | {"sites": "own", "num_classes": 2}, model={"name": "mlp"},
                                      split={"configuration": "vanilla", "clients": 2}, train={"epochs": 2, "batch_size": 8}),
                         {"out": str(tmp_path / "runs")})
    assert main(["certs", "--out", str(tmp_path / "certs"), "--clients", "client0,client1"]) == 0
    results = in_threads(config, tmp_path / "certs", {c: dict(out=tmp_path / "clients", data_root=root) for c, root in sites.items()})
    assert isinstance(results["server"], deploy.ServeResult), results
    sim = _in_one_process(config, sites)
    expected = _tensors(tmp_path / "in-process")
    got = _tensors(results["server"].run_dir / "weights") | _tensors(tmp_path / "clients")
    for party, tensors in expected.items():
        assert all(torch.equal(t, got[party][k]) for k, t in tensors.items()), f"{party}: weights differ"
    served = results["server"].metrics["epochs"]
    assert [e["test_accuracy"] for e in served] == [e["test_accuracy"] for e in sim.history] and served[-1]["test_count"] > 0


def test_a_site_with_a_class_the_others_do_not_number_is_refused(tmp_path):
    site = _png_site(tmp_path / "site", 0, 4)
    (site / "tumour").rename(site / "necrosis")
    config = load_config(write_config(tmp_path / "config.json", data={"name": "imagefolder", "sites": "own", "sample_shape": [1, 8, 8],
                                                                      "num_classes": 2, "image_mode": "grayscale",
                                                                      "classes": ["stroma", "tumour"]}))
    with pytest.raises(deploy.DeployError, match=r"site: class 'necrosis' is not one of data.classes \['stroma', 'tumour'\]"):
        deploy.join(config, server="localhost:1", party="client0", certs=tmp_path, out=tmp_path / "out", insecure=True, data_root=site)
    with pytest.raises(ValueError, match="with imagefolder needs data.classes, the 2 distinct class names"):
        load_config(write_config(tmp_path / "bad.json", data={"name": "imagefolder", "sites": "own", "sample_shape": [1, 8, 8],
                                                              "num_classes": 2}))


def _in_one_process(config, sites) -> Simulation:
    """The parties of ``config`` in one process, each client with its own files of ``sites``,
    trained; weights saved in ``<out>/../in-process``."""
    built = runner.build(config)
    cast = build_parties(built.split, **runner.party_options(built))
    for name, root in sites.items():
        cast.parties[name].shards = runner.own_shards(built, cast.parties[name].role, root)
    sim = Simulation(built.split, parties=cast, transport=LocalTransport(), local=set(cast.parties),
                     batch_size=config.train.batch_size, seed=config.train.seed)
    sim.coordinator.collect_manifests()
    sim.fit(config.train.epochs)
    sim.save_weights(Path(config.out).parent / "in-process")
    return sim


def test_each_client_trains_on_its_own_files(tmp_path, monkeypatch):
    sites = {"client0": _site(tmp_path / "site0", 0, 48, 16), "client1": _site(tmp_path / "site1", 1, 40, 12)}
    config = load_config(write_config(tmp_path / "config.json", data=OWN, model={"name": "small_cnn"},
                                      split={"configuration": "vanilla", "clients": 2}, train={"epochs": 2, "batch_size": 16}),
                         {"out": str(tmp_path / "runs")})
    assert main(["certs", "--out", str(tmp_path / "certs"), "--clients", "client0,client1"]) == 0
    loaded, load = [], assembly.load_dataset
    monkeypatch.setattr(assembly, "load_dataset", lambda name, root=None, **kw: (loaded.append(root), load(name, root=root, **kw))[1])
    results = in_threads(config, tmp_path / "certs", {c: dict(out=tmp_path / "clients", data_root=root) for c, root in sites.items()},
                         timeout=20)
    assert all(isinstance(r, deploy.ServeResult | deploy.JoinResult) for r in results.values()) and len(results) == 3, results
    assert sorted(map(str, loaded)) == sorted(map(str, sites.values()))  # each site's files, read by that site only

    # The same parties, each with the same own files, in one process.
    sim = _in_one_process(config, sites)
    expected = _tensors(tmp_path / "in-process")
    got = _tensors(results["server"].run_dir / "weights") | _tensors(tmp_path / "clients")
    assert sorted(got) == sorted(expected) == ["client1", "server"]
    for party, tensors in expected.items():
        assert all(torch.equal(t, got[party][k]) for k, t in tensors.items()), f"{party}: weights differ"
    served = results["server"].metrics["epochs"]
    assert [e["test_accuracy"] for e in served] == [e["test_accuracy"] for e in sim.history]
    assert [e["test_count"] for e in served] == [12, 12]  # client1 held the weights at the end of each epoch: its own test split


    # Predict with what the deployment trained: each site predicts its own test split in turn (the
    # segments relayed to it, as in training) and writes its predictions at its site; the same as
    # the parties in one process predicting each client's split.
    done = predict_in_threads(results["server"].run_dir, config, tmp_path / "certs",
                              {c: dict(out=tmp_path / "clients", data_root=root) for c, root in sites.items()})
    assert isinstance(done["server"], deploy.PredictResult), done
    for client in sites:
        assert isinstance(done[client], deploy.JoinResult) and done[client].predictions is not None, done
        outputs, scores = sim.predict("test", client=client)
        ids, logits = outputs["y"]
        shard = sim.parties[client].shards["test"]
        label = dict(zip(shard.sample_ids.tolist(), shard.labels["y"].tolist()))
        rows = done[client].predictions.read_text().splitlines()
        assert done[client].predictions.name == f"{client}-predictions-test.csv"
        assert rows[1:] == [f"{i},y,{p},{label[i]}" for i, p in zip(ids.tolist(), logits.argmax(-1).tolist())]
        assert done["server"].scores[client] == scores and scores["count"] == {"client0": 16, "client1": 12}[client]


@pytest.mark.parametrize(("data", "join_kw", "problem"), [
    (OWN, {}, "give client0 its data with --data-root"),
    (OWN | {"sample_shape": [1, 8, 8]}, {"data_root": "site"}, "train samples have shape [1, 28, 28], but data.sample_shape is [1, 8, 8]"),
    (OWN | {"num_classes": 4}, {"data_root": "site"}, "but data.num_classes is 4"),
    ({"name": "digits"}, {"data_root": "site"}, "--data-root is for data.sites = 'own'"),
])
def test_join_refuses_data_that_does_not_fit(tmp_path, data, join_kw, problem):
    site = _site(tmp_path / "site", 0, 8, 4)
    config = load_config(write_config(tmp_path / "config.json", data=data, split={"clients": 2}))
    kw = {k: site if v == "site" else v for k, v in join_kw.items()}
    with pytest.raises(deploy.DeployError) as e:
        deploy.join(config, server="localhost:1", party="client0", certs=tmp_path, out=tmp_path / "out", insecure=True, **kw)
    assert problem in str(e.value)


@pytest.mark.parametrize(("data", "problem"), [
    ({"sites": "own"}, "data.sites = 'own' needs data.sample_shape"),
    ({"sites": "own", "sample_shape": [28, 0]}, "data.sites = 'own' needs data.sample_shape"),
    ({"sites": "own", "sample_shape": [1, 8, 8]}, "needs data.num_classes >= 2"),
    ({"sites": "everywhere"}, "data.sites must be 'dealt' or 'own'"),
])
def test_config_of_own_data_is_checked(tmp_path, data, problem):
    with pytest.raises(ValueError) as e:
        load_config(write_config(tmp_path / "config.json", data=data))
    assert problem in str(e.value)


def test_own_data_cannot_train_in_one_process_vertically_from_images_or_from_embedded_sets(tmp_path, capsys):
    config = write_config(tmp_path / "config.json", data=OWN)
    assert main(["train", "--config", config, "--out", str(tmp_path / "runs")]) == 2
    assert "use data.sites = 'dealt'" in capsys.readouterr().err
    vertical = load_config(config, {"split.configuration": "vertical", "split.clients": 2})
    with pytest.raises(ValueError, match=r"with a vertical split takes tables \(data.name = 'csv', a CSV per client aligned by id\), not 'fashion_mnist'"):
        runner.build(vertical)
    digits = load_config(config, {"data.name": "digits", "data.sample_shape": [1, 8, 8]})
    with pytest.raises(ValueError, match="needs a data set read from files, not 'digits', which comes with scikit-learn"):
        runner.build(digits)


def test_round_robin_clients_must_hold_the_same_splits(tmp_path):
    """A site with no test split would crash the evaluation of its turn: refused when it joins."""
    config = load_config(write_config(tmp_path / "config.json", data=OWN, model={"name": "small_cnn"}))
    built = runner.build(config)
    cast = build_parties(built.split, **runner.party_options(built))
    cast.parties["client0"].shards = runner.own_shards(built, "client", _site(tmp_path / "a", 0, 8, 4))
    cast.parties["client1"].shards = runner.own_shards(built, "client", _site(tmp_path / "b", 1, 8, 0))
    sim = Simulation(built.split, parties=cast, transport=LocalTransport(), local=set(cast.parties))
    with pytest.raises(ValueError, match=r"round-robin clients must hold the same splits: 'client1' holds \['train'\], 'client0' holds \['test', 'train'\]"):
        sim.coordinator.collect_manifests()


def test_a_session_resumes_only_on_the_same_data(tmp_path):
    """serve saves a hash of each client's sample ids with its position: a restart where a client
    brings other data is refused by name, instead of resuming a schedule of other samples."""
    sites = {"client0": _site(tmp_path / "site0", 0, 48, 16), "client1": _site(tmp_path / "site1", 1, 40, 12)}
    other = _site(tmp_path / "other", 2, 32, 12)
    config = load_config(write_config(tmp_path / "config.json", data=OWN, model={"name": "small_cnn"},
                                      split={"configuration": "vanilla", "clients": 2}, train={"epochs": 3, "batch_size": 16}),
                         {"out": str(tmp_path / "runs")})
    assert main(["certs", "--out", str(tmp_path / "certs"), "--clients", "client0,client1"]) == 0

    def session(roots, **serve_kw):
        joins = {c: dict(out=tmp_path / c, data_root=root, reconnect_timeout=1.0) for c, root in roots.items()}
        return in_threads(config, tmp_path / "certs", joins, **serve_kw)

    stop = threading.Event()
    first = session(sites, stop=stop, on_epoch=lambda record: stop.set())
    assert isinstance(first["server"], deploy.ServeResult) and not first["server"].finished, first
    second = session(sites | {"client1": other})
    assert isinstance(second["server"], deploy.DeployError), second
    assert "client1 announced other samples than before the restart" in str(second["server"])
    third = session(sites)  # the same data again: it resumes and finishes
    assert isinstance(third["server"], deploy.ServeResult) and third["server"].finished, third
    assert len(third["server"].metrics["epochs"]) == 3


def _patients(folder, n: int = 240):
    """Three sites' CSVs of the same ``n`` patients (string ids), each in its own row order: lab
    results with the label, blood values missing 5% of the patients, and scan measurements."""
    import pandas as pd

    rng = np.random.default_rng(21)
    folder.mkdir()
    ids = [f"P-{i:04d}" for i in range(n)]
    x = rng.normal(size=(n, 9))
    label = np.where(x[:, 0] - x[:, 4] + x[:, 7] > 0, "relapse", "remission")
    sites = {"lab": pd.DataFrame({"patient": ids, "age": x[:, 0], "bmi": x[:, 1], "sbp": x[:, 2], "outcome": label}),
             "blood": pd.DataFrame({"patient": ids, "hb": x[:, 3], "crp": x[:, 4], "wbc": x[:, 5]}).drop(index=rng.choice(n, n // 20, replace=False)),
             "scan": pd.DataFrame({"patient": ids, "mri0": x[:, 6], "mri1": x[:, 7], "mri2": x[:, 8]})}
    paths = []
    for name, frame in sites.items():
        frame.sample(frac=1, random_state=int(rng.integers(1000))).to_csv(folder / f"{name}.csv", index=False)
        paths.append(folder / f"{name}.csv")
    return paths


TABLES = {"name": "csv", "id_column": "patient", "label_column": "outcome", "classes": ["relapse", "remission"]}


def test_vertical_tables_train_alike_in_one_process_and_at_three_sites_over_mutual_tls(tmp_path, spawn, capsys):
    """Three hospitals hold different columns of the same patients, in their own row orders, one
    of them missing 5% of the patients. ``splitlearn train`` with the three files, and serve with
    three joins over mutual TLS, each site reading only its own file, reach the same weights."""
    from .conftest import finish, free_port

    paths = _patients(tmp_path / "sites")
    common = ["--model", "mlp", "--epochs", "2", "--batch-size", "16", "--seed", "4"]
    roots = [a for p in paths for a in ("--data-root", str(p))]
    leakage = tmp_path / "leakage.json"
    leakage.write_text(json.dumps({"privacy": {"leakage_batch_size": 16}}))
    assert main(["train", "--config", str(leakage), "--configuration", "vertical", "--dataset", "csv", *roots, "--id-column", "patient",
                 "--label-column", "outcome", *common, "--out", str(tmp_path / "local")]) == 0
    local = next((tmp_path / "local").iterdir())
    trained = json.loads((local / "metrics.json").read_text())
    assert trained["alignment"]["dropped"] == {"lab": 12, "blood": 0, "scan": 12} and trained["alignment"]["samples"] == 228
    assert trained["epochs"][-1]["test_accuracy"] > 0.6

    # The deployment's config declares what the server cannot read: each site's width, who holds the labels.
    config = write_config(tmp_path / "config.json", data=TABLES | {"sites": "own", "widths": [3, 3, 3], "label_site": 0, "num_classes": 2},
                          model={"name": "mlp"}, split={"configuration": "vertical", "clients": 3},
                          train={"epochs": 2, "batch_size": 16, "seed": 4}, privacy={"leakage_batch_size": 16})
    clients = ["client0", "client1", "client2"]
    assert main(["certs", "--out", str(tmp_path / "certs"), "--server-name", "localhost", "--clients", ",".join(clients)]) == 0
    target = f"localhost:{free_port()}"
    server = spawn("serve", "--config", config, "--listen", target, "--certs", tmp_path / "certs", "--out", tmp_path / "runs",
                   "--join-timeout", 45, "--timeout", 30)
    joins = [spawn("join", "--config", config, "--server", target, "--party", c, "--certs", tmp_path / "certs",
                   "--out", tmp_path / c, "--data-root", p) for c, p in zip(clients, paths)]
    outs = []
    for proc in (server, *joins):
        code, out = finish(proc)
        assert code == 0, out
        outs.append(out)
    assert "(mutual TLS + tokens)" in outs[0] and "aligned 228 samples across 3 parties" in outs[0], outs[0]
    run_dir = next((tmp_path / "runs").iterdir())
    expected = _tensors(local / "weights")
    got = _tensors(run_dir / "weights") | {c: load_file(tmp_path / c / f"{c}.safetensors") for c in clients}
    assert sorted(got) == sorted(expected) == [*clients, "server"]
    for party, tensors in expected.items():
        assert all(torch.equal(t, got[party][k]) for k, t in tensors.items()), f"{party}: weights differ"
    served = json.loads((run_dir / "metrics.json").read_text())
    assert served["alignment"]["dropped"] == {"client0": 12, "client1": 0, "client2": 12}
    scores = lambda epochs: [(e["test_accuracy"], e["test_count"], e["train_loss"]) for e in epochs]  # noqa: E731
    assert scores(served["epochs"]) == scores(trained["epochs"])
    # Each site measured DCOR(X, Z) on its own held-out rows and reported it to the server.
    # (Each its whole test split, the rows other sites lack too: in one process only the aligned rows.)
    assert all(sorted(e["dcor_by_party"]) == clients and 0 < e["dcor"] <= 1 for e in served["epochs"])
    assert all(sorted(e["dcor_by_party"]) == clients for e in trained["epochs"])

    assert main(["predict", str(run_dir)]) == 2  # the data is at the sites: not in this process
    assert "trained on the sites' own data (data.sites = 'own'), which stays at the sites" in capsys.readouterr().err
    # Predict through the same protocol: the server with its weights, each site with its own
    # weights and file; client0 holds the labels, so it scores and writes the predictions at its site.
    assert main(["predict", str(local)]) == 0
    target = f"localhost:{free_port()}"
    server = spawn("predict", run_dir, "--listen", target, "--certs", tmp_path / "certs", "--join-timeout", 45, "--log-format", "json")
    joins = [spawn("join", "--config", config, "--server", target, "--party", c, "--certs", tmp_path / "certs",
                   "--out", tmp_path / c, "--data-root", p, "--predict") for c, p in zip(clients, paths)]
    for proc in (server, *joins):
        code, out = finish(proc)
        assert code == 0, out
    predicted = (tmp_path / "client0" / "client0-predictions-test.csv").read_text()
    assert predicted == (local / "predictions-test.csv").read_text() and predicted.count("\n") > 40
    assert not (tmp_path / "client1" / "client1-predictions-test.csv").exists() and not (run_dir / "predictions-test.csv").exists()
    scores = json.loads((run_dir / "predictions-test.json").read_text())["scores"]["all"]
    assert scores["accuracy"] == trained["epochs"][-1]["test_accuracy"] and scores["count"] == trained["epochs"][-1]["test_count"]
    after = {c: load_file(tmp_path / c / f"{c}.safetensors") for c in clients}
    assert all(torch.equal(t, after[c][k]) for c in clients for k, t in got[c].items())  # predicting changed no weights


@pytest.mark.parametrize(("site", "data", "problem"), [
    (1, {}, r"blood.csv: 3 feature columns \(hb, crp, wbc\), but data.widths\[1\] is 4"),
    (0, {"label_site": 1}, r"lab.csv holds the label column 'outcome', but this site holds no labels \(another site's CSV holds them, data.label_site\)"),
    (1, {"label_site": 1}, "CSV file .*blood.csv has no label column 'outcome'"),
])
def test_a_site_whose_table_does_not_fit_is_refused_by_name(tmp_path, site, data, problem):
    paths = _patients(tmp_path / "sites")
    config = load_config(write_config(tmp_path / "config.json", data=TABLES | {"sites": "own", "widths": [3, 4, 3], "label_site": 0,
                                                                               "num_classes": 2} | data,
                                      model={"name": "mlp"}, split={"configuration": "vertical", "clients": 3}))
    if site == 0:
        config = config.override({"data.widths": [3, 3, 3]})
    with pytest.raises(deploy.DeployError, match=problem) as e:
        deploy.join(config, server="localhost:1", party=f"client{site}", certs=tmp_path, out=tmp_path / "out", insecure=True,
                    data_root=paths[site])
    assert "\n" not in str(e.value)


def test_a_prediction_needs_a_finished_served_run_and_each_sites_weights(tmp_path, capsys):
    paths = _patients(tmp_path / "sites")
    config = load_config(write_config(tmp_path / "config.json", data=TABLES | {"sites": "own", "widths": [3, 3, 3], "label_site": 0,
                                                                               "num_classes": 2},
                                      model={"name": "mlp"}, split={"configuration": "vertical", "clients": 3}))
    with pytest.raises(deploy.DeployError, match=r"no weights at .*client1.safetensors: --predict uses the weights this site trained"):
        deploy.join(config, server="localhost:1", party="client1", certs=tmp_path, out=tmp_path / "empty", insecure=True,
                    data_root=paths[1], predict="test")
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(deploy.DeployError, match="is not a run folder: it has no config.json"):
        deploy.predict(run, listen="localhost:0", certs=tmp_path, insecure=True)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / "metrics.json").write_text(json.dumps({"splitlearn_version": splitlearn.__version__, "finished": False, "epochs": []}))
    with pytest.raises(deploy.DeployError, match="holds an unfinished run"):
        deploy.predict(run, listen="localhost:0", certs=tmp_path, insecure=True)
    assert main(["predict", str(run), "--certs", str(tmp_path)]) == 2
    assert "--certs goes with --listen" in capsys.readouterr().err
