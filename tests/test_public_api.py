"""The public API: one namespace, light to import, and the README's example runs as written."""

import re
import subprocess
import sys
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_import_pulls_in_no_grpc_and_no_log_handler():
    code = (
        "import logging, sys; import splitlearn as sl; "
        "[getattr(sl, n) for n in sl.__all__]; "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('grpc', 'monai')], 'grpc imported'; "
        "assert not logging.getLogger().handlers and not logging.getLogger('splitlearn').handlers; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_every_exported_name_resolves_to_its_module():
    import splitlearn as sl
    from splitlearn.split.configs import ushaped
    from splitlearn.split.simulation import Simulation

    assert sl.Simulation is Simulation and sl.ushaped is ushaped
    assert len(sl.__all__) == len(set(sl.__all__)) <= 30
    try:
        sl.no_such_name
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("unknown names must raise AttributeError")


def test_readme_python_example_runs_and_gives_the_model_back():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    namespace: dict = {"__name__": "readme"}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    sim, model, history = namespace["sim"], namespace["model"], namespace["history"]
    assert len(history) == 5 and history[-1]["test_accuracy"] > 0.7
    trained = sim.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, trained[k]), k
