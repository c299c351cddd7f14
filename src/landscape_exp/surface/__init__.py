"""Surfaces: a grid of points in a plane (or on a line) of weight space, what is measured at each
point, and the resumable, shardable file that holds the values.

``grid`` (axes and flat point order), ``weight_space`` (moving a model to a point), ``plane`` (the
directions, from a file, random or checkpoints), ``measures`` (loss/accuracy or Hessian extremes
per point), ``engine`` (the point loop), ``store`` (the HDF5 file, journal and lock), ``sharding``
(shards and their merge), ``summary`` (the numbers a surface is summarized by) and ``job`` (one
surface job from target file to published figures, used by every surface-writing task).
"""
