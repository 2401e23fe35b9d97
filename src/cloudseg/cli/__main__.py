"""`python -m cloudseg.cli`."""

from cloudseg.cli import main

raise SystemExit(main())
