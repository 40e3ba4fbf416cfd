#!/usr/bin/python3
"""lorad — bench/bench.py: the driver of `make bench` (SPEC.md 10).

Called by bench/run.sh with BUILD_DIR. Standard library only. It:
  1. writes workload W1 (lorad-mkdemo --width 1024 --layers 4) and the
     large rank-512 adapters (big-f32 = 16 MiB, big-f16, big-bf16);
  2. runs the in-process roof (BUILD/bench/roof, lorad's own kernel choice)
     for W1 and the demo model: roof(c) = the faster of "n threads, c/n rows
     each" and "one c-row forward split across n threads", and the split
     forward against the bare base GEMMs at batches 16 and 64;
  3. starts lorad on W1 (demo-b, r=16) and loads it with wrk (bench/infer.lua)
     with single-row binary and JSON requests at c = 1, 16, 32, 64
     connections, each against roof(c), with lorad's CPU per request against
     the roof's CPU per row, and c=1 p50 against the roof's one-row split
     forward; the mean batch size comes from /metrics (lorad_batch_rows);
  4. runs the PyTorch peer (../shared/peers/torch_lora_server.py) under the
     same JSON load at c=32 when /usr/bin/python3 has torch;
  5. swaps under load: 30 s of binary load without and with 20 swaps/s
     alternating demo-a/demo-b, while verifying clients check every JSON
     response against the reference output of the adapter it names;
  6. swap costs on a second lorad with max_rank 512: stage_ms, commit_us,
     rollback round trip, against reading the file and copying its bytes;
  7. RSS before and after 10,000 swaps against SPEC 10's bound;
  8. slots: 100 slots, each with its own r=16 adapter on W1, c=64 binary
     clients naming a slot at random per request (bench/infer-slots.lua),
     against the same load on one slot in the same run, and the mean number
     of distinct snapshots per batch (lorad_batch_snapshots).
Prints one table and writes it to BUILD/bench/results.md. BENCH_ONLY=slots
runs step 8 alone (on W1).
"""
import array
import http.client
import json
import os
import random
import resource
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(BUILD, "bench")
WORK = os.path.join(OUT, "work")
PEER = os.path.normpath(os.path.join(ROOT, "..", "shared", "peers", "torch_lora_server.py"))
LOAD_S = int(os.environ.get("BENCH_LOAD_S", "10"))
SWAP_LOAD_S = int(os.environ.get("BENCH_SWAP_S", "30"))
CONNS = [int(c) for c in os.environ.get("BENCH_CONNS", "1,16,32,64").split(",")]
N_MEM_SWAPS = int(os.environ.get("BENCH_MEM_SWAPS", "10000"))
N_SLOTS = int(os.environ.get("BENCH_SLOTS", "100"))
ROOF_BATCHES = [1, 2, 4, 8, 16, 32, 64]
WIDTH, LAYERS = 1024, 4

rows = []        # (figure, value, reference, ratio, target, verdict)
procs = []


def log(msg):
    print("bench: " + msg, flush=True)


def row(fig, val, ref="", ratio="", target="", verdict=""):
    rows.append((fig, val, ref, ratio, target, verdict))


def verdict(ok):
    return "MET" if ok else "MISSED"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---------------------------------------------------------------- data ----

def write_safetensors(path, tensors):
    """tensors: list of (name, dtype, shape, bytes)."""
    hdr, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dt, shape, data in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for t in tensors:
            f.write(t[3])


def encode(vals, dt):
    f32 = array.array("f", vals).tobytes()
    if dt == "F32":
        return f32
    if dt == "F16":
        return struct.pack("<%de" % len(vals), *vals)
    bf = bytearray(len(vals) * 2)  # BF16: the high half of each f32
    bf[0::2] = f32[2::4]
    bf[1::2] = f32[3::4]
    return bytes(bf)


def mkbig(adir, rank=512):
    """big-f32 (16 MiB on W1), big-f16, big-bf16: rank 512 on all layers."""
    rng = random.Random(7)
    base = json.load(open(os.path.join(adir, "demo-b", "adapter_config.json")))
    base["r"], base["lora_alpha"] = rank, rank
    layers = []
    scale = 0.02
    for i in range(LAYERS):
        a = [(rng.random() - 0.5) * scale for _ in range(rank * WIDTH)]
        b = [(rng.random() - 0.5) * scale for _ in range(WIDTH * rank)]
        layers.append((a, b))
    for dt in ("F32", "F16", "BF16"):
        d = os.path.join(adir, "big-" + dt.lower())
        os.makedirs(d, exist_ok=True)
        json.dump(base, open(os.path.join(d, "adapter_config.json"), "w"), indent=1)
        ts = []
        for i, (a, b) in enumerate(layers):
            p = "base_model.model.layers.%d.proj." % i
            ts.append((p + "lora_A.weight", dt, [rank, WIDTH], encode(a, dt)))
            ts.append((p + "lora_B.weight", dt, [WIDTH, rank], encode(b, dt)))
        write_safetensors(os.path.join(d, "adapter_model.safetensors"), ts)


def mkdemo(d, extra):
    if os.path.isdir(d):
        shutil.rmtree(d)
    subprocess.run([os.path.join(BUILD, "lorad-mkdemo"), d] + extra, check=True,
                   stdout=subprocess.DEVNULL)


# --------------------------------------------------------------- procs ----

def start_lorad(d, name, initial, max_rank, port):
    cfg = json.load(open(os.path.join(d, "lorad.json")))
    cfg.update({"listen": "127.0.0.1:%d" % port, "initial_adapter": initial,
                "max_rank": max_rank, "state_file": os.path.abspath(os.path.join(d, name + ".state.json")),
                "log_level": "warning"})
    try:
        os.unlink(cfg["state_file"])
    except FileNotFoundError:
        pass
    path = os.path.join(d, name + ".json")
    json.dump(cfg, open(path, "w"), indent=1)
    p = subprocess.Popen([os.path.join(BUILD, "lorad"), "-c", path],
                         stdout=open(os.path.join(d, name + ".log"), "w"), stderr=subprocess.STDOUT)
    procs.append(p)
    wait_ready(port, "/readyz", p)
    return p


def wait_ready(port, path, p, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if p.poll() is not None:
            sys.exit("bench: server on port %d exited with %d" % (port, p.returncode))
        try:
            st, _, _ = req(port, "GET", path)
            if st == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("bench: server on port %d not ready" % port)


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def req(port, method, path, body=None, ct="application/json", conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=body, headers={"Content-Type": ct} if body is not None else {})
    r = c.getresponse()
    data = r.read()
    if conn is None:
        c.close()
    return r.status, dict(r.getheaders()), data


def jpost(port, path, obj, conn=None):
    st, _, data = req(port, "POST", path, json.dumps(obj), conn=conn)
    return st, json.loads(data)


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def metrics_batch(port, family="lorad_batch_rows"):
    _, _, data = req(port, "GET", "/metrics")
    s = c = 0.0
    for line in data.decode().splitlines():
        if line.startswith(family + "_sum"):
            s = float(line.split()[-1])
        elif line.startswith(family + "_count"):
            c = float(line.split()[-1])
    return s, c


def mkslot_adapters(adir, n):
    """slot-0 .. slot-(n-1): demo-b's r=16 weights, each with its own
    lora_alpha (so its own scaling and outputs): n distinct snapshots."""
    src = os.path.join(adir, "demo-b")
    cfg = json.load(open(os.path.join(src, "adapter_config.json")))
    for i in range(n):
        d = os.path.join(adir, "slot-%d" % i)
        os.makedirs(d, exist_ok=True)
        c = dict(cfg, lora_alpha=16 + i)
        json.dump(c, open(os.path.join(d, "adapter_config.json"), "w"), indent=1)
        shutil.copyfile(os.path.join(src, "adapter_model.safetensors"),
                        os.path.join(d, "adapter_model.safetensors"))


def wrk_slots(port, conns, seconds, nslots, body):
    env = dict(os.environ, BENCH_BODY=body, BENCH_CT="application/octet-stream",
               BENCH_SLOTS=str(nslots))
    out = subprocess.run(["wrk", "-t%d" % min(2, conns), "-c%d" % conns, "-d%ds" % seconds,
                          "--latency", "-s", os.path.join(HERE, "infer-slots.lua"),
                          "http://127.0.0.1:%d/infer" % port],
                         env=env, capture_output=True, text=True).stdout
    res = {"rps": 0.0, "errors": 0, "p99": float("nan")}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if m:
        res["p99"] = unit_ms(m.group(1), m.group(2))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["errors"] += int(m.group(1))
    return res


def slots_bench(port, bodies, w1):
    """SPEC 10 slots: N slots with their own adapters vs one slot."""
    log("slots: %d slots with their own r=16 adapters, c=64 binary, random slot per request" % N_SLOTS)
    mkslot_adapters(os.path.join(w1, "adapters"), N_SLOTS)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(N_SLOTS):
        st, o = jpost(port, "/swap", {"adapter": "slot-%d" % i, "slot": "s%d" % i}, conn=conn)
        assert st == 200, o
    res = {}
    for n in (N_SLOTS, 1, N_SLOTS):  # many, one, many again: drift shows
        b0, c0 = metrics_batch(port)
        s0, k0 = metrics_batch(port, "lorad_batch_snapshots")
        r = wrk_slots(port, 64, LOAD_S, n, bodies["bin"])
        b1, c1 = metrics_batch(port)
        s1, k1 = metrics_batch(port, "lorad_batch_snapshots")
        r["batch"] = (b1 - b0) / (c1 - c0) if c1 > c0 else float("nan")
        r["snaps"] = (s1 - s0) / (k1 - k0) if k1 > k0 else float("nan")
        log("slots=%d: %.0f req/s p99 %.2f ms errors %d, rows per forward %.2f, distinct snapshots "
            "per batch %.2f" % (n, r["rps"], r["p99"], r["errors"], r["batch"], r["snaps"]))
        res.setdefault(n, []).append(r)
    many = sum(r["rps"] for r in res[N_SLOTS]) / len(res[N_SLOTS])
    one = res[1][0]
    ratio = many / one["rps"] if one["rps"] else float("nan")
    snaps = sum(r["snaps"] for r in res[N_SLOTS]) / len(res[N_SLOTS])
    errors = sum(r["errors"] for r in res[N_SLOTS]) + one["errors"]
    row("slots: binary req/s, 64c over %d slots at random (mean of 2 runs; err %d)" % (N_SLOTS, errors),
        "%.0f" % many, "one slot, same load: %.0f req/s" % one["rps"], "%.2f" % ratio, ">= 0.80",
        verdict(ratio >= 0.8 and errors == 0))
    row("slots: distinct snapshots per batch (rows per forward)", "%.2f (%.2f)" % (snaps, res[N_SLOTS][0]["batch"]),
        "one slot: %.2f (%.2f)" % (one["snaps"], one["batch"]), "", "", "")
    conn.close()  # idle through the load: lorad's connection_timeout_s closed it
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(N_SLOTS):  # the memory figures below are for one slot
        st, o = jpost(port, "/unload", {"slot": "s%d" % i}, conn=conn)
        assert st == 200, o
    conn.close()


# ---------------------------------------------------------------- roof ----

def roof(model, adapters, adapter, seconds):
    out = subprocess.run([os.path.join(OUT, "roof"), "--model", model, "--adapters", adapters,
                          "--adapter", adapter, "--seconds", str(seconds),
                          "--batches", ",".join(map(str, ROOF_BATCHES))],
                         check=True, capture_output=True, text=True).stdout
    res = {}
    for m in re.finditer(r"batch=(\d+) ((?:\w+=[\d.]+ ?)+)", out):
        res[int(m.group(1))] = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", m.group(2))}
    log(out.strip().replace("\n", " | "))
    return res


def roof_of(r, b):
    """roof(c) of SPEC 10: the faster of indep and split at c rows."""
    return r[b]["rows_per_s"] if b in r else float("nan")


# ---------------------------------------------------------------- load ----

def unit_ms(v, u):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]


def wrk(port, conns, seconds, binary, path_body):
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, BENCH_BODY=path_body,
               BENCH_CT="application/octet-stream" if binary else "application/json")
    out = subprocess.run(["wrk", "-t%d" % min(2, conns), "-c%d" % conns, "-d%ds" % seconds,
                          "--latency", "-s", os.path.join(HERE, "infer.lua"),
                          "http://127.0.0.1:%d/infer" % port],
                         env=env, capture_output=True, text=True).stdout
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": 0,
           "client_cpu": (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / seconds}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % pct, out, re.M)
        if m:
            res[key] = unit_ms(m.group(1), m.group(2))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] += sum(int(x) for x in m.groups())
    return res


def cpu_s(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def load_point(port, conns, binary, bodies, pid):
    s0, c0 = metrics_batch(port)
    u0 = cpu_s(pid)
    r = wrk(port, conns, LOAD_S, binary, bodies["bin" if binary else "json"])
    r["server_cpu"] = (cpu_s(pid) - u0) / LOAD_S
    s1, c1 = metrics_batch(port)
    r["batch"] = (s1 - s0) / (c1 - c0) if c1 > c0 else float("nan")
    return r


# ------------------------------------------------------- swaps & verify ----

def verify_client(port, refs, stop_ev, stats, seed):
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    inputs = refs["inputs"]
    while not stop_ev.is_set():
        k = rng.randrange(len(inputs))
        try:
            st, hdrs, data = req(port, "POST", "/infer", refs["bodies"][k], conn=conn)
        except OSError:
            stats["failed"] += 1
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        stats["n"] += 1
        if st != 200:
            stats["failed"] += 1
            continue
        obj = json.loads(data)
        want = refs["out"].get(obj.get("adapter"), {}).get(k)
        stats["versions"].add((obj.get("adapter"), obj.get("version")))
        if want is None or not close(obj["output"], want):
            stats["mismatch"] += 1


def close(got, want):
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if g is None or abs(g - w) > 1e-5 * max(1.0, abs(w)):
            return False
    return True


def swapper(port, stop_ev, stats, rate=20.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    names = ["demo-a", "demo-b"]
    i, t = 0, time.monotonic()
    while not stop_ev.is_set():
        st, obj = jpost(port, "/swap", {"adapter": names[i % 2]}, conn=conn)
        if st == 200:
            stats["ok"] += 1
            stats["map"][obj["version"]] = obj["adapter"]
        else:
            stats["bad"] += 1
        i += 1
        t += 1.0 / rate
        d = t - time.monotonic()
        if d > 0:
            time.sleep(d)


def refs_for(port, n=8):
    rng = random.Random(11)
    inputs = [[rng.uniform(-1, 1) for _ in range(WIDTH)] for _ in range(n)]
    bodies = [json.dumps({"input": x}) for x in inputs]
    out = {}
    for name in ("demo-a", "demo-b"):
        st, obj = jpost(port, "/swap", {"adapter": name})
        assert st == 200, obj
        out[name] = {}
        for k, b in enumerate(bodies):
            st, _, data = req(port, "POST", "/infer", b)
            o = json.loads(data)
            assert o["adapter"] == name
            out[name][k] = o["output"]
    return {"inputs": inputs, "bodies": bodies, "out": out}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))] if xs else float("nan")


# ---------------------------------------------------------------- main ----

def main():
    t0 = time.time()
    os.makedirs(WORK, exist_ok=True)
    w1 = os.path.join(WORK, "w1")
    demo = os.path.join(WORK, "demo")
    log("writing W1 and the demo model")
    mkdemo(w1, ["--width", str(WIDTH), "--layers", str(LAYERS)])
    mkdemo(demo, [])
    log("writing rank-512 adapters (F32 16 MiB, F16, BF16)")
    mkbig(os.path.join(w1, "adapters"))
    rng = random.Random(3)
    x = [rng.uniform(-1, 1) for _ in range(WIDTH)]
    bodies = {"json": os.path.join(WORK, "row.json"), "bin": os.path.join(WORK, "row.bin")}
    open(bodies["json"], "w").write(json.dumps({"input": x}))
    open(bodies["bin"], "wb").write(array.array("f", x).tobytes())

    if os.environ.get("BENCH_ONLY") == "slots":  # the slots figures alone
        port = free_port()
        lp = start_lorad(w1, "lorad-w1", "demo-b", 16, port)
        slots_bench(port, bodies, w1)
        stop(lp)
        return table(t0, demo)

    # 1. roof
    log("roof: W1 (demo-b r16), then the demo model")
    roof_w1 = roof(os.path.join(w1, "model"), os.path.join(w1, "adapters"), "demo-b", 1.0)
    dm = json.load(open(os.path.join(demo, "lorad.json")))
    roof_demo = roof(os.path.join(demo, "model"), os.path.join(demo, "adapters"),
                     dm.get("initial_adapter") or "demo-a", 0.3)
    for b in ROOF_BATCHES:
        r = roof_w1[b]
        win = "split" if r["split"] >= r["indep"] else "indep"
        row("roof(%d) W1 rows/s (CPU us/row %.0f)" % (b, r["cpu_us_row"]), "%.0f" % r["rows_per_s"],
            "indep %.0f / split %.0f (%s wins); demo model: %.0f" %
            (r["indep"], r["split"], win, roof_of(roof_demo, b)),
            "split/indep %.2f" % (r["split"] / r["indep"]))
    for b in (16, 64):
        if b in roof_w1:
            r = roof_w1[b]
            ratio = r["split"] / r["bare"]
            row("forward rows/s @batch %d, all cores (split)" % b, "%.0f" % r["split"],
                "bare base GEMMs %.0f" % r["bare"], "%.2f" % ratio, ">= 0.90", verdict(ratio >= 0.9))

    # 2. load on lorad
    port = free_port()
    lp = start_lorad(w1, "lorad-w1", "demo-b", 16, port)
    req(port, "POST", "/infer", open(bodies["json"]).read())
    json_res = {}
    for binary in (True, False):
        kind = "binary" if binary else "JSON"
        for c in CONNS:
            r = load_point(port, c, binary, bodies, lp.pid)
            rf = roof_of(roof_w1, c)
            ratio = r["rps"] / rf if rf else float("nan")
            cpu_req = r["server_cpu"] / r["rps"] * 1e6 if r["rps"] else float("nan")
            log("%s c=%d: %.0f req/s p50 %.2f ms p99 %.2f ms batch %.2f errors %d cpu lorad %.2f wrk %.2f" %
                (kind, c, r["rps"], r["p50"], r["p99"], r["batch"], r["errors"], r["server_cpu"],
                 r["client_cpu"]))
            name = ("lorad %s req/s %dc (p50/p99 ms %.2f/%.2f, err %d, batch %.1f, cores: lorad %.2f, "
                    "wrk %.2f; lorad CPU us/req %.0f)" %
                    (kind, c, r["p50"], r["p99"], r["errors"], r["batch"], r["server_cpu"],
                     r["client_cpu"], cpu_req))
            ref = "roof(%d) %.0f rows/s, CPU us/row %.0f" % (c, rf, roof_w1[c]["cpu_us_row"]) \
                if c in roof_w1 else "no roof(%d)" % c
            if binary and c >= 16:
                row(name, "%.0f" % r["rps"], ref, "%.2f" % ratio, ">= 0.80", verdict(ratio >= 0.8))
            else:
                row(name, "%.0f" % r["rps"], ref, "%.2f" % ratio)
            if binary and c == 1 and 1 in roof_w1:
                one = roof_w1[1]["split_us"] / 1e3
                lat = r["p50"] / one
                row("lorad binary c=1 p50 ms", "%.3f" % r["p50"],
                    "roof one-row split %.3f ms" % one, "%.2f" % lat, "<= 1.25", verdict(lat <= 1.25))
            if not binary:
                json_res[c] = r

    # 3. the peer
    has_torch = subprocess.run(["/usr/bin/python3", "-c", "import torch"],
                               capture_output=True).returncode == 0
    if not has_torch or not os.path.exists(PEER):
        msg = "SKIPPED: /usr/bin/python3 has no torch" if not has_torch else "SKIPPED: no " + PEER
        log("peer " + msg)
        row("peer (PyTorch) JSON", msg, "", "", ">= 20x req/s", "SKIPPED")
    else:
        pport = free_port()
        pp = subprocess.Popen(["/usr/bin/python3", PEER, "--model", os.path.join(w1, "model"),
                               "--adapters", os.path.join(w1, "adapters"), "--adapter", "demo-b",
                               "--max-rank", "16", "--port", str(pport),
                               "--threads", str(os.cpu_count() or 1)],
                              stdout=open(os.path.join(WORK, "peer.log"), "w"),
                              stderr=subprocess.STDOUT)
        procs.append(pp)
        wait_ready(pport, "/status", pp)
        for c in [c for c in CONNS if c == 32] or CONNS[-1:]:
            r = wrk(pport, c, LOAD_S, False, bodies["json"])
            lr = json_res[c]
            rr = lr["rps"] / r["rps"] if r["rps"] else float("inf")
            pr = lr["p99"] / r["p99"] if r["p99"] else float("nan")
            log("peer JSON c=%d: %.0f req/s p99 %.2f ms errors %d" % (c, r["rps"], r["p99"], r["errors"]))
            row("peer JSON req/s %dc (p99 ms %.2f, err %d)" % (c, r["p99"], r["errors"]),
                "%.0f" % r["rps"], "lorad JSON %.0f req/s, p99 %.2f ms" % (lr["rps"], lr["p99"]),
                "req/s %.1fx, p99 %.3f" % (rr, pr), ">= 20x req/s", verdict(rr >= 20))
        stop(pp)

    # slots (SPEC 10): on the same lorad, before the swaps change its history
    slots_bench(port, bodies, w1)

    # 4. swaps under load
    log("swaps under load: %d s without, %d s with 20 swaps/s" % (SWAP_LOAD_S, SWAP_LOAD_S))
    refs = refs_for(port)
    cload = max(CONNS)
    runs = {}
    for with_swaps in (False, True):
        stop_ev = threading.Event()
        vstats = {"n": 0, "failed": 0, "mismatch": 0, "versions": set()}
        sstats = {"ok": 0, "bad": 0, "map": {}}
        th = [threading.Thread(target=verify_client, args=(port, refs, stop_ev, vstats, i))
              for i in range(2)]
        if with_swaps:
            th.append(threading.Thread(target=swapper, args=(port, stop_ev, sstats)))
        for t in th:
            t.start()
        r = wrk(port, cload, SWAP_LOAD_S, True, bodies["bin"])
        stop_ev.set()
        for t in th:
            t.join()
        # versions named by responses must be versions the swapper created
        # (or the two reference swaps) with the adapter the response named
        for name, ver in vstats["versions"]:
            if ver in sstats["map"] and sstats["map"][ver] != name:
                vstats["mismatch"] += 1
        runs[with_swaps] = (r, vstats, sstats)
        log("swaps=%s: %.0f req/s p99 %.2f ms wrk errors %d; verify n=%d failed=%d mismatch=%d; "
            "swaps ok=%d failed=%d" % (with_swaps, r["rps"], r["p99"], r["errors"], vstats["n"],
                                       vstats["failed"], vstats["mismatch"], sstats["ok"], sstats["bad"]))
    (r0, v0, _), (r1, v1, s1) = runs[False], runs[True]
    failed = r1["errors"] + v1["failed"]
    row("swaps under load: failed requests (%dc binary + 2 verifiers, %d s)" % (cload, SWAP_LOAD_S),
        "%d" % failed, "%d swaps ok (%.1f/s), %d failed" % (s1["ok"], s1["ok"] / SWAP_LOAD_S, s1["bad"]),
        "", "0", verdict(failed == 0 and s1["bad"] == 0))
    row("swaps under load: outputs not matching named version", "%d of %d" % (v1["mismatch"], v1["n"]),
        "", "", "0", verdict(v1["mismatch"] == 0 and v1["n"] > 0))
    p99r = r1["p99"] / r0["p99"] if r0["p99"] else float("nan")
    row("swaps under load: p99 ms with/without swaps", "%.2f / %.2f" % (r1["p99"], r0["p99"]),
        "req/s %.0f / %.0f" % (r1["rps"], r0["rps"]), "%.2f" % p99r, "<= 1.10", verdict(p99r <= 1.1))

    # 5. memory over 10,000 swaps (small adapters, W1)
    log("memory: %d swaps" % N_MEM_SWAPS)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(20):  # warm the history
        jpost(port, "/swap", {"adapter": ("demo-a", "demo-b")[i % 2]}, conn=conn)
    rss0 = rss_kib(lp.pid)
    bad = 0
    for i in range(N_MEM_SWAPS):
        st, _ = jpost(port, "/swap", {"adapter": ("demo-a", "demo-b")[i % 2]}, conn=conn)
        bad += st != 200
    rss1 = rss_kib(lp.pid)
    conn.close()
    stop(lp)
    model_b = sum(os.path.getsize(os.path.join(w1, "model", f)) for f in os.listdir(os.path.join(w1, "model")))
    ad_b = max(os.path.getsize(os.path.join(w1, "adapters", n, "adapter_model.safetensors"))
               for n in ("demo-a", "demo-b"))
    hist = json.load(open(os.path.join(w1, "lorad-w1.json"))).get("history", 4)
    bound = (model_b + (hist + 2) * ad_b) / 1024 + 64 * 1024
    growth = rss1 - rss0
    row("RSS KiB before / after %d swaps (%d failed)" % (N_MEM_SWAPS, bad), "%d / %d" % (rss0, rss1),
        "bound %.0f KiB (model %d + (%d+2) x %d B + 64 MiB)" % (bound, model_b, hist, ad_b),
        "%.2f" % (rss1 / bound), "<= bound, flat", verdict(rss1 <= bound and growth <= 4096 and bad == 0))

    # 6. swap costs, max_rank 512
    log("swap costs (max_rank 512)")
    port2 = free_port()
    bp = start_lorad(w1, "lorad-big", "demo-b", 512, port2)
    conn = http.client.HTTPConnection("127.0.0.1", port2, timeout=30)
    commit_us, rb_ms, rb_commit = [], [], []
    for dt in ("f32", "f16", "bf16"):
        name = "big-" + dt
        path = os.path.join(w1, "adapters", name, "adapter_model.safetensors")
        stage = []
        for i in range(10):
            st, o = jpost(port2, "/swap", {"adapter": name}, conn=conn)
            assert st == 200, o
            stage.append(o["stage_ms"])
            commit_us.append(o["commit_us"])
            t = time.perf_counter()
            st, o = jpost(port2, "/rollback", {}, conn=conn)
            rb_ms.append((time.perf_counter() - t) * 1e3)
            assert st == 200, o
            rb_commit.append(o["commit_us"])
        # physical limits in the same run: read the file, copy its bytes
        rd, cp = [], []
        for i in range(10):
            t = time.perf_counter()
            with open(path, "rb") as f:
                data = f.read()
            rd.append((time.perf_counter() - t) * 1e3)
            mv = bytearray(len(data))
            t = time.perf_counter()
            mv[:] = data
            cp.append((time.perf_counter() - t) * 1e3)
        size = os.path.getsize(path)
        sp50 = pct(stage, 50)
        row("stage_ms %s (%.1f MiB) p50/max of 10" % (name, size / 1048576.0), "%.2f / %.2f" % (sp50, max(stage)),
            "read file %.2f ms, memcpy %.2f ms" % (pct(rd, 50), pct(cp, 50)),
            "%.1fx read" % (sp50 / pct(rd, 50)),
            "p50 <= 10 ms" if dt == "f32" else "", verdict(sp50 <= 10) if dt == "f32" else "")
    conn.close()
    stop(bp)
    row("commit_us swap p50/p99 (n=%d)" % len(commit_us), "%.1f / %.1f" % (pct(commit_us, 50), pct(commit_us, 99)),
        "", "", "p99 <= 50 us", verdict(pct(commit_us, 99) <= 50))
    row("commit_us rollback p50/p99 (n=%d)" % len(rb_commit), "%.1f / %.1f" % (pct(rb_commit, 50), pct(rb_commit, 99)),
        "", "", "p99 <= 50 us", verdict(pct(rb_commit, 99) <= 50))
    row("rollback round trip ms p50/p99 (HTTP, durable)", "%.2f / %.2f" % (pct(rb_ms, 50), pct(rb_ms, 99)),
        "", "", "p99 <= 5 ms", verdict(pct(rb_ms, 99) <= 5))

    table(t0, demo)


def table(t0, demo):
    kernel = subprocess.run([os.path.join(OUT, "roof"), "--model", os.path.join(demo, "model"),
                             "--seconds", "0.01", "--batches", "1"], capture_output=True,
                            text=True).stdout.split()[0]
    head = ["figure", "value", "reference", "ratio", "target", "verdict"]
    lines = ["# lorad benchmarks (SPEC.md 10)", "",
             "%s, `make bench`, %d cores, %s, W1 = lorad-mkdemo --width 1024 --layers 4 (demo-b r16), "
             "took %.0f s" % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count() or 1,
                              kernel, time.time() - t0), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    text = "\n".join(lines) + "\n"
    open(os.path.join(OUT, "results.md"), "w").write(text)
    print()
    print(text)


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in procs:
            stop(p)
