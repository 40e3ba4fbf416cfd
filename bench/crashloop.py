#!/usr/bin/python3
"""lorad — bench/crashloop.py: kill -9 at random instants (issue 12, SPEC 8).

    bench/crashloop.py [--kills N] [--max-delay-ms D] [BUILD_DIR]

Standard library only. Writes the demo model and adapters, then N times:
starts lorad (state file, history 4) and times it to /readyz 200; checks
what it restored against what this script knows was answered; streams
swaps (to the adapter not serving) and rollbacks over one keep-alive
connection; and SIGKILLs lorad after a random delay in [0, D) ms, in the
middle of whatever it is doing. Before each restart the state file is
parsed (it must always be complete JSON).

The script keeps a model of the serving state (stable, history) from the
answers. After a restart the restored stable and history must equal the
state after the last answered commit, or the state the commit in flight
at the kill would have made (it may or may not have been durable; for a
swap its version must be new). Counted: unreadable state files, restores
to anything else, versions issued twice (a swap answered or restored with
a version already issued), and time to ready (p50 / max).

Prints a Markdown table (and writes it to BUILD/bench/crashloop.md).
"""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HISTORY = 4


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def post(conn, path, obj):
    conn.request("POST", path, body=json.dumps(obj), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def state_of(status):
    st = status["stable"]
    return ((st["adapter"], st["version"]),
            tuple((h["adapter"], h["version"]) for h in status["history"]))


def after_swap(state, adapter, version):
    stable, hist = state
    return ((adapter, version), ((stable,) + hist)[:HISTORY])


def after_rollback(state):
    stable, hist = state
    return (hist[0], hist[1:]) if hist else state


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=1000)
    ap.add_argument("--max-delay-ms", type=float, default=300.0)
    ap.add_argument("build", nargs="?", default="build")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    work = os.path.join(build, "bench", "crashloop")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    subprocess.run([os.path.join(build, "lorad-mkdemo"), work], check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    cfg = json.load(open(os.path.join(work, "lorad.json")))
    cfg.update({"listen": "127.0.0.1:%d" % port, "log_level": "warning", "workers": 1,
                "history": HISTORY})
    cpath = os.path.join(work, "crash.json")
    json.dump(cfg, open(cpath, "w"))
    state_path = cfg["state_file"]
    log = open(os.path.join(work, "lorad.log"), "w")
    rng = random.Random(7)

    unreadable = wrong = reissued = answered = 0
    ready_ms, firsts = [], []
    issued = {}          # version -> adapter: every version answered or restored
    model = None         # the state after the last answered commit
    inflight = None      # ("swap", adapter) or ("rollback",) at the kill
    t_start = time.time()
    for it in range(a.kills):
        if os.path.exists(state_path):
            try:
                json.load(open(state_path))
            except ValueError as e:
                unreadable += 1
                firsts.append("kill %d: state file unreadable: %s" % (it, e))
        t0 = time.monotonic()
        p = subprocess.Popen([os.path.join(build, "lorad"), "-c", cpath], stdout=log,
                             stderr=subprocess.STDOUT)
        while True:
            try:
                if get(port, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if p.poll() is not None:
                sys.exit("crashloop: lorad exited with %d at start %d (see %s)"
                         % (p.returncode, it, log.name))
            time.sleep(0.002)
        ready_ms.append((time.monotonic() - t0) * 1000)
        status = json.loads(get(port, "/status")[1])
        got = state_of(status)
        for ad, ver in (got[0],) + got[1]:
            if ver and issued.get(ver, ad) != ad:
                reissued += 1
                firsts.append("kill %d: version %d restored as %s, issued as %s"
                              % (it, ver, ad, issued[ver]))
        if model is not None:
            ok = got == model
            if not ok and inflight and inflight[0] == "rollback":
                ok = got == after_rollback(model)
            if not ok and inflight and inflight[0] == "swap":
                ad, ver = got[0]
                ok = (ad == inflight[1] and ver not in issued and
                      got == after_swap(model, ad, ver))
            if not ok:
                wrong += 1
                firsts.append("kill %d: restored %s, expected %s (in flight %s)"
                              % (it, got, model, inflight))
        for ad, ver in (got[0],) + got[1]:
            issued.setdefault(ver, ad)
        model = got
        inflight = None
        killer = threading.Timer(rng.uniform(0, a.max_delay_ms) / 1000.0,
                                 lambda: p.send_signal(signal.SIGKILL))
        killer.start()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i = 0
        while True:
            if i % 2 == 0 or not model[1]:
                other = "demo-b" if model[0][0] == "demo-a" else "demo-a"
                inflight = ("swap", other)
                try:
                    st, o = post(conn, "/swap", {"adapter": other})
                except (OSError, http.client.HTTPException):
                    break
                if st == 200:
                    if o["version"] in issued:
                        reissued += 1
                        firsts.append("kill %d: version %d issued twice" % (it, o["version"]))
                    issued[o["version"]] = o["adapter"]
                    model = after_swap(model, o["adapter"], o["version"])
            else:
                inflight = ("rollback",)
                try:
                    st, o = post(conn, "/rollback", {})
                except (OSError, http.client.HTTPException):
                    break
                if st == 200:
                    model = after_rollback(model)
            if st != 200:
                sys.exit("crashloop: commit answered %d: %s" % (st, o))
            answered += 1
            inflight = None
            i += 1
        conn.close()
        killer.join()
        p.wait()
    p = subprocess.Popen([os.path.join(build, "lorad"), "-c", cpath], stdout=log,
                         stderr=subprocess.STDOUT)
    while True:
        try:
            if get(port, "/readyz")[0] == 200:
                break
        except OSError:
            time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    p.wait(30)
    lines = [
        "| figure | value |",
        "|---|---|",
        "| date | %s |" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "| kill -9 (random instant in [0, %.0f) ms of commits) | %d |" % (a.max_delay_ms, a.kills),
        "| commits answered | %d |" % answered,
        "| state files unreadable | %d |" % unreadable,
        "| restores other than last answered / in flight | %d |" % wrong,
        "| versions issued twice | %d |" % reissued,
        "| time to ready p50 / max (ms) | %.1f / %.1f |" % (pct(ready_ms, 50), max(ready_ms)),
        "| duration | %.0f s |" % (time.time() - t_start),
    ]
    text = "\n".join(lines)
    print(text)
    for f in firsts[:5]:
        print("  " + f)
    open(os.path.join(build, "bench", "crashloop.md"), "w").write(text + "\n")
    sys.exit(0 if unreadable == 0 and wrong == 0 and reissued == 0 else 1)


if __name__ == "__main__":
    main()
