import sys

from pyro_vpf.cli import main

sys.exit(main())
