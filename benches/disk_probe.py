"""The disk alone, without PostgreSQL or Rapport (BENCHMARKS.md, sixteenth
sitting): one process appends to a log file at RATE MB/s in 16 kB writes,
each followed by fdatasync (as PostgreSQL's log under the workers), while the
probe times its own 8 kB write and fdatasync every 2 ms (as a webhook's
commit) for SECONDS, and prints the percentiles.

    python3 benches/disk_probe.py RATE SECONDS [DIR]

DIR (default /var/lib/postgresql/probe) should be on the database's disk;
the probe removes its files when done.
"""
import os, sys, time, multiprocessing
D = sys.argv[3] if len(sys.argv) > 3 else "/var/lib/postgresql/probe"
os.makedirs(D, exist_ok=True)
SEG = 64 << 20
def prealloc(path):
    f = os.open(path, os.O_RDWR | os.O_CREAT); os.write(f, b"\0" * SEG); os.fsync(f); return f
def writer(rate_mb, secs):
    f = prealloc(f"{D}/log"); buf = os.urandom(16384); start = time.time(); i = 0; off = 0
    while time.time() - start < secs:
        os.pwrite(f, buf, off); off = (off + 16384) % SEG; os.fdatasync(f); i += 1
        time.sleep(max(0, i * 16384 / (rate_mb * 1e6) - (time.time() - start)))
    os.close(f); os.unlink(f"{D}/log")
def probe(secs):
    f = prealloc(f"{D}/wal"); page = os.urandom(8192); lat = []; end = time.time() + secs; off = 0
    while time.time() < end:
        os.pwrite(f, page, off); off = (off + 8192) % SEG
        t = time.perf_counter(); os.fdatasync(f); lat.append((time.perf_counter() - t) * 1000)
        time.sleep(0.002)
    os.close(f); os.unlink(f"{D}/wal")
    lat.sort(); n = len(lat); q = lambda p: lat[min(n - 1, int(p * n))]
    return f"n={n} p50={q(.5):.3f} p90={q(.9):.3f} p99={q(.99):.3f} max={lat[-1]:.3f} ms; over 5 ms {sum(x > 5 for x in lat)}, over 10 ms {sum(x > 10 for x in lat)}"
rate = float(sys.argv[1]); secs = int(sys.argv[2])
if rate:
    p = multiprocessing.Process(target=writer, args=(rate, secs + 2)); p.start(); time.sleep(1)
print(f"log writer at {rate} MB/s, {secs} s:", probe(secs))
if rate: p.join()
