"""``splitlearn join``: run one client party of a deployment against ``splitlearn serve``."""

from __future__ import annotations

import argparse
import sys

from splitlearn.cli._logging import add_log_argument, operational
from splitlearn.cli.serve import WARNING
from splitlearn.config import load_config
from splitlearn.deploy import is_loopback, join, log_event


def add_parser(sub) -> None:
    p = sub.add_parser("join", help="run one client party against a splitlearn serve hub")
    p.add_argument("--config", required=True, help="the same run config the server uses")
    p.add_argument("--server", required=True, help="HOST:PORT of the hub")
    p.add_argument("--party", required=True, help="this client's party name, e.g. client0")
    p.add_argument("--certs", required=True, help="folder with ca.pem, <party>.pem, <party>.key and <party>.token")
    p.add_argument("--insecure", action="store_true", help="no TLS (loopback addresses only)")
    p.add_argument("--out", default="weights", help="folder for <party>.safetensors (default: weights)")
    p.add_argument("--connect-timeout", type=float, default=60.0, help="seconds to keep retrying an unreachable server")
    p.add_argument("--reconnect-timeout", type=float, default=600.0,
                   help="seconds to keep reconnecting after the connection broke (the server restarting)")
    p.add_argument("--data-root", help="this site's own data files (configs with data.sites = \"own\"), in the format "
                                        "of the config's data set; no other process reads them")
    p.add_argument("--predict", nargs="?", const="test", choices=["test", "train"], metavar="SPLIT",
                   help="take part in the server's prediction (splitlearn predict RUN --listen) of SPLIT (default: test) "
                        "with the weights in --out; write --out/PARTY-predictions-SPLIT.csv of what this party scores")
    scores = p.add_mutually_exclusive_group()
    scores.add_argument("--share-scores", dest="share_scores", action="store_const", const=True,
                        help="report test accuracy and loss totals to the server even where the labels never leave "
                             "this party (U-shaped); the default where they are sent for training (vanilla)")
    scores.add_argument("--keep-scores", dest="share_scores", action="store_const", const=False,
                        help="report no test scores to the server")
    add_log_argument(p)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.insecure and is_loopback(args.server):
        print(f"\n{'!' * len(WARNING)}\n{WARNING}\n{'!' * len(WARNING)}\n", file=sys.stderr)

    def terminate() -> None:
        raise KeyboardInterrupt  # closes the stream; the party's checkpoints stay for a restart

    with operational(args.log_format, terminate):
        result = join(config, server=args.server, party=args.party, certs=args.certs, out=args.out, insecure=args.insecure,
                      connect_timeout=args.connect_timeout, reconnect_timeout=args.reconnect_timeout,
                      share_scores=args.share_scores, data_root=args.data_root, predict=args.predict)
        if args.predict:
            log_event("finished", f"{args.party}: prediction ended; " + (f"predictions in {result.predictions}" if result.predictions
                                                                        else "the scores are elsewhere"),
                      party=args.party, predictions=str(result.predictions) if result.predictions else None)
            return 0
        last = f", last loss it scored {result.losses[-1][1]:.4f}" if result.losses else ""
        log_event("finished", f"{args.party}: session ended; "
                  + (f"weights in {result.weights}" if result.weights else "it holds no segments now") + last,
                  party=args.party, weights=str(result.weights) if result.weights else None, steps_scored=len(result.losses))
    return 0
