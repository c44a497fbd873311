"""Speed of the volume models' training and inference (cnn_rnn, and cnn_conn, the CNN-RNN that reads
connectivity): frames/s, FLOPs per frame, TFLOP/s, GPU busy, loader wait.

Usage (inside the installed environment, or with ``PYTHONPATH=workflow`` on a GPU machine):

    python bench/train.py                      # CPU here: each model's default, 4 mm and 8 mm grids
    python bench/train.py --device cuda        # the GPU benchmark, one command (every variant)
    python bench/train.py --device cuda --record   # also append the table to bench/results.md

Data: synthetic subjects on the 4 mm (or 8 mm) grid that extraction makes from fMRIPrep's MNI152
2 mm outputs (grid 50 x 59 x 48 at 4 mm with 29,794 in-brain voxels, bench/extract.py); an
ellipsoid brain of the same voxel count, 200 frames per subject, a planted age amplitude; stored
float16 in-mask, as ``load_inputs`` hands them to the model. Speed does not depend on the values.
cnn_conn's parcellation starts from 200 regions of equal size (consecutive in-mask voxels; the
operator is a dense voxels x regions matrix whatever the regions' shapes) and reads whole runs
(``window`` = the 200 frames), as it does in training.

Each variant trains through the real loop (``brainage.torchloop.loop.train_network``: sampler, loader
workers, pinned memory, device augmentation, autocast), one warm-up epoch, then ``--epochs`` timed
epochs. Reported per variant:

- train / inference frames per second (inference: every window of every run, ``predict_network``);
- FLOPs per frame (``torch.utils.flop_counter``, forward; a training frame is forward + backward);
- achieved TFLOP/s, and the share of the rate the model's shapes allow: each layer needs at least
  max(FLOPs / peak, bytes / bandwidth) (bytes = its inputs read and outputs written once, x3 for
  training), with the peak bf16 matrix rate and the copy bandwidth measured on the device;
- GPU busy: NVML utilisation sampled every 20 ms over the timed epochs (share of time a kernel ran);
- loader wait: time the step spent waiting for its next batch, per step and as a share of the step;
- peak memory: GPU, the most allocated during the variant's training and inference; CPU, the process's
  peak resident memory so far (run one variant per process to read it as that variant's).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from demo_run import machine  # noqa: E402  (bench/ is sys.path[0] when run as a script)

from brainage.models.cnn_conn import CnnConn, CnnConnConfig, CnnConnNet
from brainage.models.cnn_rnn import CnnRnnNet, augment_volumes
from brainage.torchloop.data import WindowDataset
from brainage.torchloop.batches import resident
from brainage.torchloop.loop import LoopSettings, autocast, predict_network, train_network

REPO = Path(__file__).resolve().parents[1]
# Grid and in-brain voxel count of extraction's volumes from a 2 mm MNI152 BOLD (bench/extract.py).
GRIDS = {4: ((50, 59, 48), 29_794), 8: ((25, 30, 24), 29_794 // 8)}
# cnn_conn's regions (the CC200 atlas's count).
REGIONS = 200


@dataclasses.dataclass(frozen=True)
class Variant:
    """One benchmarked configuration (the model's defaults unless named)."""

    name: str
    model: str = "cnn_rnn"
    batch_size: int = 8
    window: int = 24
    channels: tuple[int, ...] = (8, 16)
    bf16: bool = True
    compile: bool | str = False
    workers: int = 4
    placement: str = "auto"
    space_to_depth: bool = True


def brain_mask(voxel_size: int) -> np.ndarray:
    """An ellipsoid 'brain' on the grid with about as many voxels as the MNI152 mask."""
    shape, n_voxels = GRIDS[voxel_size]
    axes = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((axes**2).sum(axis=0))
    return radius <= np.sort(radius.ravel())[n_voxels - 1]


def synthetic_subjects(n: int, frames: int, mask: np.ndarray, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """float16 in-mask frames ``(frames, V)`` per subject with an age-scaled amplitude, and ages."""
    rng = np.random.default_rng(seed)
    ages = rng.uniform(8, 80, n)
    v = int(mask.sum())
    arrays = [(rng.standard_normal((frames, v), dtype=np.float32) * (0.5 + a / 80)).astype(np.float16) for a in ages]
    return arrays, (ages - ages.mean()) / ages.std()


def device_ceilings(device: torch.device) -> tuple[float, float]:
    """Measured (bf16 matrix FLOP/s, copy bytes/s) of the device; (nan, nan) on CPU."""
    if device.type != "cuda":
        return float("nan"), float("nan")
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    src = torch.randn(2**28, device=device)  # 1 GiB
    dst = torch.empty_like(src)
    rates = []
    for work, amount in ((lambda: a @ b, 2 * 8192**3), (lambda: dst.copy_(src), 2 * src.numel() * 4)):
        for _ in range(3):
            work()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            work()
        end.record()
        torch.cuda.synchronize()
        rates.append(amount * 10 / (start.elapsed_time(end) / 1000))
    return rates[0], rates[1]


def step_cost(net: torch.nn.Module, x: torch.Tensor, bf16: bool) -> tuple[float, float]:
    """(forward FLOPs, bytes each leaf layer reads and writes once) of one forward pass on ``x``."""
    moved = [0]

    def count(module, inputs, output):
        tensors = [t for t in (*inputs, output) if isinstance(t, torch.Tensor)]
        moved[0] += sum(t.numel() * t.element_size() for t in tensors)

    hooks = [m.register_forward_hook(count) for m in net.modules() if not list(m.children())]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, autocast(x.device, bf16):
        net(x)
    for h in hooks:
        h.remove()
    return float(counter.get_total_flops()), float(moved[0])


class Utilisation:
    """NVML GPU utilisation sampled in a thread (percent of time a kernel ran)."""

    def __init__(self, device: torch.device):
        self.samples, self._stop, self._thread = [], threading.Event(), None
        if device.type == "cuda":
            import pynvml

            pynvml.nvmlInit()
            self._handle, self._nvml = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0), pynvml

    def __enter__(self):
        if hasattr(self, "_handle"):
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mean(self) -> float:
        return float(np.mean(self.samples)) if self.samples else float("nan")


def equal_regions(mask: np.ndarray, n_regions: int = REGIONS) -> np.ndarray:
    """``(V, K)`` region means over consecutive in-mask voxels: a stand-in for an atlas on the grid."""
    labels = np.arange(int(mask.sum())) * n_regions // int(mask.sum())
    parcels = np.zeros((labels.size, n_regions), dtype=np.float32)
    parcels[np.arange(labels.size), labels] = 1.0
    return parcels / parcels.sum(axis=0)


def network(variant: Variant, mask: np.ndarray, device: torch.device) -> torch.nn.Module:
    """The variant's network: cnn_rnn (hidden 32, GRU) or cnn_conn (hidden 32, the config's reader)."""
    if variant.model == "cnn_conn":
        c = CnnConnConfig()
        net = CnnConnNet(mask, equal_regions(mask), variant.channels, c.hidden, c.shrinkage, c.dropout)
        return net.to(device)
    # Voxel size irrelevant to speed; x = 0 at the grid's centre (a symmetric ellipsoid), so the
    # flips of the augmentation run, as in training on MNI-space volumes.
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[0, 3] = -(mask.shape[0] - 1) / 2
    net = CnnRnnNet(variant.channels, 32, "gru", 0.2, mask, space_to_depth=variant.space_to_depth, affine=affine)
    return net.to(device).to(memory_format=torch.channels_last_3d)


def augmentation(variant: Variant, net: torch.nn.Module):
    """The model's own training augmentation: flips and intensity (cnn_rnn), frame dropout (cnn_conn)."""
    if variant.model == "cnn_conn":
        return CnnConn(CnnConnConfig(channels=variant.channels)).augment
    flip = net.unmask.flip_index

    def augment(x, gen):
        return augment_volumes(x, gen, flip)

    return augment


def run_variant(variant: Variant, arrays, targets, mask, device, epochs: int, ceilings) -> dict:
    """Train one variant (warm-up epoch + timed epochs), then time inference; return its figures."""
    torch.manual_seed(0)
    net = network(variant, mask, device)
    # Frames per pass as the models set them (cnn_conn: whole runs, up to its window).
    window = min(variant.window, max(len(a) for a in arrays))
    variant = dataclasses.replace(variant, window=window)
    data = WindowDataset(arrays, targets, window)
    workers = variant.workers if device.type == "cuda" else 0

    def settings(n):
        return LoopSettings(n, variant.batch_size, 1e-3, 1e-4, n, bf16=variant.bf16, compile=variant.compile,
                            workers=workers, placement=variant.placement)

    augment = augmentation(variant, net)
    rng, gen = np.random.default_rng(0), torch.Generator(device=device).manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_network(net, data, settings(1), rng=rng, generator=gen, device=device, augment=augment)  # warm-up
    with Utilisation(device) as busy:
        history = train_network(net, data, settings(epochs), rng=rng, generator=gen, device=device, augment=augment)
    seconds, wait = sum(history.epoch_seconds), sum(history.data_wait_seconds)
    steps = epochs * -(-len(arrays) // variant.batch_size)
    train_fps = epochs * len(arrays) * variant.window / seconds
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    predict_network(net, arrays, variant.window, 4 * variant.batch_size, device, variant.bf16)
    infer_s = time.perf_counter() - start
    if device.type == "cuda":
        peak_gb = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    infer_fps = sum(a.shape[0] for a in arrays) / infer_s
    sample = torch.from_numpy(np.stack([a[: variant.window] for a in arrays[: variant.batch_size]])).to(device)
    # The model's FLOPs are those of the plain first convolution, whichever layout runs it
    # (space-to-depth computes the same function with 64 instead of 27 taps per output).
    flops, moved = step_cost(network(dataclasses.replace(variant, space_to_depth=False), mask, device), sample,
                             variant.bf16)
    frames = sample.shape[0] * sample.shape[1]
    peak, bandwidth = ceilings
    floor = 3 * max(flops / peak, moved / bandwidth) if device.type == "cuda" else float("nan")
    achieved = 3 * flops / frames * train_fps
    return {
        "model": variant.model, "variant": variant.name, "batch": variant.batch_size, "window": variant.window,
        "channels": list(variant.channels), "bf16": variant.bf16 and device.type == "cuda",
        "compile": variant.compile, "workers": workers, "stem": "s2d" if variant.space_to_depth else "plain",
        "placement": "device" if resident(data, variant.placement, device) else "loader",
        "train_fps": train_fps, "infer_fps": infer_fps, "mflop_per_frame": flops / frames / 1e6,
        "train_tflops": achieved / 1e12, "allowed_tflops": 3 * flops / floor / 1e12,
        "share_of_allowed": achieved / (3 * flops / floor) if floor == floor else float("nan"),
        "gpu_busy_pct": busy.mean(), "wait_ms_per_step": 1000 * wait / steps, "wait_share": wait / seconds,
        "peak_gb": peak_gb,
        "epochs": epochs, "subjects": len(arrays),
    }


def profile_epoch(variant: Variant, arrays, targets, mask, device, path: Path) -> None:
    """One training epoch under torch.profiler: the top operators by device and by CPU time."""
    from torch.profiler import ProfilerActivity, profile

    net = network(variant, mask, device)
    data = WindowDataset(arrays, targets, variant.window)
    settings = LoopSettings(1, variant.batch_size, 1e-3, 1e-4, 1, bf16=variant.bf16, placement=variant.placement,
                            workers=variant.workers if device.type == "cuda" else 0)
    rng, gen = np.random.default_rng(0), torch.Generator(device=device).manual_seed(0)
    train_network(net, data, settings, rng=rng, generator=gen, device=device)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        train_network(net, data, settings, rng=rng, generator=gen, device=device)
    table = prof.key_averages()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    path.write_text(table.table(sort_by=sort, row_limit=30) + "\n\n" + table.table(sort_by="self_cpu_time_total", row_limit=30))


def conn_variant(name: str, channels: tuple[int, ...], **changes) -> Variant:
    """A cnn_conn variant: whole 200-frame runs, 32 subjects per step (the in-batch ridge needs a few
    dozen), the residual CNN's ``channels`` (no space-to-depth stem: it convolves at full resolution)."""
    return Variant(name, "cnn_conn", 32, 200, channels, space_to_depth=False, **changes)


VARIANTS = {
    "default": Variant("default"),
    "plain_stem": Variant("plain_stem", space_to_depth=False),
    "loader": Variant("loader", placement="loader"),
    "loader_no_workers": Variant("loader_no_workers", placement="loader", workers=0),
    "fp32": Variant("fp32", bf16=False),
    "batch32": Variant("batch32", batch_size=32),
    "batch64": Variant("batch64", batch_size=64),
    "batch32_compile": Variant("batch32_compile", batch_size=32, compile=True),
    "graphs": Variant("graphs", compile="reduce-overhead"),
    "batch32_graphs": Variant("batch32_graphs", batch_size=32, compile="reduce-overhead"),
    "wide": Variant("wide", batch_size=32, channels=(32, 64, 128)),
    "conn_nocnn": conn_variant("conn_nocnn", ()),
    "conn_cnn4": conn_variant("conn_cnn4", (4,)),
    "conn_cnn4_fp32": conn_variant("conn_cnn4_fp32", (4,), bf16=False),
    "conn_cnn4_loader": conn_variant("conn_cnn4_loader", (4,), placement="loader"),
    "conn_cnn8_8": conn_variant("conn_cnn8_8", (8, 8)),
    "conn_cnn4_compile": conn_variant("conn_cnn4_compile", (4,), compile=True),
}
# Without a GPU: each model's configured default (cnn_conn with its CNN, and without).
CPU_VARIANTS = ["default", "conn_nocnn", "conn_cnn4"]


def table(rows: list[dict]) -> str:
    """Markdown table of the figures."""
    cols = ["voxel_mm", "model", "variant", "batch", "channels", "stem", "bf16", "compile", "placement", "workers", "train_fps", "infer_fps",
            "mflop_per_frame", "train_tflops", "allowed_tflops", "share_of_allowed", "gpu_busy_pct",
            "wait_ms_per_step", "wait_share", "peak_gb"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--voxel-size", type=int, nargs="+", default=[4, 8], choices=sorted(GRIDS))
    parser.add_argument("--subjects", type=int, default=None, help="default: 128 on cuda, 16 on cpu")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs; default 5 on cuda, 1 on cpu")
    parser.add_argument("--variants", nargs="+", default=None, choices=sorted(VARIANTS),
                        help=f"default: all on cuda, {' '.join(CPU_VARIANTS)} on cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--record", action="store_true", help="append the table to bench/results.md")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write torch.profiler tables of one epoch of the first variant here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    n, epochs = args.subjects or (128 if cuda else 16), args.epochs or (5 if cuda else 1)
    names = args.variants or (list(VARIANTS) if cuda else CPU_VARIANTS)
    torch.backends.cudnn.benchmark = cuda  # as brainage.train.fit does on a GPU
    ceilings = device_ceilings(device)
    rows = []
    for voxel in args.voxel_size:
        mask = brain_mask(voxel)
        arrays, targets = synthetic_subjects(n, args.frames, mask)
        for name in names:
            row = dict(voxel_mm=voxel, **run_variant(VARIANTS[name], arrays, targets, mask, device, epochs, ceilings))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        if args.profile:
            profile_epoch(VARIANTS[names[0]], arrays, targets, mask, device, args.profile.with_suffix(f".{voxel}mm.txt"))
    where = torch.cuda.get_device_name(device) if cuda else "CPU"
    header = (
        f"## cnn_rnn and cnn_conn training speed (bench/train.py), {datetime.date.today().isoformat()}, {where}\n\n"
        f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads. "
        f"{n} synthetic subjects x {args.frames} frames, {epochs} timed epochs after one warm-up. "
        + (f"Measured ceilings: bf16 matrix {ceilings[0] / 1e12:.0f} TFLOP/s, copy {ceilings[1] / 1e12:.2f} TB/s."
           if cuda else "")
    )
    text = header + "\n\n" + table(rows) + "\n"
    print(text)
    if args.out:
        args.out.write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    if args.record:
        with open(REPO / "bench" / "results.md", "a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
