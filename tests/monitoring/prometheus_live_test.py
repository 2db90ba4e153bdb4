#!/usr/bin/env python3
"""Monitoring against a real Prometheus server and a real training job (issue 14), two tests:

  server    Debian's `prometheus` on an ephemeral loopback port, with deploy/prometheus/prometheus.yml (scrape
            interval shortened) in a temporary directory, scrapes a 2-rank training job under mpiexec through the
            file_sd targets file rank 0 writes. Once both ranks have been scraped, every PromQL expression of every
            panel of deploy/grafana/mlagpt.json runs through Prometheus's HTTP API: each returns data, for both ranks
            where the panel shows ranks; the tokens counter rises on both ranks; `promtool check metrics` reports
            nothing on a live scrape of each rank; `promtool check config` passes on the shipped config.
  overhead  one training process, scraped 50 times a second in alternate phases of 2 s and left alone in the
            others (16 phases, about 40 steps each): the median step time of the scraped phases is less than 5%
            above the unscraped ones.

Everything started here is stopped at the end, and the temporary directory removed. A missing prometheus,
promtool or mpiexec is a skip (exit 77), and a failure under CI=true (setup installs them).

  prometheus_live_test.py server|overhead --mlagpt BUILD/trainer/mlagpt --mpiexec MPIEXEC --repo REPO
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

SKIP = 77


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def need(program):
    path = shutil.which(program)
    if path:
        return path
    print(f"{program} is not installed (deploy/setup.sh installs it)", flush=True)
    sys.exit(1 if os.environ.get("CI") else SKIP)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def start(command, log, env=None):
    """A process in a session of its own (so that its whole group can be stopped), output to `log`."""
    return subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def stop(process, sig=signal.SIGTERM, grace=20):
    """`sig` to the process itself (mpirun forwards it to the ranks; a rank that got it twice would end at once),
    then, after `grace` seconds, SIGKILL to its whole group."""
    if process is None or process.poll() is not None:
        return
    try:
        process.send_signal(sig)
        process.wait(timeout=grace)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def wait_for(what, predicate, timeout, processes=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process, log in processes:
            if process.poll() is not None:
                fail(f"{name} ended (status {process.returncode}) while waiting for {what}:\n{open(log).read()[-4000:]}")
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    fail(f"timed out after {timeout} s waiting for {what}")


def prepare_dataset(mlagpt, out):
    subprocess.run([mlagpt, "prepare", "--tokenizer", "char", "--out", out], check=True,
                   stdout=subprocess.DEVNULL)


def train_args(mlagpt, repo, data, run_dir, extra):
    return [mlagpt, "train", "--config", os.path.join(repo, "launch/configs/tiny_mla.toml"), f"--data.dir={data}",
            f"--run.out_dir={run_dir}", "--run.device=cpu", "--run.threads=1", "--run.log_every=1",
            "--run.max_steps=1000000", "--eval.sample_tokens=0", "--schedule.warmup_steps=10"] + extra


class Prometheus:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = json.loads(http_get(f"{self.base}/api/v1/query?{urllib.parse.urlencode(params)}"))
        if body.get("status") != "success":
            fail(f"query {expr!r}: {body}")
        return body["data"]["result"]

    def label_values(self, label, match):
        url = f"{self.base}/api/v1/label/{label}/values?{urllib.parse.urlencode({'match[]': match})}"
        return json.loads(http_get(url))["data"]


def dashboard_targets(path):
    """(panel title, expr, legendFormat) of every query of every panel, rows' nested panels included."""
    with open(path) as f:
        dashboard = json.load(f)
    found = []

    def walk(panels):
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"], target.get("legendFormat", "")))

    walk(dashboard["panels"])
    variables = [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found, variables


def server_test(args, tmp):
    prometheus_bin = need("prometheus")
    promtool = need("promtool")
    shipped = os.path.join(args.repo, "deploy/prometheus/prometheus.yml")
    check = subprocess.run([promtool, "check", "config", shipped], capture_output=True, text=True)
    if check.returncode != 0:
        fail(f"promtool check config {shipped}:\n{check.stdout}{check.stderr}")
    print(f"ok: promtool check config {shipped}", flush=True)

    # The shipped config with a 1 s scrape interval, beside its own targets/ directory.
    config = open(shipped).read()
    for old, new in (("scrape_interval: 5s", "scrape_interval: 1s"), ("scrape_timeout: 4s", "scrape_timeout: 1s"),
                     ("evaluation_interval: 5s", "evaluation_interval: 1s"), ("refresh_interval: 30s",
                                                                               "refresh_interval: 1s")):
        if config.count(old) != 1:
            fail(f"{shipped} no longer holds '{old}' once; update this test")
        config = config.replace(old, new)
    config_path = os.path.join(tmp, "prometheus.yml")
    open(config_path, "w").write(config)
    os.makedirs(os.path.join(tmp, "targets"))

    data = os.path.join(tmp, "data")
    prepare_dataset(args.mlagpt, data)
    job = "live-mla"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    train_log = os.path.join(tmp, "train.log")
    prom_log = os.path.join(tmp, "prometheus.log")
    train = prometheus = None
    try:
        train = start([args.mpiexec, "-n", "2"] + train_args(
            args.mlagpt, args.repo, data, os.path.join(tmp, "run"),
            ["--monitoring.metrics_address=127.0.0.1:0", f"--monitoring.job={job}",
             f"--monitoring.targets_file={os.path.join(tmp, 'targets', job + '.json')}",
             # A CPU has no known peak: give one, so that MFU is reported.
             "--monitoring.peak_flops=1e11", "--eval.every=5", "--eval.batches=2", "--checkpoint.every=10",
             "--compress.every=1000000", "--compress.start_step=10", "--compress.targets=blocks.*.mlp.*",
             "--compress.param_ratio=0.5"]), train_log, env)
        port = free_port()
        prometheus = start([prometheus_bin, f"--config.file={config_path}",
                            f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
                            f"--web.listen-address=127.0.0.1:{port}"], prom_log)
        watched = [("training", train, train_log), ("prometheus", prometheus, prom_log)]
        server = Prometheus(port)
        wait_for("prometheus to be ready", lambda: "Ready" in http_get(f"{server.base}/-/ready"), 60, watched)

        def both_up():
            active = json.loads(http_get(f"{server.base}/api/v1/targets"))["data"]["activeTargets"]
            return len(active) == 2 and all(t["health"] == "up" for t in active)

        wait_for("both ranks' targets to be up", both_up, 120, watched)

        # Until the run has evaluated, saved a checkpoint and compressed (step 10), and a few scrapes later.
        def steps_past(step):
            result = server.query("mlagpt_train_step")
            return len(result) == 2 and all(float(r["value"][1]) >= step for r in result)

        wait_for("both ranks past step 14", lambda: steps_past(14), 180, watched)
        time.sleep(6)
        print(f"ok: prometheus at {server.base} scrapes both ranks of job {job}", flush=True)

        # Every rank's exposition passes promtool's lint.
        targets = json.load(open(os.path.join(tmp, "targets", job + ".json")))
        if sorted(g["labels"]["rank"] for g in targets) != ["0", "1"]:
            fail(f"the targets file names ranks {[g['labels'] for g in targets]}")
        served = set()
        for group in targets:
            body = http_get(f"http://{group['targets'][0]}/metrics")
            served |= set(re.findall(r"^(mlagpt_\w+?)(?:_bucket|_sum|_count)?[{ ]", body, re.M))
            lint = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True)
            if lint.returncode != 0 or lint.stdout.strip() or lint.stderr.strip():
                fail(f"promtool check metrics on rank {group['labels']['rank']}:\n{lint.stdout}{lint.stderr}")
        print(f"ok: promtool check metrics reports nothing on either rank ({len(served)} mlagpt metrics)", flush=True)

        dashboard = os.path.join(args.repo, "deploy/grafana/mlagpt.json")
        generated = subprocess.run([sys.executable, os.path.join(args.repo, "deploy/grafana/make_dashboard.py")],
                                   capture_output=True, text=True, check=True).stdout
        if generated != open(dashboard).read():
            fail(f"{dashboard} is not what deploy/grafana/make_dashboard.py prints: regenerate it")
        exprs, variables = dashboard_targets(dashboard)
        if len(exprs) < 20:
            fail(f"the dashboard has only {len(exprs)} queries")
        for definition in variables:  # label_values(SELECTOR, LABEL)
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", definition)
            values = server.label_values(match.group(2), match.group(1).replace("$job", job))
            want = {job} if match.group(2) == "job" else {"0", "1"}
            if not want <= set(values):
                fail(f"dashboard variable {definition}: {values}, want {want}")
        for title, expr, legend in exprs:
            names = set(re.findall(r"\b(mlagpt_\w+?)(?:_bucket|_sum|_count)?\b", expr))
            if not names <= served:
                fail(f"panel {title!r} queries {sorted(names - served)}, which no rank serves")
            query = expr.replace("$job", job).replace("$rank", ".*").replace("$__rate_interval", "10s")
            result = server.query(query)
            if not result:
                fail(f"panel {title!r}: {query} returned nothing")
            if "{{rank}}" in legend:
                ranks = sorted({r["metric"].get("rank") for r in result})
                if ranks != ["0", "1"]:
                    fail(f"panel {title!r}: {query} returned ranks {ranks}, want both")
            print(f"ok: {title}: {query} -> {len(result)} series", flush=True)

        # The tokens counter rises on both ranks: as Prometheus has it now, then once it has scraped more steps.
        def tokens():
            return {r["metric"]["rank"]: float(r["value"][1])
                    for r in server.query(f'mlagpt_tokens_total{{job="{job}"}}')}

        before = tokens()
        if sorted(before) != ["0", "1"]:
            fail(f"mlagpt_tokens_total of ranks {sorted(before)}, want both")
        def risen():
            now = tokens()
            return now if all(now.get(r, 0) > before[r] for r in before) else None

        after = wait_for("mlagpt_tokens_total to rise on both ranks", risen, 60, watched)
        print(f"ok: mlagpt_tokens_total rose on both ranks: {before} -> {after}", flush=True)
    finally:
        stop(train, signal.SIGUSR1)  # mpirun forwards it: both ranks stop at one step with a checkpoint
        stop(prometheus)
    if train.returncode != 128 + signal.SIGUSR1:
        fail(f"the training job ended with status {train.returncode}, want {128 + signal.SIGUSR1}:\n"
             f"{open(train_log).read()[-4000:]}")


def overhead_test(args, tmp):
    data = os.path.join(tmp, "data")
    prepare_dataset(args.mlagpt, data)
    run_dir = os.path.join(tmp, "run")
    log = os.path.join(tmp, "train.log")
    phase_s, phases = 2.0, 16
    train = None
    scraping = threading.Event()
    done = threading.Event()
    windows = []  # (start, end, scraped) in Unix time
    scrapes = [0]

    try:
        train = start(train_args(args.mlagpt, args.repo, data, run_dir,
                                 ["--monitoring.metrics_address=127.0.0.1:0", "--eval.every=0",
                                  "--checkpoint.every=0", "--data.batch_size=4"]), log,
                      dict(os.environ, OMP_NUM_THREADS="1"))
        targets_file = os.path.join(run_dir, "prometheus-targets.json")
        watched = [("training", train, log)]
        wait_for("the targets file", lambda: os.path.exists(targets_file), 60, watched)
        target = json.load(open(targets_file))[0]["targets"][0]
        url = f"http://{target}/metrics"
        metrics = os.path.join(run_dir, "metrics.jsonl")
        wait_for("20 steps", lambda: sum(1 for _ in open(metrics)) >= 20, 120, watched)

        def scraper():
            period = 1 / 50
            next_at = time.monotonic()
            while not done.is_set():
                if scraping.is_set():
                    http_get(url)
                    scrapes[0] += 1
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))

        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        for i in range(phases):
            on = i % 2 == 1
            (scraping.set if on else scraping.clear)()
            begin = time.time()
            time.sleep(phase_s)
            windows.append((begin, time.time(), on))
        done.set()
        thread.join()
    finally:
        stop(train, signal.SIGTERM)

    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    steps = {True: [], False: []}
    margin = 0.1  # a step must lie inside its phase, away from the switch
    for r in records:
        if r.get("kind") != "train":
            continue
        begin, end = r["time"] - r["step_seconds"], r["time"]
        for w_begin, w_end, on in windows:
            if begin >= w_begin + margin and end <= w_end - margin:
                steps[on].append(r["step_seconds"])
    if len(steps[True]) < 50 or len(steps[False]) < 50:
        fail(f"too few steps inside the phases: {len(steps[True])} scraped, {len(steps[False])} not")
    rate = scrapes[0] / (phase_s * phases / 2)
    if rate < 45:
        fail(f"the scraper reached only {rate:.1f} scrapes/s")
    scraped, quiet = statistics.median(steps[True]), statistics.median(steps[False])
    ratio = scraped / quiet
    print(f"[ measured ] scraping 50/s ({rate:.1f}/s reached): median step {1e3 * scraped:.2f} ms over "
          f"{len(steps[True])} steps, unscraped {1e3 * quiet:.2f} ms over {len(steps[False])} steps: "
          f"ratio {ratio:.4f}", flush=True)
    if ratio >= 1.05:
        fail(f"scraping slowed the steps by {100 * (ratio - 1):.1f}% (limit 5%)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("test", choices=["server", "overhead"])
    parser.add_argument("--mlagpt", required=True)
    parser.add_argument("--mpiexec", required=True)
    parser.add_argument("--repo", required=True)
    args = parser.parse_args()
    if not os.path.exists(args.mpiexec):
        need("mpiexec")
    tmp = tempfile.mkdtemp(prefix="mlagpt-prometheus-")
    try:
        (server_test if args.test == "server" else overhead_test)(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
