#!/usr/bin/env python3
"""Fleet-scale benchmark cases (issue 15), run with the peer harness in ../shared/bench/:

- fleet-50x20000: 50 targets x 20,000 series (1 M active series) at 15 s;
- fleet-200x5000: 200 targets x 5,000 series at 30 s;
- catchup-50x20000: the 1 M-series case with the receiver stopped for OUTAGE seconds and behind
  50 ms of added latency (a delaying TCP proxy between the agent and VictoriaMetrics, started
  here); `catchup_s` is the time from the receiver's restart until every sample scraped has
  arrived (the run's window ends 5 s after the restart, then the harness waits for delivery);
  `newest_visible_s` is the time from the receiver's restart until every target's newest sample
  (its `up` from the last scrape before the restart, or a later one) can be read back from
  VictoriaMetrics (`/api/v1/export`, polled every 0.2 s): what a dashboard shows after an outage.

Every agent runs every case in this one process, one after the other, into one JSONL file.
Usage: scripts/bench_fleet.py OUT.jsonl [--agents metrics-relay,vmagent,prom-agent] [--outage 600]
Loopback only. Standard library only.
"""
import argparse
import asyncio
import importlib.util
import json
import os
import re
import threading
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("run", HERE.parent.parent / "shared/bench/run.py")
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)

DELAY_S = 0.050


class DelayProxy:
    """Forwards 127.0.0.1:port to the receiver; every chunk towards the receiver waits DELAY_S."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.port = run.free_port()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)

    async def _serve(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", self.port)

    async def _pipe(self, r, w, delay):
        try:
            while data := await r.read(1 << 16):
                if delay:
                    await asyncio.sleep(delay)
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def _conn(self, cr, cw):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:  # receiver down: the agent sees a refused connection
            cw.close()
            return
        await asyncio.gather(self._pipe(cr, uw, DELAY_S), self._pipe(ur, cw, 0))


def watch_newest(env, t_return, found):
    """Polls VictoriaMetrics until every target's newest `up` (timestamp >= t_return - interval)
    reads back; records the seconds it took in found["newest_visible_s"]."""
    since_ms = (t_return - env.interval) * 1000
    query = urllib.parse.urlencode({"match[]": f'up{{job="{run.JOB}"}}', "start": f"{t_return - env.interval - 5:.3f}"})
    while time.time() < t_return + 3600 and not found.get("stop"):
        body = run.http_get(env.vm_url + "/api/v1/export?" + query, timeout=30) or b""
        fresh = set()
        for line in body.decode(errors="replace").splitlines():
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if any(ts >= since_ms for ts in j.get("timestamps", [])):
                fresh.add(j["metric"].get("instance"))
        if len(fresh) >= len(env.targets):
            found["newest_visible_s"] = round(time.time() - t_return, 1)
            return
        time.sleep(0.2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--agents", default="metrics-relay,vmagent,prom-agent")
    p.add_argument("--outage", type=float, default=600)
    p.add_argument("--cases", default="fleet-50x20000,fleet-200x5000,catchup-50x20000")
    p.add_argument("--relay-template", default=str(HERE / "bench-templates/metrics-relay-catchup.yml.tmpl"),
                   help="metrics-relay's config template for the outage cases")
    a = p.parse_args()
    agents = a.agents.split(",")
    cases = {
        "fleet-50x20000": dict(targets=50, series=20000, interval=15, duration=120, warmup=30),
        "fleet-200x5000": dict(targets=200, series=5000, interval=30, duration=150, warmup=60),
        "catchup-50x20000": dict(targets=50, series=20000, interval=15, warmup=30,
                                 outage=a.outage, outage_at=45, duration=45 + a.outage + 5,
                                 max_drain=1800),
    }
    real_url = run.Env.remote_write_url
    proxies = {}

    def proxied_url(env):
        if getattr(env, "delay_proxy", False):
            if env.vm_port not in proxies:
                proxies[env.vm_port] = DelayProxy(env.vm_port)
            return f"http://127.0.0.1:{proxies[env.vm_port].port}/api/v1/write"
        return real_url.fget(env)

    run.Env.remote_write_url = property(proxied_url)
    # The receiver's restart after the outage starts a watcher for the newest samples.
    newest = {}
    real_start_vm, real_stop_vm = run.Env.start_vm, run.Env.stop_vm

    def stop_vm(env):
        env.stopped_once = True
        real_stop_vm(env)

    def start_vm(env):
        real_start_vm(env)
        if getattr(env, "stopped_once", False):
            threading.Thread(target=watch_newest, args=(env, time.time(), newest), daemon=True).start()

    run.Env.start_vm, run.Env.stop_vm = start_vm, stop_vm
    real_init = run.Env.__init__
    for case in a.cases.split(","):
        for agent in agents:
            params = cases[case]

            def init(env, *args, **kw):
                real_init(env, *args, **kw)
                env.delay_proxy = case.startswith("catchup")

            run.Env.__init__ = init
            ns = run.run_defaults(run.DEFAULT_WORKDIR)
            for k, v in dict(params, agent=agent, case=case, out=a.out).items():
                setattr(ns, k, v)
            if agent == "metrics-relay" and params.get("outage"):
                # Room for the whole outage on disk (the peers' default has
                # no limit; ours is 512MiB).
                ns.config_template = a.relay_template
                ns.cmd = run.AGENTS["metrics-relay"].replace("{config}", "{custom_config}")
            run.log(f"fleet bench: {agent} {case} {params}")
            newest.clear()
            res, spots = run.do_run(ns)
            newest["stop"] = True
            res["commit"] = os.environ.get("BENCH_COMMIT", "")
            if agent == "metrics-relay" and ns.config_template:
                m = re.search(r"max_size:\s*(\S+)", open(ns.config_template).read())
                res["queue_max_size"] = m.group(1) if m else "512MiB"
                res["config_template"] = os.path.basename(ns.config_template)
            if params.get("outage"):
                res["catchup_s"] = round(5 + res["drain_s"], 1)
                res["newest_visible_s"] = newest.get("newest_visible_s")
                res["delay_ms"] = DELAY_S * 1000
            run.emit(res, spots, a.out)


if __name__ == "__main__":
    main()
