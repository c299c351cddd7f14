"""Running at cluster scale: Slurm job states, launch records, whole studies (``python -m
landscape_exp.study``) and where their jobs are."""
