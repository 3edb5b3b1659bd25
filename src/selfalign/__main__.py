import sys

from selfalign.cli import main

sys.exit(main())
