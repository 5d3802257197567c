#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets, tests/fuzz/seeds/<target>/:
a few small valid files of each format, so the fuzzer starts from inputs the
reader accepts. Plain Python (struct, json), no other package.

    python3 tests/fuzz/make_seeds.py
"""
import gzip
import json
import os
import shutil
import struct
import subprocess
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def safetensors(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape, values)] -> the bytes of a safetensors file."""
    fmt = {"F32": "<f", "F64": "<d", "I64": "<q"}
    header, data = {}, b""
    for name, dtype, shape, values in tensors:
        raw = b"".join(struct.pack(fmt[dtype], v) for v in values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors_seeds():
    t = "fuzz_safetensors"
    write(t, "one_f32", safetensors([("w", "F32", [2, 3], [0.5, -1, 2, 3.25, 0, 1e-3])], {"format": "pt"}))
    write(t, "dtypes", safetensors([
        ("a.weight", "F32", [3], [1, 2, 3]),
        ("a.num_batches_tracked", "I64", [], [7]),
        ("b", "F64", [1, 2], [0.25, -4]),
        ("empty", "F32", [0, 4], []),
    ]))
    write(t, "metadata_only", safetensors([], {"epochs_done": "1", "rng": "1 2 3 4"}))
    write(t, "unpadded", safetensors([("x", "I64", [2], [-1, 1 << 40])], pad=False))


# The model of fuzz_checkpoint.cpp: Conv2d(1, 2, 3, padding 1), BatchNorm2d(2),
# ReLU, AdaptiveAvgPool2d(1), Flatten, Linear(2, 3), as state_dict() names it.
PARAMS = [("0.weight", [2, 1, 3, 3]), ("0.bias", [2]), ("1.weight", [2]), ("1.bias", [2]),
          ("5.weight", [3, 2]), ("5.bias", [3])]
BUFFERS = [("1.running_mean", "F32", [2]), ("1.running_var", "F32", [2]), ("1.num_batches_tracked", "I64", [])]


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def values(shape, scale):
    return [scale * ((i * 7) % 5 - 2) for i in range(numel(shape))]


def checkpoint(optim, sched, epochs_done, step, rng, steps_done=True):
    """A TrainingCheckpoint::save of that model after `step` steps of `optim`."""
    tensors = [(n, "F32", s, values(s, 0.1)) for n, s in PARAMS]
    tensors += [(n, d, s, [step] if d == "I64" else [0.5] * numel(s)) for n, d, s in BUFFERS]
    lr = 0.1 if optim == "SGD" else 0.01
    group = {"params": [n for n, _ in PARAMS], "lr": lr, "weight_decay": 0.0 if optim != "AdamW" else 0.01,
             "momentum": 0.9 if optim == "SGD" else 0.0, "dampening": 0.0, "nesterov": False,
             "betas": [0.9, 0.999], "eps": 1e-8, "initial_lr": lr}
    meta = {"format": "minnow-train-checkpoint", "epochs_done": str(epochs_done), "step": str(step),
            "rng": " ".join(str(w) for w in rng), "model": "tiny",
            "optim.type": optim, "optim.param_groups": json.dumps([group], separators=(",", ":"))}
    if steps_done:
        for n, s in PARAMS:
            meta["optim.state.%s.step" % n] = str(step)
            bufs = ["momentum_buffer"] if optim == "SGD" else ["exp_avg", "exp_avg_sq"]
            for b in bufs:
                tensors.append(("optim.state.%s.%s" % (n, b), "F32", s, values(s, 0.01 if b != "exp_avg_sq" else 1e-4)))
    if sched:
        meta.update({"lr_scheduler.type": sched, "lr_scheduler.last_epoch": str(epochs_done),
                     "lr_scheduler.base_lrs": json.dumps([lr])})
    return safetensors(tensors, meta)


def checkpoint_seeds():
    t = "fuzz_checkpoint"
    rng = [0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89]
    write(t, "sgd_multistep", checkpoint("SGD", "MultiStepLR", 1, 5, rng + [0]))
    write(t, "adam_cosine", checkpoint("Adam", "CosineAnnealingLR", 2, 9, rng + [(1 << 32) | 0x3F000000]))
    write(t, "adamw_onecycle", checkpoint("AdamW", "OneCycleLR", 3, 3, rng + [0]))
    write(t, "sgd_fresh", checkpoint("SGD", None, 0, 0, rng + [0], steps_done=False))


def png(width, height, rgb):
    """A width x height PNG of one colour (8-bit RGB)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def folder_record(kind, cls, body):
    """One record of fuzz_image_folder.cpp's input."""
    return struct.pack(">BBH", kind, cls, len(body)) + body


def image_folder_seeds():
    t = "fuzz_image_folder"
    images = [png(32, 32, (25 * c, 255 - 25 * c, 100)) for c in range(10)]
    both = b"".join(folder_record(0, c, images[c]) + folder_record(1, c, images[c]) for c in range(10))
    write(t, "ten_classes", both)
    readme = folder_record(3, 0, b"CIFAR-10 as images\n") + folder_record(4, 0, b"hidden editor file")
    write(t, "with_extra_files", both + readme)
    write(t, "damaged_cache", both + folder_record(2, 0, bytes(3073)))


def cifar_binary_seeds():
    # One record: a label byte, then 3x32x32 pixels, channel-major.
    pixels = bytes((7 * i) % 256 for i in range(3 * 32 * 32))
    write("fuzz_cifar_binary", "one_record", bytes([3]) + pixels)


def idx(dims, values):
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(values)


def idx_seeds():
    # fuzz_idx.cpp parses the whole input as one IDX file, then cuts it where
    # its first two bytes say (2 + that number) into an images and a labels file.
    t = "fuzz_idx"
    images = idx([2, 3, 3], range(18))
    labels = idx([2], [1, 9])
    write(t, "labels", labels)
    write(t, "images_gz", gzip.compress(images, mtime=0))
    write(t, "pair", struct.pack(">H", len(images)) + images + labels)
    gz_images = gzip.compress(images, mtime=0)
    write(t, "pair_gz", struct.pack(">H", len(gz_images)) + gz_images + gzip.compress(labels, mtime=0))


def image_seeds():
    # fuzz_image.cpp: byte 0 picks channels (1 + b % 4), byte 1 the side (1 + b % 64).
    t = "fuzz_image"
    write(t, "rgb8_png", bytes([2, 7]) + png(8, 8, (200, 30, 90)))
    cjpeg = shutil.which("cjpeg")  # Debian's libjpeg-turbo-progs
    if cjpeg:
        for name, args, ppm in [
                ("rgb8_jpeg", [], b"P6 8 8 255\n" + bytes((i * 37) % 256 for i in range(8 * 8 * 3))),
                ("grey5_progressive_jpeg", ["-progressive", "-grayscale"],
                 b"P5 5 5 255\n" + bytes((i * 11) % 256 for i in range(25)))]:
            jpeg = subprocess.run([cjpeg, "-quality", "75"] + args, input=ppm, capture_output=True, check=True).stdout
            channels = 0 if b"P5" in ppm[:2] else 2
            write(t, name, bytes([channels, int(ppm.split()[1]) - 1]) + jpeg)


if __name__ == "__main__":
    cifar_binary_seeds()
    idx_seeds()
    image_seeds()
    safetensors_seeds()
    checkpoint_seeds()
    image_folder_seeds()
