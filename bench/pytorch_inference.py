#!/usr/bin/python3
"""PyTorch's side of the inference study (studies/study_inference.cpp): the same
cnn, eval mode, the same shapes and the same timing (p50 / p90 of batch-1
passes at 32x32 and 128x128, images/second of batch-256 passes at 32x32), in
three versions:

    pytorch fp32         the model with BatchNorm2d, under torch.inference_mode()
    pytorch fp32-folded  BatchNorm folded into the convs (torch.fx.experimental.optimization.fuse)
    pytorch bf16-folded  the folded model under torch.autocast("cpu", dtype=torch.bfloat16)

Weights are random (timing does not depend on them); run it right after
study_inference, on the same (quiet) machine:

    /usr/bin/python3 bench/pytorch_inference.py --out results/studies/inference --threads 2

Writes OUT/pytorch_latency.csv (the columns of study_inference's latency.csv)
and OUT/pytorch_info.json (how it was run); study_inference puts both into
summary.md the next time it writes it. Not part of the build or of CI.
"""
import argparse, csv, datetime, json, os, sys, time

import torch
import torch.fx.experimental.optimization as fx_optimization

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("MINNOW_SHARED", os.path.join(here, "..", "..", "shared")) + "/reference")
from models import RefCNN  # noqa: E402


def percentile(values, q):
    """Nearest rank, as study_inference: the smallest value with a fraction q at or below it."""
    v = sorted(values)
    rank = min(max(int(-(-q * len(v) // 1)), 1), len(v))
    return v[rank - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/studies/inference")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=200, help="timed passes per version at batch 1")
    ap.add_argument("--throughput-iters", type=int, default=10, help="timed passes per version at batch 256")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    fp32 = RefCNN("batch").eval()
    with torch.no_grad():  # running statistics away from their defaults, so folding has work to do
        for m in fp32.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.2, 0.5)
    folded = fx_optimization.fuse(fp32)

    def bf16(model):
        def run(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x)
        return run

    versions = [("pytorch fp32", fp32), ("pytorch fp32-folded", folded), ("pytorch bf16-folded", bf16(folded))]
    shapes = [("32x32", 1, 32, a.iters), ("128x128", 1, 128, a.iters), ("32x32", 256, 32, a.throughput_iters)]
    rows = []
    with torch.inference_mode():
        x = torch.randn(1, 3, 32, 32)
        ref, fused = fp32(x), folded(x)
        print(f"folding check: max |folded - fp32| = {(fused - ref).abs().max().item():.3g}")
        for input_name, batch, size, iters in shapes:
            x = torch.randn(batch, 3, size, size)
            times = {name: [] for name, _ in versions}
            cpu_times = {name: [] for name, _ in versions}
            rounds = max(1, min(a.rounds, iters))
            for r in range(rounds):
                for name, model in versions:
                    for _ in range(2):
                        model(x)
                    n = iters // rounds + (1 if r < iters % rounds else 0)
                    for _ in range(n):
                        c0 = time.process_time()
                        t0 = time.perf_counter()
                        model(x)
                        times[name].append(time.perf_counter() - t0)
                        cpu_times[name].append(time.process_time() - c0)
            for name, _ in versions:
                t = times[name]
                p50, p90 = percentile(t, 0.5), percentile(t, 0.9)
                print(f"  {name:22s} batch {batch:3d} {input_name:8s} p50 {p50 * 1e3:8.3f} ms  p90 {p90 * 1e3:8.3f} ms",
                      flush=True)
                rows.append({"variant": name, "input": input_name, "batch": batch, "threads": a.threads,
                             "passes": len(t), "p50_ms": f"{p50 * 1e3:.4f}", "p90_ms": f"{p90 * 1e3:.4f}",
                             "mean_ms": f"{sum(t) / len(t) * 1e3:.4f}", "img_per_s": f"{batch / p50:.1f}",
                             "cpu_p50_ms": f"{percentile(cpu_times[name], 0.5) * 1e3:.4f}"})
    os.makedirs(a.out, exist_ok=True)
    # Keep the rows of other thread counts (one run per count), as study_inference does.
    path = os.path.join(a.out, "pytorch_latency.csv")
    kept = []
    if os.path.exists(path):
        with open(path, newline="") as f:
            kept = [r for r in csv.DictReader(f) if r.get("threads") != str(a.threads)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows([{k: r.get(k, "") for k in rows[0]} for r in kept] + rows)
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ)
    info = {"command": (env + " " if env else "") + "/usr/bin/python3 " + " ".join(sys.argv),
            "when": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()),
            "note": "Random weights; BatchNorm folded by torch.fx.experimental.optimization.fuse; bf16 by "
                    "torch.autocast on the CPU."}
    info_path = os.path.join(a.out, "pytorch_info.json")
    runs = {}
    if os.path.exists(info_path):
        with open(info_path) as f:
            runs = json.load(f).get("runs", {})
    runs[str(a.threads)] = info
    with open(info_path, "w") as f:
        json.dump({"runs": runs}, f, indent=2)
    print(f"wrote {a.out}/pytorch_latency.csv, pytorch_info.json")


if __name__ == "__main__":
    main()
