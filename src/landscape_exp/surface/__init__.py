"""Surfaces: a grid of points on a line or plane of weight space, what is measured at each point,
and the resumable, shardable file that holds the values.

``grid`` (axes and flat point order), ``plane`` (the directions: from a file, random or
checkpoints), ``path_plane`` (the PCA plane of a training path), ``measures`` (loss/accuracy or
Hessian extremes per point), ``loop`` (the point loop), ``store`` (the HDF5 file, journal and
lock), ``sharding`` (shards and their merge), ``summary`` (the numbers a surface is summarized
by), ``seeds`` (one 1D surface per random direction, their spread) and ``job`` (one surface job
from target file to published figures, used by every surface-writing task)."""
