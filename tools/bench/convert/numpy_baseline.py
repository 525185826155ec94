#!/usr/bin/env python3
"""Baseline for tools/bench/convert: a plain numpy per-row W8A16 quantizer, streaming tensor by tensor.

Reads the safetensors header itself (json + struct, one file or an index + shards), and for every linear
weight (2-D "*_proj.weight"; lm_head stays float like the CLI's default --disable_last_linear True) does
spec section 1 asym in float32: mn = min(row, 0), mx = max(row, 0), scale = max((mx - mn) / 255, 2^-23),
offset = round(-mn / scale) - 128, q = clip(round(w / scale + offset), -128, 127) (np.round = half to even).
Other tensors are copied as raw bytes. Output: int8 codes + scales + offsets + copies appended to one scratch
file (not a valid checkpoint: this measures the work, not the format). Prints one JSON line of figures.

Usage: numpy_baseline.py MODEL_DIR SCRATCH_FILE
"""
import json
import os
import resource
import struct
import sys
import time

import numpy as np

DTYPES = {"F16": np.float16, "BF16": None, "F32": np.float32}
EPS = np.float32(2.0 ** -23)


def weight_files(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return ["model.safetensors"]


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def load_f32(path, start, info):
    count = int(np.prod(info["shape"]))
    a, _ = info["data_offsets"]
    if info["dtype"] == "BF16":
        raw = np.fromfile(path, dtype=np.uint16, count=count, offset=start + a)
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])
    return np.fromfile(path, dtype=DTYPES[info["dtype"]], count=count, offset=start + a).astype(np.float32).reshape(info["shape"])


def quantize_asym(w):
    mn = np.minimum(w.min(axis=1), np.float32(0))
    mx = np.maximum(w.max(axis=1), np.float32(0))
    scale = np.maximum((mx - mn) / np.float32(255), EPS)
    offset = np.round(-mn / scale) - np.float32(128)
    q = np.clip(np.round(w / scale[:, None] + offset[:, None]), -128, 127).astype(np.int8)
    return q, scale.reshape(-1, 1), offset.reshape(-1, 1)


def main():
    model_dir, scratch = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    bytes_in = 0
    quantized = 0
    copied = 0
    with open(scratch, "wb") as out:
        for name in weight_files(model_dir):
            path = os.path.join(model_dir, name)
            start, header = read_header(path)
            for tensor, info in header.items():
                a, b = info["data_offsets"]
                bytes_in += b - a
                if len(info["shape"]) == 2 and tensor.endswith("_proj.weight"):
                    q, scale, offset = quantize_asym(load_f32(path, start, info))
                    out.write(q.tobytes())
                    out.write(scale.tobytes())
                    out.write(offset.tobytes())
                    quantized += 1
                else:
                    with open(path, "rb") as f:
                        f.seek(start + a)
                        out.write(f.read(b - a))
                    copied += 1
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"seconds": seconds, "bytes_in": bytes_in, "quantized": quantized, "copied": copied, "peak_rss_kib": peak_kib}))


if __name__ == "__main__":
    main()
