"""``python -m landscape_exp.study run|status ...``: the study command (:mod:`landscape_exp.cluster.study`)."""

import sys

from landscape_exp.cluster.cli import main

if __name__ == "__main__":
    sys.exit(main())
