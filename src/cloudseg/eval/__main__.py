"""``python -m cloudseg.eval``: the same as ``cloudseg eval``."""

from cloudseg.eval.cli import main

raise SystemExit(main())
