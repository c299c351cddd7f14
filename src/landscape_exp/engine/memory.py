"""How the C library treats the memory a forward pass frees (glibc only; a no-op elsewhere)."""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


_MMAP_MAX = 32 * 2**20  # the largest mmap threshold glibc's mallopt accepts on 64-bit systems


_KEPT = False


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks (up to 32 MiB each) for reuse instead of handing them back to
    the kernel, which zero-fills every page again at its next touch.

    A CPU forward pass frees and allocates the same activation buffers batch after batch; with
    glibc's defaults part of them goes back to the kernel each time (the heap top is trimmed, large
    blocks are unmapped), and a ResNet-56 evaluation at batch 128 spends ~15% of its CPU time in
    page faults (docs/engine.md). The process keeps its peak memory instead. Once per process;
    a no-op (False) without glibc."""
    global _KEPT
    if _KEPT:
        return True
    from landscape_exp.engine.cpu import cpu_features

    if not cpu_features().glibc:  # musl, macOS, Windows: their allocators have no such knobs
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # both together: setting either one alone turns glibc's adaptive mmap threshold off
        _KEPT = bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(_MMAP_MAX))
                     and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**30)))
    except (OSError, AttributeError):
        return False
    return _KEPT
