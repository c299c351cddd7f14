"""``python run.py task=<task> model=<model> dataset=<dataset> ...``: the Hydra entry point
(:func:`landscape_exp.cli.main`; installed as the ``landscape-exp`` command too)."""

from landscape_exp.cli import main

if __name__ == "__main__":
    main()
