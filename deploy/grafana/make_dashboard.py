#!/usr/bin/env python3
"""Writes deploy/grafana/mlagpt.json, the Grafana dashboard of an mlagpt job (docs/design.md, "Metrics"):

  python3 deploy/grafana/make_dashboard.py > deploy/grafana/mlagpt.json

Edit this file, not the JSON: prometheus_server_test checks that the JSON is what this prints, and runs every
query of it against a real Prometheus server scraping a 2-rank job. Panels read the variables $job and $rank
(regexes; "All" is .*) and Grafana's $__rate_interval.
"""
import json

DS = {"type": "prometheus", "uid": "${datasource}"}
J = 'job=~"$job"'
JR = 'job=~"$job",rank=~"$rank"'
RI = "$__rate_interval"
panels = []
def panel(title, kind, targets, unit=None, desc="", w=12, h=8, extra=None):
    p = {"id": len(panels) + 1, "type": kind, "title": title, "description": desc, "datasource": DS,
         "gridPos": {"x": 0, "y": 0, "w": w, "h": h},
         "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": e, "legendFormat": l,
                      **({"instant": False, "range": True} if kind != "stat" else {"instant": True, "range": False})}
                     for i, (e, l) in enumerate(targets)],
         "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []},
         "options": {}}
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "none"}}
    if extra:
        for k, v in extra.items():
            p[k] = v
    panels.append(p)

def row(title):
    panels.append({"id": len(panels) + 1, "type": "row", "title": title, "collapsed": False,
                   "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1}, "panels": []})

row("Progress")
panel("Step", "stat", [(f"max by (job) (mlagpt_train_step{{{J}}})", "{{job}}")], None,
      "Optimizer steps completed", w=6, h=4)
panel("Tokens trained", "stat", [(f'sum by (job) (mlagpt_tokens_total{{{J},tp_rank="0"}})', "{{job}}")], "short",
      "Tokens of every data-parallel replica (the ranks of tensor-parallel rank 0)", w=6, h=4)
panel("Validation perplexity", "stat", [(f"max by (job) (mlagpt_eval_perplexity{{{J}}})", "{{job}}")], None,
      "Perplexity of the last evaluation", w=6, h=4)
panel("Non-finite steps", "stat", [(f"max by (job) (mlagpt_nonfinite_steps_total{{{J}}})", "{{job}}")], None,
      "Steps skipped for a non-finite loss or gradient", w=6, h=4)
row("Loss")
panel("Loss against tokens", "xychart",
      [(f'sum by (job) (mlagpt_tokens_total{{{J},tp_rank="0"}})', "tokens"),
       (f"max by (job) (mlagpt_train_loss{{{J}}})", "train loss"),
       (f"max by (job) (mlagpt_eval_loss{{{J}}})", "validation loss")],
      None, "Training and validation loss (nats per token) against tokens trained, joined by scrape time",
      extra={"transformations": [{"id": "joinByField", "options": {"byField": "Time", "mode": "outer"}}],
             # Grafana 10's XY chart options (frame index, field names); Grafana 11 migrates panels of this version.
             "pluginVersion": "10.4.0",
             "options": {"seriesMapping": "manual",
                         "series": [{"name": "train loss", "frame": 0, "x": "tokens", "y": "train loss"},
                                    {"name": "validation loss", "frame": 0, "x": "tokens", "y": "validation loss"}],
                         "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                         "tooltip": {"mode": "single"}}})
panel("Loss over time", "timeseries",
      [(f"max by (job) (mlagpt_train_loss{{{J}}})", "{{job}} train"),
       (f"max by (job) (mlagpt_eval_loss{{{J}}})", "{{job}} validation")], None,
      "Training loss of the last step and validation loss of the last evaluation (nats per token)")
row("Throughput")
panel("Tokens/s per rank", "timeseries",
      [(f"rate(mlagpt_tokens_total{{{JR}}}[{RI}])", "{{job}} rank {{rank}}")], "short",
      "Tokens each rank's data-parallel replica processed per second")
panel("Tokens/s, whole job", "timeseries",
      [(f'sum by (job) (rate(mlagpt_tokens_total{{{J},tp_rank="0"}}[{RI}]))', "{{job}}")], "short",
      "Training tokens per second of the job: the replicas' sum")
panel("Step time p50 / p95", "timeseries",
      [(f"histogram_quantile(0.5, sum by (job, le) (rate(mlagpt_step_seconds_bucket{{{JR}}}[{RI}])))", "{{job}} p50"),
       (f"histogram_quantile(0.95, sum by (job, le) (rate(mlagpt_step_seconds_bucket{{{JR}}}[{RI}])))", "{{job}} p95")],
      "s", "Quantiles of the step-time histogram (buckets 1.5x apart)")
panel("MFU", "timeseries", [(f"mlagpt_mfu_ratio{{{JR}}}", "{{job}} rank {{rank}}")], "percentunit",
      "Model FLOPs utilization: model FLOPs per second / peak FLOP/s of the job's devices (monitoring.peak_flops)")
row("Optimization")
panel("Gradient norm", "timeseries", [(f"max by (job) (mlagpt_grad_norm{{{J}}})", "{{job}}")], None,
      "Global gradient norm of the last step, before clipping")
panel("Learning rate", "timeseries", [(f"max by (job) (mlagpt_learning_rate{{{J}}})", "{{job}}")], None,
      "Learning rate of the last step")
row("Stragglers")
panel("Communication share of step time", "timeseries",
      [(f"sum by (job, rank) (rate(mlagpt_collective_seconds_total{{{JR}}}[{RI}])) / "
        f"sum by (job, rank) (rate(mlagpt_step_seconds_sum{{{JR}}}[{RI}]))", "{{job}} rank {{rank}}")],
      "percentunit",
      "Host time blocked in collectives (every group and kind) per second of training steps; a rank far below the "
      "others is the one they wait for")
panel("Data-wait share of step time", "timeseries",
      [(f"sum by (job, rank) (rate(mlagpt_data_wait_seconds_total{{{JR}}}[{RI}])) / "
        f"sum by (job, rank) (rate(mlagpt_step_seconds_sum{{{JR}}}[{RI}]))", "{{job}} rank {{rank}}")],
      "percentunit", "Time waiting for the data loader's next batch per second of training steps")
panel("Collective time by group and kind", "timeseries",
      [(f"sum by (job, rank, group, op) (rate(mlagpt_collective_seconds_total{{{JR}}}[{RI}]))",
        "{{job}} rank {{rank}} {{group}} {{op}}")], "s",
      "Seconds per second blocked in each kind of collective")
panel("Collective bytes by group and kind", "timeseries",
      [(f"sum by (job, rank, group, op) (rate(mlagpt_collective_bytes_total{{{JR}}}[{RI}]))",
        "{{job}} rank {{rank}} {{group}} {{op}}")], "Bps", "Bytes of the collectives' tensors per second")
row("Memory")
panel("Device memory", "timeseries",
      [(f"mlagpt_device_memory_allocated_bytes{{{JR}}}", "{{job}} rank {{rank}} allocated"),
       (f"mlagpt_device_memory_reserved_bytes{{{JR}}}", "{{job}} rank {{rank}} reserved"),
       (f"mlagpt_device_memory_peak_bytes{{{JR}}}", "{{job}} rank {{rank}} peak")], "bytes",
      "CUDA: the caching allocator's allocated, reserved and peak allocated bytes. CPU: malloc's bytes in use, the "
      "resident set and its peak", w=24)
row("Checkpoints and compression")
panel("Checkpoint save time", "timeseries",
      [(f"mlagpt_checkpoint_save_seconds{{{JR}}}", "{{job}} rank {{rank}}")], "s",
      "Wall time of each rank's last checkpoint save")
panel("Checkpoint bytes written", "timeseries",
      [(f"mlagpt_checkpoint_written_bytes_total{{{JR}}}", "{{job}} rank {{rank}}")], "bytes",
      "Checkpoint bytes each rank has written")
panel("Compression time", "timeseries",
      [(f"mlagpt_compression_seconds{{{JR}}}", "{{job}} rank {{rank}}")], "s",
      "Wall time of each rank's last compression pass")
panel("Compression error by layer", "timeseries",
      [(f"max by (job, layer) (mlagpt_compressed_layer_relative_error_ratio{{{J}}})", "{{job}} {{layer}}")],
      "percentunit", "Relative Frobenius error of each projection's last compression")

# Lay the panels out: rows span the width, others fill rows of 24 columns.
x = y = 0
row_h = 0
for p in panels:
    g = p["gridPos"]
    if p["type"] == "row":
        if x:
            y += row_h
        x, row_h = 0, 0
        g["x"], g["y"] = 0, y
        y += 1
        continue
    if x + g["w"] > 24:
        x, y = 0, y + row_h
        row_h = 0
    g["x"], g["y"] = x, y
    x += g["w"]
    row_h = max(row_h, g["h"])

dashboard = {
    "__inputs": [],
    "uid": "mlagpt-training",
    "title": "mlagpt training",
    "description": "A multi-rank mlagpt training run: loss, throughput, step time, MFU, optimization, stragglers, "
                   "memory, checkpoints and compression (docs/design.md, \"Metrics\")",
    "tags": ["mlagpt"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "refresh": "10s",
    "time": {"from": "now-1h", "to": "now"},
    "templating": {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0},
        {"name": "job", "label": "Run", "type": "query", "datasource": DS,
         "query": {"query": "label_values(mlagpt_build_info, job)", "refId": "job"},
         "definition": "label_values(mlagpt_build_info, job)", "refresh": 2, "multi": True, "includeAll": True,
         "allValue": ".*", "current": {}, "sort": 1, "hide": 0},
        {"name": "rank", "label": "Rank", "type": "query", "datasource": DS,
         "query": {"query": 'label_values(mlagpt_build_info{job=~"$job"}, rank)', "refId": "rank"},
         "definition": 'label_values(mlagpt_build_info{job=~"$job"}, rank)', "refresh": 2, "multi": True,
         "includeAll": True, "allValue": ".*", "current": {}, "sort": 3, "hide": 0},
    ]},
    "annotations": {"list": []},
    "panels": panels,
}
print(json.dumps(dashboard, indent=2))
