#!/usr/bin/env python3
"""Writes a tree of many small files, like a mail store, a source tree or
node_modules: FILES files of 100 B to 30 KB (sizes spread evenly on a log
scale, so most are small) in about FILES/130 directories two levels deep.
Half the files are text-like (compressible), half random. The same seed
gives the same tree.

    make-small-files.py TARGET [FILES]
"""
import math
import os
import random
import sys

target = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 400_000
rng = random.Random(21)
words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 11))) for _ in range(4096)]
dirs = max(1, count // 130)
top = max(1, int(math.sqrt(dirs)))
lo, hi = math.log(100), math.log(30_000)

def text(size):
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(words, k=12)) + b"\n"
    return bytes(out[:size])

os.makedirs(target, exist_ok=True)
for i in range(count):
    d = i % dirs
    path = os.path.join(target, f"d{d % top:03}", f"s{d // top:04}")
    if i < dirs:
        os.makedirs(path, exist_ok=True)
    size = int(math.exp(rng.uniform(lo, hi)))
    data = text(size) if i % 2 else rng.randbytes(size)
    with open(os.path.join(path, f"f{i:07}.{'txt' if i % 2 else 'bin'}"), "wb") as f:
        f.write(data)
