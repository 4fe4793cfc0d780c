"""serve's running byte totals answer as the full message log does, and carry across a restart."""

from splitlearn.split import configs
from splitlearn.split.simulation import Simulation
from splitlearn.split.transport import ByteTotals, MessageLog

from .conftest import mlp


def test_running_totals_equal_the_message_log_and_carry_over(tabular):
    train, test = tabular
    sim = Simulation(configs.ushaped(mlp(), [1, 3], in_shape=(10,)), train=train, test=test, clients=2, batch_size=16)
    totals, log = ByteTotals(), MessageLog()
    sim.transport.observers += [totals, log]
    sim.fit(1)
    assert totals.messages == len(log.records) > 0
    for key in ByteTotals.KEYS:
        assert totals.bytes_by(key) == log.bytes_by(key)
    assert totals.total_bytes() == log.total_bytes() > 0
    assert totals.total_bytes(kind="Activation") == log.total_bytes(kind="Activation") > 0
    later = ByteTotals()  # a restarted process: starts from the saved totals
    later.carry(totals.state())
    later.carry(totals.state())
    assert later.messages == 2 * totals.messages
    assert later.bytes_by("receiver") == {k: 2 * n for k, n in log.bytes_by("receiver").items()}
