import sys

from cmfhir.cli import main

sys.exit(main())
