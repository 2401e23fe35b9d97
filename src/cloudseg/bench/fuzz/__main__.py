import sys

from cloudseg.bench.fuzz.cli import main

sys.exit(main())
