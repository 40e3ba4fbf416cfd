#!/usr/bin/python3
"""lorad — bench/soak.py: the verifying soak of `make soak` (issue 12).

    bench/soak.py [--requests N] [--commits M] [--clients C] [BUILD_DIR]

Standard library only. Writes the demo model and adapters (lorad-mkdemo),
starts lorad on them with a state file, then runs C client processes that
send N single-row JSON /infer requests in all (keep-alive, one of 8 fixed
inputs at random) while one thread commits swaps and rollbacks (swap to
the adapter not serving, roll back, again) until both N answers and M
commits are done.

Every answer is checked in full: status 200, X-Lorad-Adapter and
X-Lorad-Version equal to the body's adapter and version, and every output
value equal (|got - want| <= 1e-5 + 1e-4 |want|) to an INDEPENDENT
computation: the model and adapter files are parsed here (safetensors,
adapter_config.json) and the forward pass is computed in double precision
in pure Python for each adapter and input once. "failed" counts answers
that are not 200 (or connections that broke), "torn" answers whose headers
disagree with the body or whose rows do not match the adapter named, and
"misnamed" versions that an answer names with another adapter than the
commit that issued it. RSS of lorad is sampled every 2 s.

Prints a Markdown table (and writes it to BUILD/bench/soak.md).
"""
import argparse
import http.client
import json
import math
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
N_INPUTS = 8


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ------------------------------------------------------ the reference ----

def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (path, k, v["dtype"])
        a, b = v["data_offsets"]
        vals = struct.unpack("<%df" % ((b - a) // 4), data[a:b])
        out[k] = (v["shape"], vals)
    return out


def load_model(mdir):
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    t = read_safetensors(os.path.join(mdir, "model.safetensors"))
    layers = []
    for L in cfg["layers"]:
        assert not L.get("fan_in_fan_out")
        W = t[L["name"] + ".weight"][1]
        b = t[L["name"] + ".bias"][1] if L.get("bias") else None
        layers.append((L["name"], L["in_features"], L["out_features"], L["activation"], W, b))
    return layers


def load_adapter(adir, layers):
    cfg = json.load(open(os.path.join(adir, "adapter_config.json")))
    assert not cfg.get("use_dora") and not cfg.get("alpha_pattern") and not cfg.get("modules_to_save")
    t = read_safetensors(os.path.join(adir, "adapter_model.safetensors"))
    out = {}
    for name, n_in, n_out, _, _, _ in layers:
        ka = "base_model.model.%s.lora_A.weight" % name
        if ka not in t:
            continue
        r = cfg.get("rank_pattern", {}).get(name, cfg["r"])
        alpha = cfg["lora_alpha"]
        s = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        A = t[ka][1]
        B = t["base_model.model.%s.lora_B.weight" % name][1]
        assert len(A) == r * n_in and len(B) == n_out * r
        out[name] = (r, s, A, B)
    return out


def forward(layers, lora, x):
    """y = W x + b + s B (A x) per layer, relu where the config says so."""
    for name, n_in, n_out, act, W, b in layers:
        y = [sum(W[o * n_in + i] * x[i] for i in range(n_in)) for o in range(n_out)]
        if b is not None:
            y = [y[o] + b[o] for o in range(n_out)]
        if lora and name in lora:
            r, s, A, B = lora[name]
            ax = [sum(A[k * n_in + i] * x[i] for i in range(n_in)) for k in range(r)]
            y = [y[o] + s * sum(B[o * r + k] * ax[k] for k in range(r)) for o in range(n_out)]
        if act == "relu":
            y = [v if v > 0 else 0.0 for v in y]
        x = y
    return x


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


# ------------------------------------------------------------ clients ----

def client(port, n, seed, bodies, refs, q):
    rng = random.Random(seed)
    st = {"n": 0, "failed": 0, "torn": 0, "pairs": {}, "first": ""}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        k = rng.randrange(len(bodies))
        try:
            conn.request("POST", "/infer", body=bodies[k],
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            st["failed"] += 1
            st["first"] = st["first"] or "connection: %r" % e
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        st["n"] += 1
        if r.status != 200:
            st["failed"] += 1
            st["first"] = st["first"] or "status %d: %s" % (r.status, data[:200])
            continue
        o = json.loads(data)
        name, ver = o.get("adapter"), o.get("version")
        ha, hv = r.getheader("X-Lorad-Adapter"), r.getheader("X-Lorad-Version")
        want = refs.get(name, {}).get(k)
        bad = ha != name or hv != str(ver) or want is None or len(o["output"]) != len(want)
        if not bad:
            for g, w in zip(o["output"], want):
                if g is None or abs(g - w) > 1e-5 + 1e-4 * abs(w):
                    bad = True
                    break
        if bad:
            st["torn"] += 1
            st["first"] = st["first"] or "torn: %s v%s (headers %s v%s)" % (name, ver, ha, hv)
        prev = st["pairs"].setdefault(ver, name)
        if prev != name:
            st["torn"] += 1
    conn.close()
    q.put(st)


# ------------------------------------------------------------ commits ----

class Committer(threading.Thread):
    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.done = threading.Event()
        self.want = 0
        self.commits = self.failed = self.reissued = 0
        self.issued = {}  # version -> adapter (from the answers)
        self.err = ""
        self.stable = "demo-a"

    def post(self, conn, path, obj):
        conn.request("POST", path, body=json.dumps(obj), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        i = 0
        while not (self.done.is_set() and self.commits >= self.want):
            if i % 2 == 0:
                other = "demo-b" if self.stable == "demo-a" else "demo-a"
                st, o = self.post(conn, "/swap", {"adapter": other})
                if st == 200:
                    if o["version"] in self.issued:
                        self.reissued += 1
                    self.issued[o["version"]] = o["adapter"]
            else:
                st, o = self.post(conn, "/rollback", {})
            if st == 200:
                self.commits += 1
                self.stable = o["adapter"]
            else:
                self.failed += 1
                self.err = self.err or "%d %s" % (st, o)
            i += 1


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000000)
    ap.add_argument("--commits", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("build", nargs="?", default="build")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    work = os.path.join(build, "bench", "soak")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    subprocess.run([os.path.join(build, "lorad-mkdemo"), work], check=True, stdout=subprocess.DEVNULL)
    layers = load_model(os.path.join(work, "model"))
    rng = random.Random(5)
    n_in = layers[0][1]
    inputs = [[f32(rng.uniform(-1, 1)) for _ in range(n_in)] for _ in range(N_INPUTS)]
    bodies = ['{"input": [%s]}' % ",".join("%.9g" % v for v in x) for x in inputs]
    t0 = time.time()
    refs = {}
    for name in ("demo-a", "demo-b"):
        lora = load_adapter(os.path.join(work, "adapters", name), layers)
        refs[name] = {k: forward(layers, lora, x) for k, x in enumerate(inputs)}
    print("soak: reference outputs computed in %.1f s" % (time.time() - t0), flush=True)

    port = free_port()
    cfg = json.load(open(os.path.join(work, "lorad.json")))
    cfg.update({"listen": "127.0.0.1:%d" % port, "log_level": "warning", "workers": 2})
    json.dump(cfg, open(os.path.join(work, "soak.json"), "w"))
    p = subprocess.Popen([os.path.join(build, "lorad"), "-c", os.path.join(work, "soak.json")],
                         stdout=open(os.path.join(work, "lorad.log"), "w"), stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(0.05)
    rss0 = rss_kib(p.pid)
    samples = [(0.0, rss0)]
    com = Committer(port)
    com.want = a.commits
    q = mp.Queue()
    per = a.requests // a.clients
    t0 = time.time()
    procs = [mp.Process(target=client, args=(port, per, 100 + i, bodies, refs, q))
             for i in range(a.clients)]
    for c in procs:
        c.start()
    com.start()
    results = []
    while len(results) < a.clients:
        try:
            results.append(q.get(timeout=2))
        except Exception:
            pass
        samples.append((time.time() - t0, rss_kib(p.pid)))
    for c in procs:
        c.join()
    load_s = time.time() - t0
    com.done.set()
    while com.is_alive():
        com.join(2)
        samples.append((time.time() - t0, rss_kib(p.pid)))
    rss1 = rss_kib(p.pid)
    total_s = time.time() - t0
    p.send_signal(signal.SIGTERM)
    rc = p.wait(30)

    n = sum(r["n"] for r in results)
    failed = sum(r["failed"] for r in results)
    torn = sum(r["torn"] for r in results)
    misnamed = 0
    for r in results:
        for ver, name in r["pairs"].items():
            if ver and com.issued.get(ver, name) != name:
                misnamed += 1
    firsts = [r["first"] for r in results if r["first"]]
    q1 = [s for s in samples if s[0] >= total_s * 0.25]
    q3 = [s for s in samples if s[0] >= total_s * 0.75]
    lines = [
        "| figure | value |",
        "|---|---|",
        "| date | %s |" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "| /infer answers checked | %d (%d clients, %.0f /s) |" % (n, a.clients, n / load_s),
        "| commits (swaps + rollbacks) | %d (%d failed, %d versions reissued) |"
        % (com.commits, com.failed, com.reissued),
        "| failed | %d |" % failed,
        "| torn | %d |" % torn,
        "| misnamed versions | %d |" % misnamed,
        "| RSS start / 25%% / 75%% / end (MiB) | %.1f / %.1f / %.1f / %.1f |"
        % (rss0 / 1024, (q1[0][1] if q1 else rss0) / 1024, (q3[0][1] if q3 else rss1) / 1024,
           rss1 / 1024),
        "| RSS max (MiB) | %.1f |" % (max(s[1] for s in samples) / 1024),
        "| duration | %.0f s |" % total_s,
        "| lorad exit | %d |" % rc,
    ]
    text = "\n".join(lines)
    print(text)
    if firsts:
        print("first problems: %s" % firsts[:3])
    if com.err:
        print("first commit failure: %s" % com.err)
    open(os.path.join(build, "bench", "soak.md"), "w").write(text + "\n")
    ok = failed == 0 and torn == 0 and misnamed == 0 and com.failed == 0 and com.reissued == 0 and rc == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
