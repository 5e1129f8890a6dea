"""Convolve an image larger than the memory this process uses: fastconv.dask over zarr on disk.

A single-channel image (a microscope or satellite scene, say) of ``--size`` x ``--size`` float32
pixels (20000 x 20000 = 1.6 GB by default; ``--size 40000`` gives 6.4 GB) is generated on disk
as a zarr array in a temporary directory, then run through conv (1 -> 16 filters, 5x5,
reflect padding) -> ReLU -> 4x4 max pool, chunk by chunk with ``fastconv.dask.apply``. The result
(16 x 5000 x 5000) is written to another zarr array, so neither the image nor any feature map is
ever whole in memory. The script reports

- peak resident memory (``resource.getrusage``) of the chunked run, against the image size;
- throughput of the chunked run (Mpixel/s, conv GF/s, and Mpixel per CPU-second, which a busy
  machine does not distort), end to end from disk to disk and from disk to per-filter maxima
  (nothing written), against in-memory fastconv on a part of the image that fits (``--part``,
  same cores);
- how the threads per task matter: the same part chunked, with dask workers x OpenMP threads
  chosen by ``fastconv.dask.threads_per_task`` (one thread per task), and the alternatives.

Needs ``pip install "fastconv[dask]" zarr``. Disk use is the input plus the output (3.2 GB by
default); the temporary directory is removed at the end (``--keep`` keeps it). Run it alone on
the machine for meaningful timings.

    python examples/dask_large_image.py                 # 20000 x 20000
    python examples/dask_large_image.py --size 4000     # a quick try
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

try:
    import dask
    import dask.array as da
    import zarr
except ImportError as exc:
    sys.exit(f"this example needs dask and zarr: pip install 'fastconv[dask]' zarr ({exc})")

import fastconv
import fastconv.dask
from fastconv.layers import Conv2D, MaxPool2D, ReLU, Sequential

FILTERS, KERNEL, POOL = 16, 5, 4


def peak_rss_mb():
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_block(block_info=None):
    """One chunk of a deterministic test scene: blobs, stripes and noise, shape (1, 1, h, w)."""
    info = block_info[None]
    (_, _), (_, _), (r0, r1), (c0, c1) = info["array-location"]
    rows = np.arange(r0, r1, dtype=np.float32)[:, None]
    cols = np.arange(c0, c1, dtype=np.float32)[None, :]
    scene = np.sin(rows / 37.0) * np.cos(cols / 53.0) + 0.5 * np.sin((rows + cols) / 11.0)
    noise = np.random.default_rng((r0, c0)).standard_normal(scene.shape, dtype=np.float32)
    return (scene + 0.2 * noise).astype(np.float32)[None, None]


def make_network():
    return Sequential([
        Conv2D.from_shape(1, FILTERS, KERNEL, padding=KERNEL // 2, padding_mode="reflect",
                          seed=0),
        ReLU(),
        MaxPool2D(POOL),
    ])


def conv_gflop(height, width):
    """Multiply-adds x 2 of the conv layer (same padding: one output per input pixel)."""
    return 2.0 * FILTERS * KERNEL * KERNEL * height * width / 1e9


def measure(run, rounds):
    """Best wall time and best CPU time (all threads of this process) of ``rounds`` runs.

    Mpixel per CPU-second is the per-core throughput that survives a busy machine: time taken
    by other processes is not counted, while ours (threads spinning or waiting included) is.
    """
    wall = cpu = float("inf")
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=20000, help="image side in pixels")
    parser.add_argument("--chunk", type=int, default=1024, help="chunk side in pixels")
    parser.add_argument("--part", type=int, default=4096,
                        help="side of the part computed in memory for comparison")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (best is kept)")
    parser.add_argument("--tmpdir", default=None, help="where the temporary directory goes")
    parser.add_argument("--keep", action="store_true", help="keep the zarr arrays")
    parser.add_argument("--memory-limit", type=int, default=None, metavar="MB",
                        help="cap the process's data memory (RLIMIT_DATA) while the image is "
                             "generated and convolved, e.g. 1000 for a 1.6 GB image")
    parser.add_argument("--no-thread-table", action="store_true",
                        help="skip the workers x threads comparison")
    args = parser.parse_args(argv)
    size, chunk = args.size, args.chunk
    part = min(args.part, size)
    cores = fastconv._validation.resolve_num_threads(None)
    out_side = size // POOL

    image_gb = size * size * 4 / 1e9
    output_gb = FILTERS * out_side * out_side * 4 / 1e9
    workdir = tempfile.mkdtemp(prefix="fastconv-dask-", dir=args.tmpdir)
    free_gb = shutil.disk_usage(workdir).free / 1e9
    if image_gb + output_gb > 0.9 * free_gb:
        shutil.rmtree(workdir)
        sys.exit(f"needs {image_gb + output_gb:.1f} GB of disk, {free_gb:.1f} GB free")
    net = make_network()
    print(f"fastconv {fastconv.__version__}, dask {dask.__version__}, zarr {zarr.__version__}, "
          f"{cores} cores")
    print(f"network: {net.layers}")
    print(f"image {size} x {size} float32 = {image_gb:.2f} GB, chunks {chunk} x {chunk}; "
          f"output {FILTERS} x {out_side} x {out_side} = {output_gb:.2f} GB; in {workdir}")
    limits = resource.getrlimit(resource.RLIMIT_DATA)
    if args.memory_limit:
        # The soft limit only: lifted again below for the in-memory comparison.
        resource.setrlimit(resource.RLIMIT_DATA, (args.memory_limit * 2**20, limits[1]))
        print(f"data memory limited to {args.memory_limit} MB (RLIMIT_DATA) for the chunked run")
    try:
        # 1. the image on disk, generated chunk by chunk (never whole in memory)
        start = time.perf_counter()
        source = zarr.create_array(os.path.join(workdir, "image.zarr"), shape=(1, 1, size, size),
                                   chunks=(1, 1, chunk, chunk), dtype="float32",
                                   compressors=None)
        scene = da.map_blocks(synthetic_block, chunks=((1,), (1,)) + ((chunk,) * (size // chunk)
                              + ((size % chunk,) if size % chunk else ()),) * 2,
                              dtype=np.float32, meta=np.empty((0, 0, 0, 0), np.float32))
        da.store(scene, source, lock=False, scheduler="threads")
        print(f"generated the image in {time.perf_counter() - start:.1f} s, "
              f"peak RSS so far {peak_rss_mb():.0f} MB")

        # 2. the chunked run, disk to disk
        x = da.from_zarr(source)
        y = fastconv.dask.apply(net, x)
        out_chunks = tuple(c[0] for c in y.chunks)
        if any(len(set(c[:-1])) > 1 or c[-1] > c[0] for c in y.chunks):
            y = y.rechunk(out_chunks)  # zarr wants regular chunks
        target = zarr.create_array(os.path.join(workdir, "features.zarr"), shape=y.shape,
                                   chunks=out_chunks, dtype="float32", compressors=None)
        chunked_time, chunked_cpu = measure(
            lambda: da.store(y, target, lock=False, scheduler="threads"), 1)
        chunked_rss = peak_rss_mb()
        resource.setrlimit(resource.RLIMIT_DATA, limits)
        mpix, mpix_cpu = size * size / chunked_time / 1e6, size * size / chunked_cpu / 1e6
        print(f"\nchunked run, zarr -> zarr, threaded scheduler ({dask.system.CPU_COUNT} workers "
              f"x {fastconv.dask.threads_per_task(dask.system.CPU_COUNT)} thread):")
        print(f"  {chunked_time:.2f} s ({chunked_cpu:.2f} CPU-s), {mpix:.1f} Mpixel/s, "
              f"{conv_gflop(size, size) / chunked_time:.1f} GF/s (conv), {mpix_cpu:.1f} "
              f"Mpixel/CPU-s")
        print(f"  peak RSS {chunked_rss:.0f} MB = {chunked_rss / 1e3 / image_gb:.0%} of the image")
        # The same reading and computing, but only per-filter maxima leave the graph: what the
        # run costs without writing its 16 feature maps.
        reduced_time, reduced_cpu = measure(
            lambda: y.max(axis=(0, 2, 3)).compute(scheduler="threads"), 1)
        reduced_mpix = size * size / reduced_time / 1e6
        reduced_mpix_cpu = size * size / reduced_cpu / 1e6
        print(f"chunked run, zarr -> per-filter maxima (nothing written):\n  {reduced_time:.2f} s "
              f"({reduced_cpu:.2f} CPU-s), {reduced_mpix:.1f} Mpixel/s, "
              f"{conv_gflop(size, size) / reduced_time:.1f} GF/s (conv), {reduced_mpix_cpu:.1f} "
              f"Mpixel/CPU-s")

        # 3. in-memory fastconv on a part that fits, and the same part chunked from memory
        window = np.asarray(source[:, :, :part, :part])
        check = fastconv.dask.apply(net, da.from_array(window, chunks=(1, 1, chunk, chunk)))
        reference = net(window)
        agree = np.array_equal(check.compute(scheduler="threads"), reference)
        # Written outputs whose windows lie inside the part (the part's own bottom/right border
        # is padded, the image's is not) must be the in-memory values too.
        inner = (part - KERNEL // 2) // POOL if part < size else part // POOL
        stored = np.asarray(target[:, :, :inner, :inner])
        written = np.array_equal(stored, reference[:, :, :inner, :inner])
        print(f"\nchunked == in-memory on a {part} x {part} part: {agree} (from memory), "
              f"{written} (what was written)")

        def in_memory(threads):
            return lambda: net(window, num_threads=threads)

        def chunked(workers, threads, fuse=True):
            def run():
                with dask.config.set(num_workers=workers):
                    fastconv.dask.apply(net, da.from_array(window, chunks=(1, 1, chunk, chunk)),
                                        num_threads=threads, fuse=fuse).compute(
                                            scheduler="threads")
            return run

        memory_time, memory_cpu = measure(in_memory(cores), args.rounds)
        memory_mpix = part * part / memory_time / 1e6
        memory_mpix_cpu = part * part / memory_cpu / 1e6
        print(f"in-memory fastconv, {cores} threads: {memory_time:.3f} s ({memory_cpu:.3f} CPU-s), "
              f"{memory_mpix:.1f} Mpixel/s, {conv_gflop(part, part) / memory_time:.1f} GF/s "
              f"(conv), {memory_mpix_cpu:.1f} Mpixel/CPU-s")
        print(f"chunked / in-memory, same {cores} cores: disk to disk {mpix / memory_mpix:.0%} of "
              f"the throughput, {mpix_cpu / memory_mpix_cpu:.0%} per CPU-second; disk to maxima "
              f"{reduced_mpix / memory_mpix:.0%}, {reduced_mpix_cpu / memory_mpix_cpu:.0%} per "
              f"CPU-second")

        # 4. workers x threads per task, on the in-memory part (no disk in the way)
        if not args.no_thread_table:
            runs = [("in memory", "-", cores, in_memory(cores)),
                    ("in memory", "-", 1, in_memory(1)),
                    ("chunked (default rule)", cores, None, chunked(cores, None)),
                    ("chunked", 1, cores, chunked(1, cores)),
                    ("chunked (oversubscribed)", cores, cores, chunked(cores, cores)),
                    ("chunked", 1, 1, chunked(1, 1)),
                    ("chunked, conv|pool unfused", cores, None, chunked(cores, None, False))]
            wall = [float("inf")] * len(runs)
            cpu = [float("inf")] * len(runs)
            for _ in range(args.rounds):  # interleaved rounds, best of each
                for index, (*_, run) in enumerate(runs):
                    time.sleep(0.05)
                    seconds, cpu_seconds = measure(run, 1)
                    wall[index] = min(wall[index], seconds)
                    cpu[index] = min(cpu[index], cpu_seconds)
            print(f"\n{part} x {part} part from memory, threaded scheduler, best of "
                  f"{args.rounds}:")
            print(f"  {'run':28} {'workers':>7} {'threads':>7} {'time s':>7} {'CPU-s':>6} "
                  f"{'Mpix/s':>7} {'GF/s':>6} {'Mpix/CPU-s':>10}")
            for index, (label, workers, threads, _) in enumerate(runs):
                shown = (fastconv.dask.threads_per_task(workers)
                         if threads is None else threads)
                print(f"  {label:28} {workers!s:>7} {shown:>7} {wall[index]:7.3f} "
                      f"{cpu[index]:6.3f} {part * part / wall[index] / 1e6:7.1f} "
                      f"{conv_gflop(part, part) / wall[index]:6.1f} "
                      f"{part * part / cpu[index] / 1e6:10.1f}")
            print(f"  chunked/in-memory throughput: {wall[0] / wall[2]:.0%} on {cores} cores "
                  f"(unfused {wall[0] / wall[6]:.0%}), {wall[1] / wall[5]:.0%} on 1 core; "
                  f"per CPU-second {cpu[0] / cpu[2]:.0%} (unfused {cpu[0] / cpu[6]:.0%}), "
                  f"{cpu[1] / cpu[5]:.0%}")
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, limits)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
