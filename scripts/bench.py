#!/usr/bin/env python3
"""Benchmark provisiond on this machine, side by side with its references.

Starts a private redis-server and the release server on loopback, runs
`provisiond bench` for Redis mode and memory mode at each concurrency, then the
references in the same run: `openssl speed ecdsap256` (the crypto bound: one P-256
verify plus one P-256 sign per sign-csr), the HTTP floor (examples/http_floor.rs: the
same HTTP stack answering the real answers' bodies, nothing else) and cfssl (`cfssl
serve` with a P-256 CA, loaded by the same client at the same concurrency with distinct
P-256 CSRs). Prints markdown tables with our figures as ratios to them and issue 25's
targets marked met or short, then the memory and /health figures.

    scripts/bench.py [--duration 5] [--concurrency 1,16,64] [--quick]

Needs redis-server, openssl and cfssl (Debian: redis-server, openssl, golang-cfssl);
installs the missing ones with apt-get when it can. Everything listens on 127.0.0.1.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "provisiond")
FLOOR_BIN = os.path.join(ROOT, "target", "release", "examples", "http_floor")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_tools():
    wanted = {"redis-server": "redis-server", "openssl": "openssl", "cfssl": "golang-cfssl"}
    missing = [pkg for tool, pkg in wanted.items() if shutil.which(tool) is None]
    if missing:
        log(f"installing {' '.join(missing)}")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return json.load(r) if r.headers.get("content-type", "").startswith("application/json") else None
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


class Redis:
    def __init__(self, workdir):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args],
                             capture_output=True, text=True)
        return out.stdout.strip()

    def used_memory(self):
        info = self.cli("INFO", "memory")
        return int(re.search(r"used_memory:(\d+)", info).group(1))

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Server:
    def __init__(self, workdir, redis=None, log_name="server.log"):
        self.port = free_port()
        env = {
            "PATH": os.environ["PATH"],
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "CERTS_DIR": os.path.join(workdir, "certs"),
            "ONBOARDING_MODE": "open",
            "RUST_LOG": "info",
            # One load generator on one address would trip the per-address limit.
            "RATE_LIMIT_PER_IP_PER_MINUTE": "0",
        }
        if redis:
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis.port}"
        else:
            env["REDIS_ENABLED"] = "false"
        self.log = open(os.path.join(workdir, log_name), "w")
        self.proc = subprocess.Popen([BIN], env=env, cwd=workdir, stdout=self.log, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(self.url + "/livez")

    def rss(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024

    def health(self):
        return wait_http(self.url + "/health")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait()
        self.log.close()


def bench(url, scenario, concurrency, duration=None, devices=None, cpu_of=()):
    """`cpu_of`: (name, pid) pairs whose CPU time over the measured window is reported
    per request, from /proc."""
    args = [BIN, "bench", "--server", url, "--scenario", scenario,
            "--concurrency", str(concurrency), "--json"]
    for name, pid in cpu_of:
        args += ["--cpu-of", f"{name}={pid}"]
    if duration:
        args += ["--duration", str(duration)]
    if devices:
        args += ["--devices", str(devices)]
    out = subprocess.run(args, capture_output=True, text=True)
    # 1: some requests failed, which the tables show; anything else is no result.
    if out.returncode not in (0, 1):
        raise RuntimeError(f"bench {scenario} failed ({out.returncode}): {out.stderr}")
    return json.loads(out.stdout)


def crypto_floor():
    """µs of one P-256 sign plus one P-256 verify on one core (`openssl speed`, one
    process): what a certificate costs at the least."""
    out = subprocess.run(["openssl", "speed", "-seconds", "3", "ecdsap256"],
                         capture_output=True, text=True).stdout
    m = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", out)
    sign, verify = float(m.group(1)), float(m.group(2))
    return 1e6 / sign, 1e6 / verify


def openssl_speed():
    out = subprocess.run(["openssl", "speed", "-seconds", "3", "-multi", str(os.cpu_count()), "ecdsap256"],
                         capture_output=True, text=True).stdout
    m = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", out)
    sign, verify = float(m.group(1)), float(m.group(2))
    return sign, verify, 1 / (1 / sign + 1 / verify)


def capture_answers(server, workdir):
    """One onboarding and one sign-csr against the real server: the bodies the HTTP
    floor answers with, so that it writes as many bytes per request."""
    key, csr = os.path.join(workdir, "floor.key"), os.path.join(workdir, "floor.csr")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=floor-probe"],
                   check=True, capture_output=True)

    def post(path, body, token=None):
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        request = urllib.request.Request(server.url + path, json.dumps(body).encode(), headers)
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.read()

    onboarding = post("/api/v1/onboarding", {"device_id": "floor-probe"})
    token = json.loads(onboarding)["provisioning_token"]
    sign = post("/api/v1/sign-csr", {"device_id": "floor-probe", "csr": open(csr).read()}, token)
    paths = os.path.join(workdir, "floor-onboarding.json"), os.path.join(workdir, "floor-sign.json")
    for path, body in zip(paths, (onboarding, sign)):
        with open(path, "wb") as f:
            f.write(body)
    return paths


class HttpFloor:
    """examples/http_floor.rs: the same HTTP stack answering canned bodies, nothing else."""

    def __init__(self, workdir, answers):
        self.log = open(os.path.join(workdir, "floor.log"), "w")
        self.proc = subprocess.Popen([FLOOR_BIN, *answers], stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"listening on (\S+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"http_floor did not start: {line!r}")
        self.url = f"http://{m.group(1)}"

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


class Cfssl:
    def __init__(self, workdir):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", "cfssl-ca-key.pem", "-out", "cfssl-ca.pem",
                        "-subj", "/CN=cfssl bench CA", "-days", "30"],
                       cwd=workdir, check=True, capture_output=True)
        self.port = free_port()
        self.log = open(os.path.join(workdir, "cfssl.log"), "w")
        self.proc = subprocess.Popen(
            ["cfssl", "serve", "-address", "127.0.0.1", "-port", str(self.port),
             "-ca", "cfssl-ca.pem", "-ca-key", "cfssl-ca-key.pem", "-loglevel", "2"],
            cwd=workdir, stdout=self.log, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("cfssl did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


def fmt_rate(x):
    return f"{x:,.0f}"


def stat(report, name):
    return report["results"].get(name, {})


def errors_of(*reports):
    errors = {}
    for report in reports:
        for result in report["results"].values():
            for code, n in result["errors"].items():
                errors[code] = errors.get(code, 0) + n
    return ", ".join(f"{c}={n}" for c, n in sorted(errors.items())) or "none"


def load_pending_tokens(redis, count, prefix="mqtt-lite:"):
    """Writes `count` pending tokens in provisiond's key layout straight into Redis."""
    now = int(time.time())
    lines = []
    for i in range(count):
        device, jti = f"h-{i:07d}", f"{i:022d}"
        value = json.dumps({"deviceId": device, "jti": jti, "expiresAt": now + 3600}, separators=(",", ":"))
        for key, val in ((f"{prefix}token:{{{device}}}:{jti}", value), (f"{prefix}device:{{{device}}}", jti)):
            parts = ["SET", key, val, "EX", "3600"]
            lines.append(f"*{len(parts)}\r\n" + "".join(f"${len(p.encode())}\r\n{p}\r\n" for p in parts))
    subprocess.run(["redis-cli", "-p", str(redis.port), "--pipe"], input="".join(lines).encode(),
                   check=True, capture_output=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--quick", action="store_true", help="skip the memory and /health figures")
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    ensure_tools()
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bins", "--example", "http_floor"],
                       cwd=ROOT, check=True)

    work = tempfile.mkdtemp(prefix="provisiond-bench-")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"# provisiond benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"\nMachine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; "
          f"load generator on the same machine; {args.duration:g} s per measurement; server logging at info.\n")

    log("openssl speed ...")
    sign, verify, bound = openssl_speed()
    sign_us, verify_us = crypto_floor()
    floor = sign_us + verify_us

    rows = {}
    answers = None
    redis = Redis(work)
    try:
        for mode in ("redis", "memory"):
            server = Server(work, redis if mode == "redis" else None, f"server-{mode}.log")
            try:
                if answers is None:
                    answers = capture_answers(server, work)
                cpu_of = [("server", server.proc.pid)] + ([("redis", redis.proc.pid)] if mode == "redis" else [])
                for c in levels:
                    log(f"{mode} c={c} ...")
                    onboarding = bench(server.url, "onboarding", c, args.duration, cpu_of=cpu_of)
                    signing = bench(server.url, "sign-csr", c, args.duration,
                                    devices=max(2000, int(20000 * args.duration)), cpu_of=cpu_of)
                    flow = bench(server.url, "flow", c, args.duration, cpu_of=cpu_of)
                    rows[(mode, c)] = (onboarding, signing, flow)
            finally:
                server.stop()
    finally:
        redis.stop()

    log("HTTP floor ...")
    floor_rows = {}
    http_floor = HttpFloor(work, answers)
    try:
        cpu_of = [("server", http_floor.proc.pid)]
        for c in levels:
            floor_rows[c] = (bench(http_floor.url, "onboarding", c, args.duration, cpu_of=cpu_of),
                             bench(http_floor.url, "sign-csr", c, args.duration,
                                   devices=max(2000, int(20000 * args.duration)), cpu_of=cpu_of))
    finally:
        http_floor.stop()

    log("cfssl ...")
    cfssl_rows = {}
    cfssl = Cfssl(work)
    try:
        for c in levels:
            cfssl_rows[c] = bench(cfssl.url, "cfssl", c, args.duration, cpu_of=[("cfssl", cfssl.proc.pid)])
    finally:
        cfssl.stop()

    print("## Throughput and latency\n")
    print("| store | c | onboarding/s | p99 ms | sign-csr/s | p99 ms | flow devices/s | p99 ms | "
          "sign-csr vs cfssl | sign-csr vs crypto bound | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (mode, c), (onboarding, signing, flow) in rows.items():
        o, s, f = stat(onboarding, "onboarding"), stat(signing, "sign-csr"), stat(flow, "flow")
        cf = stat(cfssl_rows[c], "cfssl-sign")
        print(f"| {mode} | {c} | {fmt_rate(o['per_second'])} | {o['p99_ms']:.2f} | "
              f"{fmt_rate(s['per_second'])} | {s['p99_ms']:.2f} | {fmt_rate(f['per_second'])} | "
              f"{f['p99_ms']:.2f} | {s['per_second'] / cf['per_second']:.2f}x | "
              f"{s['per_second'] / bound:.0%} | {errors_of(onboarding, signing, flow)} |")
    print("\n## References, same run\n")
    print("| reference | c | per s | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for c, report in cfssl_rows.items():
        cf = stat(report, "cfssl-sign")
        print(f"| cfssl `/api/v1/cfssl/sign` | {c} | {fmt_rate(cf['per_second'])} | {cf['p99_ms']:.2f} | "
              f"{errors_of(report)} |")
    print(f"| openssl speed ecdsap256, {os.cpu_count()} processes: sign | | {fmt_rate(sign)} | | |")
    print(f"| openssl speed ecdsap256, {os.cpu_count()} processes: verify | | {fmt_rate(verify)} | | |")
    print(f"| crypto bound of sign-csr (1 verify + 1 sign, all cores) | | {fmt_rate(bound)} | | |")

    print("\n## CPU per request (from /proc, over each measured window)\n")
    print(f"Crypto floor of a certificate: one P-256 sign ({sign_us:.1f} µs) plus one P-256 verify "
          f"({verify_us:.1f} µs) on one core (`openssl speed ecdsap256`) = {floor:.1f} µs.\n")
    def cpu(report, name):
        return report.get("cpu", {}).get(name, {}).get("us_per_request", 0.0)

    print("HTTP floor (`examples/http_floor.rs`: the same actix-web stack answering the same bodies, "
          "nothing else), server CPU per request: " + "; ".join(
              f"c={c} onboarding-sized POST {cpu(o, 'server'):.1f} µs, sign-csr-sized POST {cpu(s, 'server'):.1f} µs"
              for c, (o, s) in floor_rows.items()) + ".\n")
    print("| store | c | onboarding: server + Redis µs | sign-csr: server µs | Redis µs | vs crypto floor | "
          "vs cfssl CPU | flow: server + Redis µs |")
    print("|---|---|---|---|---|---|---|---|")
    for (mode, c), (onboarding, signing, flow) in rows.items():
        cfssl_cpu = cpu(cfssl_rows[c], "cfssl")
        sc = cpu(signing, "server")
        print(f"| {mode} | {c} | {cpu(onboarding, 'server'):.1f} + {cpu(onboarding, 'redis'):.1f} = "
              f"{cpu(onboarding, 'server') + cpu(onboarding, 'redis'):.1f} | {sc:.1f} | {cpu(signing, 'redis'):.1f} | "
              f"{sc / floor:.2f}x | {sc / cfssl_cpu:.2f}x ({cfssl_cpu:.0f} µs) | "
              f"{cpu(flow, 'server'):.1f} + {cpu(flow, 'redis'):.1f} |")

    print("\n## Against issue 25's targets (Redis mode, same run)\n")
    print("| c | target | measured | |")
    print("|---|---|---|---|")
    for (mode, c), (onboarding, signing, flow) in rows.items():
        if mode != "redis":
            continue
        http_onboarding, http_sign = (cpu(r, "server") for r in floor_rows[c])
        sc, cfssl_cpu = cpu(signing, "server"), cpu(cfssl_rows[c], "cfssl")
        ours = sc - floor - http_sign
        oc = cpu(onboarding, "server") + cpu(onboarding, "redis")
        p99 = stat(signing, "sign-csr")["p99_ms"]
        redis_sign, redis_onboarding = cpu(signing, "redis"), cpu(onboarding, "redis")
        for target, measured, met in (
            ("sign-csr server CPU ≤ crypto floor + HTTP floor + 15 µs",
             f"{sc:.1f} = {floor:.1f} crypto + {http_sign:.1f} HTTP + {ours:.1f} ours", ours <= 15),
            ("sign-csr server CPU ≤ ⅓ of cfssl's", f"{sc / cfssl_cpu:.2f}x ({cfssl_cpu:.0f} µs)", sc * 3 <= cfssl_cpu),
            ("onboarding server + Redis CPU ≤ 2× HTTP floor",
             f"{oc:.1f} = {oc / http_onboarding:.2f}x ({http_onboarding:.1f} µs)", oc <= 2 * http_onboarding),
            ("sign-csr p99 ≤ 10 ms", f"{p99:.2f} ms", p99 <= 10),
            ("Redis CPU per sign-csr ≤ 1.5× per onboarding",
             f"{redis_sign:.1f} / {redis_onboarding:.1f} = {redis_sign / max(redis_onboarding, 0.1):.2f}x",
             redis_sign <= 1.5 * redis_onboarding),
        ):
            print(f"| {c} | {target} | {measured} | {'met' if met else 'short'} |")

    if args.quick:
        return

    print("\n## Memory and /health\n")
    print("| measurement | value |")
    print("|---|---|")
    redis = Redis(work)
    try:
        server = Server(work, redis, "server-memory-redis.log")
        try:
            before = redis.used_memory()
            report = bench(server.url, "onboarding", 64, devices=100_000)
            after = redis.used_memory()
            done = stat(report, "onboarding")["ok"]
            print(f"| Redis memory per pending device (INFO used_memory, {done:,} devices) | "
                  f"{(after - before) / done:.0f} bytes |")
        finally:
            server.stop()
        redis.cli("FLUSHALL")
        log("loading 1M pending tokens into Redis ...")
        load_pending_tokens(redis, 1_000_000)
        server = Server(work, redis, "server-health.log")
        try:
            deadline = time.time() + 120
            while server.health()["redis"]["tokenCount"] is None and time.time() < deadline:
                time.sleep(0.5)
            health = server.health()
            report = bench(server.url, "health", 16, 5)
            h = stat(report, "health")
            print(f"| /health with {health['redis']['tokenCount']:,} pending tokens in Redis: p50 / p99 / max, c=16 | "
                  f"{h['p50_ms']:.2f} / {h['p99_ms']:.2f} / {h['max_ms']:.2f} ms ({fmt_rate(h['per_second'])}/s) |")
            print(f"| background count of those keys (SCAN, off the request path) | {health['redis']['countMillis']} ms |")
        finally:
            server.stop()
    finally:
        redis.stop()

    server = Server(work, None, "server-memory-store.log")
    try:
        bench(server.url, "onboarding", 64, devices=10_000)
        before = server.rss()
        report = bench(server.url, "onboarding", 64, devices=1_000_000)
        after = server.rss()
        done = stat(report, "onboarding")["ok"]
        print(f"| memory store per pending token (RSS, {done:,} tokens) | {(after - before) / done:.0f} bytes |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
