# A small file-system exerciser, in the spirit of fsx: random writes,
# truncates, reads and mmap writes on one file, each checked against a
# model of its bytes kept in memory. Closing and reopening the file makes
# the NFS client revalidate its cache against the server's attributes, and
# a second descriptor reads what the first wrote. Any difference ends the
# run with the operation number and where the bytes differ; at the end it
# prints the model's SHA-256 so the host can check the file it holds.
#
# Usage: python3 fsx.py SEED OPS
import hashlib
import mmap
import os
import random
import sys

seed = int(sys.argv[1])
ops = int(sys.argv[2])
rnd = random.Random(seed)
path = "fsx.%d" % seed
# Reaches past several 1 MiB WRITEs and into sparse ranges.
SPAN = 3 << 20
model = bytearray()
fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
fd2 = os.open(path, os.O_RDONLY)
i = 0


def fail(msg):
    sys.exit("fsx seed %d, op %d: %s" % (seed, i, msg))


def check(where, f):
    size = os.fstat(f).st_size
    if size != len(model):
        fail("%s: size %d, expected %d" % (where, size, len(model)))
    data = os.pread(f, len(model) + 10, 0)
    if data != bytes(model):
        n = min(len(data), len(model))
        at = next((k for k in range(n) if data[k] != model[k]), n)
        fail("%s: bytes differ from offset %d" % (where, at))


def extend_to(n):
    if n > len(model):
        model.extend(bytes(n - len(model)))


for i in range(ops):
    op = rnd.choice(["write"] * 3 + ["truncate", "read", "mmap-write", "mmap-read", "reopen", "fsync", "second"])
    if op == "write":
        off = rnd.randrange(SPAN)
        n = rnd.randrange(1, 300_000)
        b = (rnd.randbytes(61) * (n // 61 + 1))[:n]
        os.pwrite(fd, b, off)
        extend_to(off)
        model[off:off + n] = b
    elif op == "truncate":
        n = rnd.randrange(SPAN)
        os.ftruncate(fd, n)
        del model[n:]
        extend_to(n)
    elif op == "read":
        off = rnd.randrange(SPAN)
        n = rnd.randrange(1, 400_000)
        if os.pread(fd, n, off) != bytes(model[off:off + n]):
            fail("read of %d at %d differs" % (n, off))
    elif op.startswith("mmap") and model:
        m = mmap.mmap(fd, len(model))
        off = rnd.randrange(len(model))
        n = min(rnd.randrange(1, 20_000), len(model) - off)
        if op == "mmap-write":
            b = rnd.randbytes(1) * n
            m[off:off + n] = b
            model[off:off + n] = b
            if rnd.random() < 0.5:
                m.flush()
        elif m[off:off + n] != bytes(model[off:off + n]):
            fail("mmap read of %d at %d differs" % (n, off))
        m.close()
    elif op == "reopen":
        os.close(fd)
        fd = os.open(path, os.O_RDWR)
        check("after reopening", fd)
    elif op == "fsync":
        os.fsync(fd)
        check("after fsync", fd)
    elif op == "second":
        check("through a second descriptor", fd2)
check("at the end", fd)
os.close(fd)
os.close(fd2)
print("fsx %s %d %s" % (path, len(model), hashlib.sha256(model).hexdigest()))
