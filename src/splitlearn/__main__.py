"""``python -m splitlearn``: the ``splitlearn`` command."""

from splitlearn.cli.app import main

raise SystemExit(main())
