import sys

from naslib_bayes.cli import main

sys.exit(main())
