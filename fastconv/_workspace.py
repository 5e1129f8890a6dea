"""Scratch memory for kernel calls, kept per calling thread and reused across calls.

A conv2d call needs temporary buffers: the kernel's per-thread slabs and staged tiles.
Allocated per call, they churn the top of glibc's heap, which glibc returns to the OS and
faults back in on the next call: up to 20% of a mid-sized layer's time went to page faults.
Here each Python thread keeps one buffer and lends it out for the duration of a call. A call
that finds it already lent (re-entry from a finaliser, say) gets a fresh buffer, so two users
never share memory. Buffers larger than ``MAX_KEPT_BYTES`` are not kept. Contents are
unspecified (not zeroed between calls).
"""

from __future__ import annotations

import threading

import numpy as np

ALIGN = 64  # bytes: every view starts on a cache line (and a full AVX-512 vector)
MAX_KEPT_BYTES = 64 << 20
# Requests up to this size get fresh memory (plain new arrays here; the planned conv calls of
# _conv_call.pxi malloc it): small blocks never leave glibc's heap, and that is cheaper than
# the lease (this matters for tiny calls, ~1 us).
SMALL_BYTES = 64 << 10
_local = threading.local()


def acquire(dtype, *counts):
    """``(lease, views)``: 1-D arrays of ``dtype`` with ``counts`` elements each, aligned
    and disjoint, carved out of this thread's buffer (new arrays and no lease for requests
    up to ``SMALL_BYTES``). Hand ``lease`` back with :func:`release` once the kernel has
    returned."""
    itemsize = dtype.itemsize
    if len(counts) == 1 and counts[0] * itemsize <= SMALL_BYTES:  # the common small case, fast
        return None, [np.empty(counts[0], dtype)]
    spans = [-(-count * itemsize // ALIGN) * ALIGN for count in counts]
    needed = sum(spans)
    if needed <= SMALL_BYTES:
        return None, [np.empty(count, dtype) for count in counts]
    lease = getattr(_local, "lease", None)  # (buffer, offset of its first aligned byte)
    _local.lease = None  # lent out until release()
    if lease is None or lease[0].nbytes - lease[1] < needed:
        size = needed if lease is None else max(needed, 2 * lease[0].nbytes)
        buffer = np.zeros(size + ALIGN, np.uint8)  # zeros: no uninitialised reads, even once
        lease = (buffer, -buffer.ctypes.data % ALIGN)
    buffer, start = lease
    views = []
    for count, span in zip(counts, spans):
        views.append(buffer[start:start + count * itemsize].view(dtype))
        start += span
    return lease, views


def release(lease):
    """Give a lease from :func:`acquire` back to this thread (unless its buffer is too large,
    or the request was small and got plain arrays: ``lease`` is None)."""
    if lease is not None and lease[0].nbytes <= MAX_KEPT_BYTES:
        kept = getattr(_local, "lease", None)
        if kept is None or kept[0].nbytes < lease[0].nbytes:
            _local.lease = lease
