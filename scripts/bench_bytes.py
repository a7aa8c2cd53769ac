#!/usr/bin/env python3
"""Bytes on the wire per sample, remote write 2.0: metrics-relay against
Prometheus in agent mode, both sending `io.prometheus.write.v2.Request`
(metadata included) to a real Prometheus 3 receiver.

    scripts/bench_bytes.py OUT.jsonl [--targets 10] [--series 2000] [--window 60]

The targets serve the peer harness's generated pages (../shared/bench/run.py,
rotating its four variants) over plain HTTP on loopback; a counting HTTP
proxy in front of the receiver adds up the request bodies; the samples are
the receiver's own count (prometheus_tsdb_head_samples_appended_total). Each
agent runs alone for a warm-up, then the window. Loopback only. Needs
PROMETHEUS_BIN (Prometheus 3: receiver and agent) and METRICS_RELAY_BIN.
"""
import argparse
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "shared" / "bench"))
import run as harness  # noqa: E402  (the peer harness: its page generator)

HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with HTTP.open(url, timeout=10) as r:
        return r.read().decode()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Targets:
    """One HTTP server per target, each serving its pages in turn."""

    def __init__(self, pages_dir, n):
        self.servers = []
        for d in sorted(p for p in Path(pages_dir).iterdir() if p.is_dir())[:n]:
            pages = [(d / f"v{v}.prom").read_bytes() for v in range(4)]
            count = [0]

            class H(http.server.BaseHTTPRequestHandler):
                def do_GET(self, pages=pages, count=count):
                    body = pages[count[0] % len(pages)]
                    count[0] += 1
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *a):
                    pass

            s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
            threading.Thread(target=s.serve_forever, daemon=True).start()
            self.servers.append(s)

    def addrs(self):
        return [f"127.0.0.1:{s.server_address[1]}" for s in self.servers]


class Proxy:
    """Forwards POSTs to the receiver; counts request body bytes."""

    def __init__(self, upstream_port):
        self.bytes = 0
        self.requests = 0
        self.kinds = {}
        lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                kind = (self.headers.get("Content-Type", ""), self.headers.get("Content-Encoding", ""))
                with lock:
                    outer.bytes += len(body)
                    outer.requests += 1
                    outer.kinds[kind] = outer.kinds.get(kind, 0) + 1
                c = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                c.request("POST", self.path, body=body, headers=hdrs)
                r = c.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                c.close()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def port(self):
        return self.server.server_address[1]


def config(addrs, url, interval, message):
    targets = json.dumps(addrs)
    return (f"global:\n  scrape_interval: {interval}s\n  scrape_timeout: {interval}s\n"
            f"scrape_configs:\n  - job_name: bytes\n    static_configs:\n      - targets: {targets}\n"
            f"remote_write:\n  - url: {url}\n    protobuf_message: {message}\n")


def wait_http(url, limit=60):
    end = time.time() + limit
    while time.time() < end:
        try:
            get(url)
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{url} did not answer")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--targets", type=int, default=10)
    p.add_argument("--series", type=int, default=2000)
    p.add_argument("--interval", type=float, default=5)
    p.add_argument("--warmup", type=float, default=20)
    p.add_argument("--window", type=float, default=60)
    a = p.parse_args()
    prom_bin = os.environ["PROMETHEUS_BIN"]
    relay_bin = os.environ["METRICS_RELAY_BIN"]
    work = Path(tempfile.mkdtemp(prefix="bench-bytes-"))
    pages = harness.ensure_targets(work, a.targets, a.series, 4)
    targets = Targets(pages, a.targets)
    rport = free_port()
    (work / "recv.yml").write_text("global:\n  scrape_interval: 1h\n")
    receiver = subprocess.Popen(
        [prom_bin, f"--config.file={work / 'recv.yml'}", f"--storage.tsdb.path={work / 'recv'}",
         f"--web.listen-address=127.0.0.1:{rport}", "--web.enable-remote-write-receiver",
         "--enable-feature=metadata-wal-records"],
        stdout=subprocess.DEVNULL, stderr=open(work / "recv.log", "w"))
    wait_http(f"http://127.0.0.1:{rport}/-/ready")
    proxy = Proxy(rport)
    url = f"http://127.0.0.1:{proxy.port()}/api/v1/write"
    agents = {
        "metrics-relay": lambda cfg, d, port: [relay_bin, "run", "--config", cfg, "--data-dir", d,
                                               "--listen-address", f"127.0.0.1:{port}"],
        "prom-agent": lambda cfg, d, port: [prom_bin, "--agent", f"--config.file={cfg}",
                                            f"--storage.agent.path={d}",
                                            f"--web.listen-address=127.0.0.1:{port}"],
    }
    results = []
    try:
        for name, cmd in agents.items():
            cfg = work / f"{name}.yml"
            cfg.write_text(config(targets.addrs(), url, a.interval, "io.prometheus.write.v2.Request"))
            port = free_port()
            agent = subprocess.Popen(cmd(str(cfg), str(work / f"{name}-data"), port),
                                     stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "w"))
            try:
                time.sleep(a.warmup)
                recv_metrics = f"http://127.0.0.1:{rport}/metrics"
                s0 = metric(get(recv_metrics), "prometheus_tsdb_head_samples_appended_total")
                b0, r0, k0 = proxy.bytes, proxy.requests, dict(proxy.kinds)
                time.sleep(a.window)
                s1 = metric(get(recv_metrics), "prometheus_tsdb_head_samples_appended_total")
                b1, r1 = proxy.bytes, proxy.requests
                kinds = {f"{k[0]} {k[1]}": v - k0.get(k, 0) for k, v in proxy.kinds.items()
                         if v - k0.get(k, 0) > 0}
                res = dict(agent=name, targets=a.targets, series=a.series, interval=a.interval,
                           window_s=a.window, bytes=b1 - b0, requests=r1 - r0, samples=s1 - s0,
                           bytes_per_sample=round((b1 - b0) / (s1 - s0), 2) if s1 > s0 else None,
                           kinds=kinds)
                print(json.dumps(res), flush=True)
                results.append(res)
            finally:
                agent.terminate()
                agent.wait(timeout=30)
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    with open(a.out, "a") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
