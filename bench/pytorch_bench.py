#!/usr/bin/python3
"""PyTorch's side of minnow's benchmark: the same networks, shapes and step as
`bench` (forward + cross-entropy + backward + SGD with momentum and weight
decay), timed the same way, printed as the same JSON lines.

Run with Debian's PyTorch (apt-get install python3-torch):
    /usr/bin/python3 bench/pytorch_bench.py --model cnn --norm batch --batch-size 128 --threads 2 --layout nchw
Not part of the build or of CI; bench/compare.sh runs it alternately with minnow.
"""
import argparse, json, os, resource, statistics, sys, time

import torch
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("MINNOW_SHARED", os.path.join(here, "..", "..", "shared")) + "/reference")
from models import RefCNN, ResNet20, conv_flops  # noqa: E402


def build(model, norm):
    if model == "cnn":
        return RefCNN(norm)
    if model == "resnet20":
        if norm != "batch":
            raise SystemExit("resnet20 is defined with BatchNorm only")
        return ResNet20()
    raise SystemExit(f"unknown model {model}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--norm", default="batch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw")
    ap.add_argument("--mode", choices=["train", "eval"], default="train")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--what", default="net", choices=["net", "batchnorm", "conv"],
                    help="batchnorm: BatchNorm2d forward+backward on (batch, 64, 32, 32) only; "
                         "conv: forward+backward of one of the cnn's 3x3 convolutions (--layer)")
    ap.add_argument("--layer", type=int, default=1, choices=range(5),
                    help="with --what conv: 0..4 = 3->64 @32, 64->64 @32, 64->128 @16, 128->128 @16, "
                         "128->256 @8 (bench/bench_conv.cpp's Conv_FwdBwd/i)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if a.layout == "channels_last" else torch.contiguous_format

    if a.what == "batchnorm":
        bn = torch.nn.BatchNorm2d(64)
        x = torch.randn(a.batch_size, 64, 32, 32).to(memory_format=fmt).requires_grad_()
        dy = torch.randn_like(x)
        def step():
            y = bn(x)
            y.backward(dy)
        flops = 0
    elif a.what == "conv":  # as Conv_FwdBwd in bench/bench_conv.cpp: dx except for layer 0 (the images)
        cin, cout, hw = [(3, 64, 32), (64, 64, 32), (64, 128, 16), (128, 128, 16), (128, 256, 8)][a.layer]
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1).to(memory_format=fmt)
        x = torch.randn(a.batch_size, cin, hw, hw).to(memory_format=fmt).requires_grad_(a.layer > 0)
        dy = torch.randn(a.batch_size, cout, hw, hw).to(memory_format=fmt)
        def step():
            conv(x).backward(dy)
        flops = 0
    else:
        net = build(a.model, a.norm).to(memory_format=fmt)
        flops = conv_flops(build(a.model, a.norm), (1, 3, a.image_size, a.image_size))
        x = torch.randn(a.batch_size, 3, a.image_size, a.image_size).to(memory_format=fmt)
        y = torch.randint(0, 10, (a.batch_size,))
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        if a.mode == "train":
            net.train()
            def step():
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(x), y)
                loss.backward()
                opt.step()
        else:
            net.eval()
            def step():
                with torch.no_grad():
                    net(x)

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    times_sorted = sorted(times)
    p90 = times_sorted[min(len(times) - 1, int(0.9 * len(times)))]
    mult = 3 if a.mode == "train" else 1  # backward costs about twice the forward
    print(json.dumps({
        "impl": f"pytorch-{torch.__version__}-{a.layout}",
        "what": a.what, "layer": a.layer if a.what == "conv" else None,
        "model": a.model, "norm": a.norm, "mode": a.mode,
        "batch_size": a.batch_size, "threads": a.threads, "image_size": a.image_size,
        "img_per_s": a.batch_size / med,
        "ms_per_step_median": med * 1e3, "ms_per_step_p90": p90 * 1e3,
        "gflops": flops * mult * a.batch_size / med / 1e9 if flops else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
