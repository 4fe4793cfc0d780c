"""The Singh et al. (2019) communication model: hand-checked values, crossover, monotonicity, plot."""

import io

import pytest

from splitlearn.efficiency import comm_model as cm

# Tiny example: 100 samples, q = 19 values at the cut, N = 100 parameters, 10% at the client.
TINY = {"p": 100, "q": 19, "n": 100, "eta": 0.1}


def test_hand_checked_values():
    # 2 (p/K) q + eta N = 2 * 50 * 19 + 10 = 1910 per client at K = 2; FL: 2 N = 200.
    assert cm.sl_per_client(k=2, **TINY) == pytest.approx(1910)
    assert cm.sl_per_client(k=2, relay=False, **TINY) == pytest.approx(1900)
    assert cm.sl_total(k=2, **TINY) == pytest.approx(2 * 100 * 19 + 10 * 2)
    assert cm.fl_per_client(n=100) == 200
    assert cm.fl_total(k=2, n=100) == 400


@pytest.mark.parametrize("relay, expected", [(True, 20.0), (False, 19.0)])
def test_crossover_equalises_the_two(relay, expected):
    # K* = 2 p q / ((2 - eta) N) = 3800 / 190 = 20; without the relay p q / N = 19.
    k_star = cm.crossover(relay=relay, **TINY)
    assert k_star == pytest.approx(expected)
    assert cm.sl_per_client(k=k_star, relay=relay, **TINY) == pytest.approx(cm.fl_per_client(n=100))
    assert cm.sl_total(k=k_star, relay=relay, **TINY) == pytest.approx(cm.fl_total(k=k_star, n=100))
    assert cm.sl_per_client(k=k_star * 2, relay=relay, **TINY) < cm.fl_per_client(n=100)
    assert cm.sl_per_client(k=k_star / 2, relay=relay, **TINY) > cm.fl_per_client(n=100)


def test_monotone_in_k():
    ks = [1, 2, 5, 10, 100, 1000]
    sl = [cm.sl_per_client(k=k, **TINY) for k in ks]
    assert all(a > b for a, b in zip(sl, sl[1:]))  # per-client SL falls with K
    sl_total = [cm.sl_total(k=k, **TINY) for k in ks]
    assert all(a < b for a, b in zip(sl_total, sl_total[1:]))  # the relay grows with K
    assert [cm.sl_total(k=k, relay=False, **TINY) for k in ks] == pytest.approx([2 * 100 * 19] * len(ks))
    fl_total = [cm.fl_total(k=k, n=100) for k in ks]
    assert all(a < b for a, b in zip(fl_total, fl_total[1:]))


def test_rejects_bad_symbols():
    with pytest.raises(ValueError, match="eta"):
        cm.crossover(p=1, q=1, n=1, eta=1.5)
    with pytest.raises(ValueError, match="positive"):
        cm.sl_per_client(p=0, k=1, q=1, n=1, eta=0)


def test_figure_marks_the_crossover():
    fig = cm.crossover_figure(title="tiny", **TINY)
    (ax,) = fig.axes
    sl, fl, _, point = ax.get_lines()
    (k_star,), (y,) = point.get_data()
    assert k_star == pytest.approx(20) and y == pytest.approx(200 * 4 / 1e9)
    assert sl.get_ydata()[0] > fl.get_ydata()[0] and sl.get_ydata()[-1] < fl.get_ydata()[-1]
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG\r\n\x1a\n")
