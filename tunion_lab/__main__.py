import sys

from tunion_lab.lab import main

sys.exit(main())
