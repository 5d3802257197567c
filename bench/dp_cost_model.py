#!/usr/bin/env python3
"""Data-parallel training of the BatchNorm cnn past one machine, on paper.

    python3 bench/dp_cost_model.py --img-per-s 115 --wait-ms 29 --syncbn-ms 54

Each machine (2 cores) trains its own 128 images of every step, as in Goyal
et al. (2017): the global batch grows with the machines (weak scaling). Per
step, with K machines on a network of bandwidth beta and latency alpha:

  compute    t_c  = 128 / (images per second of one machine, measured)
  gradients  ring allreduce of S = 4 P bytes (P parameters, float32):
             t_ar = 2 (K-1) alpha + 2 (K-1)/K * S / beta
             (each rank sends and receives 2 (K-1)/K of the buffer, in 2 (K-1)
             messages). The buckets start during backward(), so at best all
             but the last bucket's share hides behind the backward of the
             layers below; the model takes the conservative end: hidden only
             what backward computes after the first bucket starts, i.e.
             exposed = max(t_ar - h * t_c, t_ar / n_buckets), h the share of
             the step after the last layer's gradient is ready (about half of
             backward, which is about 2/3 of the step: h = 1/3).
  SyncBN     per BatchNorm layer and step, two allgathers on the critical path
             (forward: 3C doubles per rank, backward: 2C): recursive doubling,
             log2(K) alpha + (K-1) * n_bytes / beta each. They cannot overlap:
             the layer waits for its statistics.

  stragglers every collective waits for the slowest rank. With step times of
             standard deviation sigma, independent across ranks, the wait at
             one synchronisation per step is sigma * E[max of K standard
             normals] (0.56 at K = 2, 1.42 at 8, 2.07 at 32, 2.92 at 256);
             SyncBN cuts the step into n = 1 + 2 * layers segments, each
             synchronised, whose noise adds up to sqrt(n) times one segment's.
             sigma comes from the 2-rank measurement (--wait-ms: what a step
             waited in MINNOW_ALLREDUCE=blocking, which on one machine is
             almost all straggler time, the transfer itself taking ~1 ms).

  efficiency = t_c / (t_c + exposed + t_syncbn + stragglers)

The latencies are typical MPI figures, not measured here: 10 Gb/s Ethernet
over TCP 25 us, 25 Gb/s Ethernet with RoCE 5 us, 100 Gb/s InfiniBand 2 us.
"""
import argparse
import math

PARAMS = 559178                          # the cnn (train_cifar prints it)
BN_CHANNELS = [64, 64, 128, 128, 256]    # its five BatchNorm layers (the checkpoint's running_mean shapes)
BUCKET_FLOATS = 1 << 18                  # train/data_parallel.h, GradientReducer
NETWORKS = [("10 Gb/s", 10e9, 25e-6), ("25 Gb/s", 25e9, 5e-6), ("100 Gb/s", 100e9, 2e-6)]
MACHINES = [2, 8, 32, 256]


def expected_max_normal(k, steps=20000):
    """E[max of k independent standard normals], by integrating 1 - F(x)^k."""
    lo, hi = -10.0, 10.0
    h = (hi - lo) / steps
    total = 0.0
    for i in range(steps):
        x = lo + (i + 0.5) * h
        cdf = 0.5 * (1 + math.erf(x / math.sqrt(2)))
        total += ((1 - cdf ** k) if x > 0 else -(cdf ** k)) * h
    return total


def step_costs(k, beta_bits, alpha, t_c, hidden_share=1 / 3):
    beta = beta_bits / 8  # bytes per second
    s = 4 * PARAMS
    t_ar = 2 * (k - 1) * alpha + 2 * (k - 1) / k * s / beta
    buckets = math.ceil(PARAMS / BUCKET_FLOATS)
    exposed = max(t_ar - hidden_share * t_c, t_ar / buckets)
    t_sync = sum(math.log2(k) * alpha + (k - 1) * n * 8 * c / beta for c in BN_CHANNELS for n in (3, 2))
    return t_ar, exposed, t_sync


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--img-per-s", type=float, required=True, help="one machine's measured training throughput")
    ap.add_argument("--batch-per-machine", type=int, default=128)
    ap.add_argument("--syncbn-ms", type=float, help="measured at 2 ranks on one machine: --sync-bn's extra per step")
    ap.add_argument("--wait-ms", type=float, default=0.0,
                    help="measured at 2 ranks, MINNOW_ALLREDUCE=blocking: what a step waited for the allreduce")
    a = ap.parse_args()
    t_c = a.batch_per_machine / a.img_per_s
    sigma = a.wait_ms * 1e-3 / expected_max_normal(2) if a.wait_ms else 0.0
    segments = 1 + 2 * len(BN_CHANNELS)
    gmax = {k: expected_max_normal(k) for k in MACHINES + [2]}
    print(f"compute per step: {1e3 * t_c:.0f} ms ({a.batch_per_machine} images at {a.img_per_s:g} img/s); "
          f"gradients {4 * PARAMS / 1e6:.2f} MB in {math.ceil(PARAMS / BUCKET_FLOATS)} buckets; "
          f"SyncBN: {len(BN_CHANNELS)} layers, {2 * len(BN_CHANNELS)} allgathers per step")
    print()
    if sigma:
        print(f"step-time noise sigma = {1e3 * sigma:.0f} ms ({100 * sigma / t_c:.1f}% of a step), "
              f"from {a.wait_ms:g} ms waited per step at 2 ranks")
    print()
    print("| machines | network | allreduce ms | exposed ms | SyncBN ms | stragglers ms (SyncBN) "
          "| efficiency | with --sync-bn |")
    print("|---|---|---|---|---|---|---|---|")
    for name, beta, alpha in NETWORKS:
        for k in MACHINES:
            t_ar, exposed, t_sync = step_costs(k, beta, alpha, t_c)
            wait = sigma * gmax[k]
            wait_sync = math.sqrt(segments) * sigma * gmax[k]  # n segments of noise sigma/sqrt(n) each
            print(f"| {k} | {name} | {1e3 * t_ar:.2f} | {1e3 * exposed:.2f} | {1e3 * t_sync:.2f} | "
                  f"{1e3 * wait:.0f} ({1e3 * wait_sync:.0f}) | {100 * t_c / (t_c + exposed + wait):.1f}% | "
                  f"{100 * t_c / (t_c + exposed + t_sync + wait_sync):.1f}% |")
    # Where SyncBN's latency-bound allgathers cost as much as the whole
    # gradient allreduce left exposed: the machine count at which they overtake it.
    print()
    for name, beta, alpha in NETWORKS:
        k = 2
        while k < 1 << 20:
            _, exposed, t_sync = step_costs(k, beta, alpha, t_c)
            if t_sync > exposed:
                break
            k *= 2
        print(f"{name}: SyncBN's allgathers cost more than the exposed gradient allreduce from {k} machines"
              if k < 1 << 20 else f"{name}: SyncBN's allgathers stay below the exposed allreduce")
    if a.syncbn_ms is not None and sigma:
        print()
        print("check against 2 ranks on one machine (shared memory, not a network):")
        if a.syncbn_ms is not None and sigma:
            predicted = (math.sqrt(segments) - 1) * sigma * gmax[2]
            print(f"  SyncBN's extra time per step at 2 ranks: measured {a.syncbn_ms:g} ms, the straggler term "
                  f"predicts {1e3 * predicted:.0f} ms ((sqrt({segments}) - 1) x the one-point wait)")


if __name__ == "__main__":
    main()
