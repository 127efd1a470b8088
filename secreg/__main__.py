import sys

from secreg.cli.main import main

sys.exit(main())
