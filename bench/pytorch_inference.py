#!/usr/bin/python3
"""PyTorch's side of the inference study (studies/study_inference.cpp): the same
model in eval mode, the same shapes and the same timing (p50 / p90 of batch-1
passes at 32x32 and 128x128, images/second of batch-256 passes at 32x32), and
with --accuracy the same test images, in five versions:

    pytorch fp32          the model with BatchNorm2d, under torch.inference_mode()
    pytorch fp32-folded   BatchNorm folded into the convs (torch.fx.experimental.optimization.fuse)
    pytorch bf16-folded   the folded model under torch.autocast("cpu", dtype=torch.bfloat16)
    pytorch int8-dynamic  torch.ao.quantization.quantize_dynamic of the nn.Linear layers (qint8
                          weights, activations quantized per call from their range), then
                          torch.jit.script and torch.jit.freeze; for these CNNs that is the
                          classifier alone: the convs stay float32 (freezing folds BatchNorm
                          into them)
    pytorch int8-static   post-training static quantization in FX graph mode: conv+bn+relu
                          fused, per-channel int8 weights, uint8 activations with ranges from
                          --calibration training images (HistogramObserver), every conv, the
                          residual adds and the classifier in int8; then torch.jit.script and
                          torch.jit.freeze

Without --checkpoint the weights are random (timing does not depend on them)
and the model is the cnn with BatchNorm. Run it right after study_inference,
on the same (quiet) machine, once per thread count:

    /usr/bin/python3 bench/pytorch_inference.py --out results/studies/inference --threads 2 \\
        --checkpoint results/cnn-batch/checkpoint.safetensors --accuracy

Writes OUT/pytorch_latency.csv (the columns of study_inference's latency.csv),
with --accuracy OUT/pytorch_accuracy.csv (variant, images, accuracy in %,
mean cross-entropy, max and mean |logit - fp32 logit|, predictions that differ
from fp32's), and OUT/pytorch_info.json (how it was run: torch, the quantized
engine, the CPU and its instruction sets, where the pixels came from);
study_inference puts the latency into summary.md the next time it writes it.
Not part of the build or of CI.

The quantized engine: fbgemm, the int8 backend for x86 the issue asks for,
when this torch has it. Debian's python3-torch 1.13 is built without fbgemm
(torch.backends.quantized.supported_engines is qnnpack, onednn, none), and
there the default is onednn, PyTorch's other x86 int8 backend (oneDNN,
VNNI where the CPU has it); the qconfig stays fbgemm's unless --qconfig says
otherwise. pytorch_info.json records which engine ran.

The images are the pixels minnow sees (see --help for --data), normalised as
minnow's DataLoader does: x = (p / 255 - mean[c]) / std[c] in float32, with
the mean and std the checkpoint's metadata records (train_cifar writes them;
the recipe's CIFAR-10 values otherwise, as build/evaluate does).
"""
import argparse, copy, csv, datetime, glob, json, os, struct, sys, time, zlib

import numpy as np
import torch
import torch.fx.experimental.optimization as fx_optimization
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
shared = os.environ.get("MINNOW_SHARED", os.path.join(here, "..", "..", "shared"))
sys.path.insert(0, shared + "/reference")
from models import RECIPE, RefCNN, ResNet20, load_safetensors  # noqa: E402

DATA_HELP = """\
--data: where the images come from (also the calibration images of int8-static),
in one of these forms:
  a cifar-10-batches-bin folder (test_batch.bin, data_batch_1..5.bin), or a
      folder holding one: the official binary release, read as minnow reads it;
  minnow's cache folder (cifar10-test-HASH.bin, cifar10-train-HASH.bin; by
      default $MINNOW_CACHE, else $XDG_CACHE_HOME/minnow, else ~/.cache/minnow):
      the JPEGs as minnow decoded them (stb_image), in CIFAR-10's binary format;
      copies of one split under several names are fine, different ones are not;
  one CIFAR-10 binary file of the test split (test_batch.bin or minnow's
      cifar10-test-HASH.bin); the training split is then taken from its folder;
  a folder with train/ and test/ image folders (../shared/data/cifar10): the
      cache minnow wrote for that folder is read if --cache-dir has it (its name
      hashes the folder's path as typed and its files' names, sizes and times,
      as minnow computes it: run from the directory minnow ran in, with the
      same spelling of the folder, or pass the cache itself); otherwise the
      JPEGs are decoded with PIL, whose pixels differ from stb_image's (by up
      to 3 levels in 7% of the values of 200 test images compared), and
      pytorch_info.json says so.
Without --data, as minnow's apps: data/cifar-10-batches-bin, then
../shared/data/cifar10 (relative to the working directory, then to the
source tree). --test-limit N and --calibration N take the first images of each
class in the split's order, N / 10 of each (the first N % 10 classes one
more), as minnow's --test-limit does.
"""

VARIANTS = ["pytorch fp32", "pytorch fp32-folded", "pytorch bf16-folded", "pytorch int8-dynamic",
            "pytorch int8-static"]


def percentile(values, q):
    """Nearest rank, as study_inference: the smallest value with a fraction q at or below it."""
    v = sorted(values)
    rank = min(max(int(-(-q * len(v) // 1)), 1), len(v))
    return v[rank - 1]


class UsageError(Exception):
    pass


# ---------------------------------------------------------------- the checkpoint
def safetensors_metadata(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)).get("__metadata__", {})


def three_floats(meta, key, path, fallback):
    """The per-channel normalisation the metadata records under key (three
    comma-separated numbers, as train_cifar writes them), or fallback."""
    if key not in meta:
        return [float(x) for x in fallback]
    try:
        v = [float(x) for x in meta[key].split(",")]
    except ValueError:
        v = []
    if len(v) != 3 or not all(np.isfinite(v)) or (key == "std" and min(v) <= 0):
        raise UsageError(f"{path}: metadata '{key}' is '{meta[key]}', not three finite numbers separated by commas")
    return v


def load_checkpoint(path):
    """The model of a minnow checkpoint (train_cifar's, or a --save file) in
    eval mode, and its metadata. The optimizer's and the schedule's entries
    are dropped, every other entry must be the model's (strict loading)."""
    if not os.path.isfile(path):
        raise UsageError(f"--checkpoint {path}: no such file")
    meta = safetensors_metadata(path)
    for key in ("model", "norm"):
        if key not in meta:
            raise UsageError(f"{path}: its metadata does not say the {key}")
    name, norm = meta["model"], meta["norm"]
    if name == "cnn" and norm in ("batch", "none"):
        model = RefCNN(norm)
    elif name == "resnet20" and norm == "batch":
        model = ResNet20()
    else:
        raise UsageError(f"{path}: model {name} with norm {norm}; the reference models here are cnn "
                         "(norm batch or none) and resnet20 (norm batch)")
    state = {k: v for k, v in load_safetensors(path).items() if not k.startswith(("optim.", "lr_scheduler."))}
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def random_cnn():
    """The cnn with random weights, as this script always timed it."""
    torch.manual_seed(0)
    model = RefCNN("batch").eval()
    with torch.no_grad():  # running statistics away from their defaults, so folding has work to do
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.2, 0.5)
    return model


# ---------------------------------------------------------------- the images
RECORD = 1 + 3 * 32 * 32


def fnv1a(data, h=0xcbf29ce484222325):
    """data/io.h's fnv1a: FNV-1a, 64-bit."""
    for c in data:
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def default_cache_dir():
    """apps/common.h's default_cache_dir()."""
    if os.environ.get("MINNOW_CACHE"):
        return os.environ["MINNOW_CACHE"]
    if os.environ.get("XDG_CACHE_HOME"):
        return os.environ["XDG_CACHE_HOME"] + "/minnow"
    if os.environ.get("HOME"):
        return os.environ["HOME"] + "/.cache/minnow"
    return ""


def crc_ok(path):
    """The checksum minnow writes beside its cache files (NAME.bin.crc32,
    "crc32 <8 hex digits>\\n") matches; None when there is none."""
    if not os.path.exists(path + ".crc32"):
        return None
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            crc = zlib.crc32(chunk, crc)
    with open(path + ".crc32") as f:
        return f.read() == f"crc32 {crc:08x}\n"


def read_binary(paths):
    """CIFAR-10 binary files (3073-byte records: label, then 3x32x32 pixels
    channel-major), concatenated: (pixels uint8 [N, 3, 32, 32], labels int64 [N])."""
    raws = []
    for p in paths:
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size == 0 or raw.size % RECORD:
            raise UsageError(f"{p}: {raw.size} bytes is not a whole number of 3073-byte CIFAR-10 records")
        raw = raw.reshape(-1, RECORD)
        if raw[:, 0].max() > 9:
            raise UsageError(f"{p}: a label above 9, not a CIFAR-10 file")
        raws.append(raw)
    raw = np.concatenate(raws)
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


def evenly_across_classes(labels, n):
    """data/dataset.cpp's evenly_across_classes: the indices of the first
    n / k images of each class in order, the first n % k classes one more;
    all when n <= 0 or n >= the set's size."""
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels))
    k = int(labels.max()) + 1
    want = [n // k + (1 if c < n % k else 0) for c in range(k)]
    have = np.bincount(labels, minlength=k)
    for c in range(k):
        if have[c] < want[c]:
            raise UsageError(f"class {c} has {have[c]} images, {want[c]} wanted")
    picked = []
    for i, c in enumerate(labels):
        if want[c] > 0:
            want[c] -= 1
            picked.append(i)
    return np.array(picked, dtype=np.int64)


def folder_listing(split_dir):
    """data/image_folder.cpp's list_image_folder: the files (sorted classes,
    sorted names, hidden ones skipped), their labels, and the signature that
    names minnow's cache."""
    def entries(d):
        return sorted(e for e in os.listdir(d) if not e.startswith("."))
    classes = [e for e in entries(split_dir) if os.path.isdir(os.path.join(split_dir, e))]
    if len(classes) != 10:
        raise UsageError(f"{split_dir}: has {len(classes)} class folders, CIFAR-10 has 10")
    files, labels, sig = [], [], fnv1a(b"")
    for label, c in enumerate(classes):
        d = os.path.join(split_dir, c)
        for e in entries(d):
            p = d + "/" + e
            st = os.stat(p)
            files.append(p)
            labels.append(label)
            sig = fnv1a(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\n".encode(), sig)
    return files, np.array(labels, dtype=np.int64), sig


def minnow_cache_name(split_dir, count, signature, split):
    """data/cifar10.cpp's cache_file_name."""
    key = f"minnow-cifar10-cache-v2\n{os.path.realpath(split_dir)}\n{count}\n{signature}"
    return f"cifar10-{split}-{fnv1a(key.encode()):016x}.bin"


def cache_files(folder, split):
    """The one split's cache in minnow's cache folder: copies with the same
    checksum count as one; different ones are ambiguous."""
    paths = sorted(glob.glob(os.path.join(folder, f"cifar10-{split}-*.bin")))
    if not paths:
        return None
    crcs = {}
    for p in paths:
        crc = open(p + ".crc32").read() if os.path.exists(p + ".crc32") else None
        crcs.setdefault(crc, p)
    if len(crcs) > 1 or (None in crcs and len(paths) > 1):
        raise UsageError(f"{folder}: holds several different {split} caches ({', '.join(paths)}); "
                         "pass --data the test file itself")
    return paths[0]


def find_data(given):
    """--data, or where minnow's apps look (apps/common.h's find_cifar10)."""
    if given:
        if not os.path.exists(given):
            raise UsageError(f"--data {given}: no such file or directory")
        return given
    for c in ["data/cifar-10-batches-bin", "../shared/data/cifar10",
              os.path.join(here, "..", "data", "cifar-10-batches-bin"), os.path.join(shared, "data", "cifar10")]:
        if os.path.exists(os.path.join(c, "test_batch.bin")) or os.path.isdir(os.path.join(c, "test")):
            return c
    return None


def load_split(data, split, limit, cache_dir):
    """The split ("test" or "train") of --data, limited as minnow limits it:
    (pixels uint8 [N, 3, 32, 32], labels int64 [N], a dict saying where they
    came from and whether they are minnow's pixels)."""
    train = split == "train"
    if os.path.isfile(data):  # one binary file of the test split; the training split beside it
        if not train:
            if data.endswith(".bin") and os.path.basename(data).startswith("cifar10-") and crc_ok(data) is False:
                raise UsageError(f"{data}: its checksum ({data}.crc32) does not match")
            px, lb = read_binary([data])
            idx = evenly_across_classes(lb, limit)
            return px[idx], lb[idx], {"source": data, "decoder": "a CIFAR-10 binary file", "minnow_pixels": True}
        data = os.path.dirname(os.path.abspath(data))
    if not os.path.isdir(data):
        raise UsageError(f"{data}: not a file or folder")
    binary_dir = None
    for d in (data, os.path.join(data, "cifar-10-batches-bin")):
        if os.path.exists(os.path.join(d, "test_batch.bin")) or os.path.exists(os.path.join(d, "data_batch_1.bin")):
            binary_dir = d
            break
    if binary_dir:
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
        paths = [os.path.join(binary_dir, n) for n in names]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise UsageError(f"{binary_dir}: no {', '.join(missing)}")
        px, lb = read_binary(paths)
        idx = evenly_across_classes(lb, limit)
        return px[idx], lb[idx], {"source": binary_dir, "decoder": "the official binary release",
                                  "minnow_pixels": True}
    split_dir = os.path.join(data, split)
    if os.path.isdir(split_dir):  # image folders: minnow's cache of them, else PIL
        files, labels, sig = folder_listing(split_dir)
        name = minnow_cache_name(split_dir, len(files), sig, split)
        path = os.path.join(cache_dir, name) if cache_dir else ""
        if path and os.path.exists(path) and crc_ok(path):
            px, lb = read_binary([path])
            if np.array_equal(lb, labels):
                idx = evenly_across_classes(lb, limit)
                return px[idx], lb[idx], {"source": path, "images": split_dir,
                                          "decoder": "minnow's cache of the image folder (stb_image)",
                                          "minnow_pixels": True}
        from PIL import Image
        idx = evenly_across_classes(labels, limit)
        px = np.stack([np.asarray(Image.open(files[i]).convert("RGB")).transpose(2, 0, 1) for i in idx])
        print(f"note: no minnow cache of {split_dir} in {cache_dir or '(no cache folder)'} (looked for {name}); "
              "decoded the JPEGs with PIL, whose pixels can differ from minnow's stb_image by a few levels",
              flush=True)
        return np.ascontiguousarray(px), labels[idx], {
            "source": split_dir, "decoder": "PIL (minnow decodes with stb_image: pixels can differ by a few levels)",
            "minnow_pixels": False, "cache_looked_for": path}
    cached = cache_files(data, split)
    if cached:
        if crc_ok(cached) is False:
            raise UsageError(f"{cached}: its checksum ({cached}.crc32) does not match")
        px, lb = read_binary([cached])
        idx = evenly_across_classes(lb, limit)
        return px[idx], lb[idx], {"source": cached, "decoder": "minnow's cache (stb_image)", "minnow_pixels": True}
    raise UsageError(f"{data}: holds no {split} split (no test_batch.bin / data_batch_*.bin, "
                     f"no {split}/ image folder, no cifar10-{split}-*.bin cache)")


def normaliser(mean, std):
    """The float32 table minnow's DataLoader builds: byte v of channel c ->
    (v / 255 - mean[c]) / std[c], each step in float32."""
    v = np.arange(256, dtype=np.float32) / np.float32(255)
    lut = np.stack([(v - np.float32(m)) / np.float32(s) for m, s in zip(mean, std)])

    def apply(px):  # uint8 [N, 3, H, W] -> float32 tensor
        return torch.from_numpy(np.stack([lut[c][px[:, c]] for c in range(3)], axis=1))
    return apply


# ---------------------------------------------------------------- the versions
def bf16(model):
    def run(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)
    return run


def int8_dynamic(fp32):
    # torch.ao.quantization.quantize_dynamic swaps nn.Linear modules for
    # DynamicQuantizedLinear (qint8 weights, the input quantized per call from
    # its own range: results depend on what else is in the batch); given a
    # ScriptModule it finds no nn.Linear and changes nothing, silently, so it
    # comes first and torch.jit.script after. Only the classifier is quantized;
    # the convs stay float32 (torch.jit.freeze folds BatchNorm into them).
    q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    return torch.jit.freeze(torch.jit.script(q))


def int8_static(fp32, calibration, qconfig, batch=64):
    # FX graph mode, which quantizes RefCNN and ResNet20 as written (eager
    # mode would need QuantStub/DeQuantStub and, for the residual adds,
    # FloatFunctional). prepare_fx fuses conv+bn(+relu) and inserts observers;
    # convert_fx packs the weights for the current engine. Then script and
    # freeze: this takes the Python of the GraphModule's forward out of each
    # pass (in a short check on the busy 2-core machine, 0.48 ms against 0.63 ms a
    # batch-1 32x32 pass of the cnn; torch.jit.trace + freeze timed the same).
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    model = copy.deepcopy(fp32).eval()
    prepared = prepare_fx(model, get_default_qconfig_mapping(qconfig), example_inputs=(calibration[:1],))
    with torch.inference_mode():
        for i in range(0, len(calibration), batch):
            prepared(calibration[i:i + batch])
    q = convert_fx(prepared)
    return torch.jit.freeze(torch.jit.script(q)), q


# ---------------------------------------------------------------- the machine
def cpu_info():
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    relevant = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
    return model, {f: f in flags for f in relevant}


def torch_build_line(prefix):
    for line in torch.__config__.show().splitlines():
        line = line.strip().lstrip("- ")
        if line.startswith(prefix):
            return line
    return ""


# ---------------------------------------------------------------- main
def positive(lo):
    def parse(s):
        v = int(s)
        if v < lo:
            raise argparse.ArgumentTypeError(f"{s}: must be a whole number >= {lo}")
        return v
    return parse


def main():
    ap = argparse.ArgumentParser(description=__doc__, epilog=DATA_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/studies/inference")
    ap.add_argument("--threads", type=positive(1), default=2)
    ap.add_argument("--iters", type=positive(1), default=200, help="timed passes per version at batch 1")
    ap.add_argument("--throughput-iters", type=positive(1), default=10,
                    help="timed passes per version at batch 256")
    ap.add_argument("--rounds", type=positive(1), default=5)
    ap.add_argument("--checkpoint", help="a minnow checkpoint (train_cifar's checkpoint.safetensors or a --save "
                    "file); without it, the cnn with random weights")
    ap.add_argument("--data", help="the images: see below")
    ap.add_argument("--cache-dir", default=default_cache_dir(),
                    help="minnow's cache of decoded image folders (default: %(default)s)")
    ap.add_argument("--accuracy", action="store_true",
                    help="also evaluate every version on the test set (OUT/pytorch_accuracy.csv)")
    ap.add_argument("--no-latency", action="store_true", help="skip the timing (with --accuracy)")
    ap.add_argument("--test-limit", type=positive(0), default=0,
                    help="test images, evenly across the classes (0: all 10,000)")
    ap.add_argument("--batch-size", type=positive(1), default=256, help="batch of the accuracy passes")
    ap.add_argument("--calibration", type=positive(1), default=512,
                    help="training images the int8-static ranges are calibrated on, evenly across the classes")
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    ap.add_argument("--qengine", default="auto", choices=["auto", "fbgemm", "x86", "onednn", "qnnpack"],
                    help="quantized engine (auto: fbgemm if this torch has it, else onednn; this one has "
                         f"{', '.join(engines)})")
    ap.add_argument("--qconfig", default="fbgemm", choices=["fbgemm", "onednn", "qnnpack"],
                    help="int8-static's qconfig: fbgemm's (per-channel weights, 7-bit activation range), "
                         "onednn's (8-bit activations), qnnpack's (per-tensor weights)")
    ap.add_argument("--time", nargs=3, metavar=("VARIANT", "SIZE", "BATCH"),
                    help="only time VARIANT (e.g. int8-static) on random SIZExSIZE images, batch BATCH: --iters "
                         "passes after 2 untimed ones; prints one JSON line (p50_ms, p90_ms, img_per_s) and writes "
                         "nothing (bench/compare_int8.sh alternates it with minnow's bench)")
    a = ap.parse_args()
    if a.time:
        if a.time[0] not in [v[len("pytorch "):] for v in VARIANTS]:
            ap.error(f"--time {a.time[0]}: expected one of " + ", ".join(v[len("pytorch "):] for v in VARIANTS))
        try:
            a.time[1], a.time[2] = int(a.time[1]), int(a.time[2])
        except ValueError:
            ap.error("--time VARIANT SIZE BATCH: SIZE and BATCH are whole numbers")
        if a.time[1] < 8 or a.time[2] < 1:
            ap.error("--time: SIZE at least 8, BATCH at least 1")
    if a.no_latency and not a.accuracy:
        ap.error("--no-latency without --accuracy leaves nothing to do")
    torch.set_num_threads(a.threads)

    engine = a.qengine
    if engine == "auto":
        engine = "fbgemm" if "fbgemm" in engines else "onednn"
    if engine not in engines:
        ap.error(f"--qengine {engine}: this torch has no {engine} (its quantized engines: {', '.join(engines)})")
    torch.backends.quantized.engine = engine  # before convert_fx: weights are packed for this engine

    try:
        if a.checkpoint:
            fp32, meta = load_checkpoint(a.checkpoint)
            model_name, norm = meta["model"], meta["norm"]
        else:
            fp32, meta, model_name, norm = random_cnn(), {}, "cnn", "batch"
        mean = three_floats(meta, "mean", a.checkpoint, RECIPE["mean"])
        std = three_floats(meta, "std", a.checkpoint, RECIPE["std"])
        normalise = normaliser(mean, std)
        data = find_data(a.data)
        if a.accuracy and not data:
            raise UsageError("--accuracy: CIFAR-10 not found (data/cifar-10-batches-bin, ../shared/data/cifar10); "
                             "pass --data")
        if data:
            cal_px, cal_labels, cal_from = load_split(data, "train", a.calibration, a.cache_dir)
            calibration = normalise(cal_px)
            cal_from["images_used"] = len(cal_labels)
        else:
            torch.manual_seed(1)
            calibration = torch.randn(a.calibration, 3, 32, 32)
            cal_from = {"source": "random normal images (no CIFAR-10 found)", "images_used": a.calibration}
    except UsageError as e:
        print(f"pytorch_inference.py: {e}", file=sys.stderr)
        sys.exit(2)

    if a.time:
        sys.exit(time_one(a, fp32, calibration, engine))
    folded = fx_optimization.fuse(fp32)
    dynamic = int8_dynamic(fp32)
    static, static_graph = int8_static(fp32, calibration, a.qconfig)
    versions = list(zip(VARIANTS, [fp32, folded, bf16(folded), dynamic, static]))
    print(f"{model_name} (norm {norm}), {'weights of ' + a.checkpoint if a.checkpoint else 'random weights'}; "
          f"torch {torch.__version__}, quantized engine {engine}"
          f"{'' if 'fbgemm' in engines else ' (this torch has no fbgemm)'}, {a.threads} threads; "
          f"int8-static calibrated on {cal_from['images_used']} images of {cal_from['source']}")

    with torch.inference_mode():
        x = calibration[:8] if len(calibration) >= 8 else torch.randn(8, 3, 32, 32)
        ref = fp32(x)
        for name, model in versions[1:]:
            print(f"check on {len(x)} calibration images: max |{name[8:]} - fp32| = "
                  f"{(model(x).float() - ref).abs().max().item():.3g} (max |fp32| {ref.abs().max().item():.3g})")

    model_cpu, flags = cpu_info()
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ)
    info = {"command": (env + " " if env else "") + "/usr/bin/python3 " + " ".join(sys.argv),
            "when": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "quantized_engine": engine, "quantized_engines": engines, "int8_static_qconfig": a.qconfig,
            "cpu": model_cpu, "cpu_flags": flags, "torch_cpu_capability": torch_build_line("CPU capability"),
            "onednn": torch_build_line("Intel(R) MKL-DNN"),
            "checkpoint": a.checkpoint or "", "model": model_name, "norm": norm, "mean": mean, "std": std,
            "epochs_done": meta.get("epochs_done", ""), "calibration": cal_from,
            "note": ("Weights of " + a.checkpoint if a.checkpoint else "Random weights") +
                    "; BatchNorm folded by torch.fx.experimental.optimization.fuse; bf16 by torch.autocast on "
                    "the CPU; int8-dynamic: quantize_dynamic of the classifier, convs in float32; int8-static: "
                    f"FX post-training quantization ({a.qconfig} qconfig, {engine} engine, calibrated on "
                    f"{cal_from['images_used']} training images), scripted and frozen."}
    os.makedirs(a.out, exist_ok=True)
    info_path = os.path.join(a.out, "pytorch_info.json")
    runs = {}
    if os.path.exists(info_path):
        with open(info_path) as f:
            runs = json.load(f).get("runs", {})

    if not a.no_latency:
        run_latency(a, versions)
        info["load_average"] = list(os.getloadavg())
        runs[str(a.threads)] = info
    if a.accuracy:
        try:
            test_px, test_labels, test_from = load_split(data, "test", a.test_limit, a.cache_dir)
        except UsageError as e:
            print(f"pytorch_inference.py: {e}", file=sys.stderr)
            sys.exit(2)
        acc_info = dict(info, test_images=test_from, **run_accuracy(a, versions, normalise, test_px, test_labels))
        acc_info["load_average"] = list(os.getloadavg())
        runs["accuracy"] = acc_info
    with open(info_path, "w") as f:
        json.dump({"runs": runs}, f, indent=2)
    print(f"wrote {a.out}/" + ("pytorch_latency.csv, " if not a.no_latency else "") +
          ("pytorch_accuracy.csv, " if a.accuracy else "") + "pytorch_info.json")


def time_one(a, fp32, calibration, engine):
    """--time: one version at one shape, as one JSON line."""
    name, size, batch = a.time
    build = {"fp32": lambda: fp32, "fp32-folded": lambda: fx_optimization.fuse(fp32),
             "bf16-folded": lambda: bf16(fx_optimization.fuse(fp32)), "int8-dynamic": lambda: int8_dynamic(fp32),
             "int8-static": lambda: int8_static(fp32, calibration, a.qconfig)[0]}
    model = build[name]()
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size)
    times = []
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        for _ in range(a.iters):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    p50 = percentile(times, 0.5)
    print(json.dumps({"impl": "pytorch", "variant": name, "image_size": size, "batch_size": batch,
                      "threads": torch.get_num_threads(), "quantized_engine": engine, "passes": len(times),
                      "ms_per_step_median": p50 * 1e3, "ms_per_step_p90": percentile(times, 0.9) * 1e3,
                      "img_per_s": batch / p50}))
    return 0


def run_latency(a, versions):
    shapes = [("32x32", 1, 32, a.iters), ("128x128", 1, 128, a.iters), ("32x32", 256, 32, a.throughput_iters)]
    rows = []
    with torch.inference_mode():
        for input_name, batch, size, iters in shapes:
            torch.manual_seed(0)
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
    # Keep the rows of other thread counts (one run per count), as study_inference does.
    path = os.path.join(a.out, "pytorch_latency.csv")
    kept = []
    if os.path.exists(path):
        with open(path, newline="") as f:
            kept = [r for r in csv.DictReader(f) if r.get("threads") != str(a.threads)]
    with open(path, "w", newline="") as f:
        # "\n", not csv's "\r\n": study_inference splits lines on "\n", and a "\r" would end up in
        # the last column's name and value.
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()), lineterminator="\n")
        w.writeheader()
        w.writerows([{k: r.get(k, "") for k in rows[0]} for r in kept] + rows)


def run_accuracy(a, versions, normalise, px, labels):
    """Every version on the test images, against fp32's logits; writes
    OUT/pytorch_accuracy.csv and returns what the info file records."""
    labels_t = torch.from_numpy(labels)
    rows, fp32_logits, scale = [], None, 0.0
    with torch.inference_mode():
        for name, model in versions:
            t0 = time.perf_counter()
            logits = torch.cat([model(normalise(px[i:i + a.batch_size])).float()
                                for i in range(0, len(labels), a.batch_size)])
            secs = time.perf_counter() - t0
            if fp32_logits is None:
                fp32_logits, scale = logits, logits.abs().max().item()
            diff = (logits - fp32_logits).abs()
            pred = logits.argmax(1)
            acc = 100.0 * (pred == labels_t).double().mean().item()
            loss = F.cross_entropy(logits.double(), labels_t).item()
            changed = int((pred != fp32_logits.argmax(1)).sum().item())
            print(f"  {name:22s} {len(labels)} images: accuracy {acc:.2f}%, max |logit - fp32| {diff.max().item():.3g} "
                  f"(logit scale {scale:.3g}), {changed} predictions changed ({secs:.0f} s)", flush=True)
            rows.append({"variant": name, "images": len(labels), "accuracy": f"{acc:.2f}", "mean_loss": f"{loss:.5f}",
                         "max_abs_logit_diff": f"{diff.max().item():.6g}",
                         "mean_abs_logit_diff": f"{diff.mean().item():.6g}", "predictions_changed": changed})
    with open(os.path.join(a.out, "pytorch_accuracy.csv"), "w", newline="") as f:
        # "\n": as in run_latency.
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return {"max_abs_logit_fp32": scale}


if __name__ == "__main__":
    main()
