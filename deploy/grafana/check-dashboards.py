#!/usr/bin/env python3
"""Keeps the Grafana dashboards honest (make check-dashboards).

For every dashboard JSON under deploy/grafana/dashboards/ it checks that the file parses,
that every flashstock_* metric named in a panel query or a template variable is one the Go
code (non-test files) defines with Name: "…" or NewDesc("…"), where a histogram may carry
its _bucket, _count or _sum suffix, that every panel and query uses the provisioned
Prometheus datasource by uid, that docker-compose.yml mounts the dashboards where the
provider reads them, and that every panel expression parses as PromQL (each,
with Grafana's variables filled in, as a recording rule for `promtool check rules`). It
exits 1 and names what is wrong otherwise.
"""
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy/grafana/dashboards"
DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
PROVIDER = ROOT / "deploy/grafana/provisioning/dashboards/flashstock.yml"
COMPOSE = ROOT / "docker-compose.yml"
METRIC = re.compile(r"\bflashstock_[a-z0-9_]*[a-z0-9]")


def defined_metrics():
    """Metric names the Go code defines, and which of them are histograms or summaries."""
    files = subprocess.run(["git", "ls-files", "*.go"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    names, histograms = set(), set()
    for f in files:
        if f.endswith("_test.go"):
            continue
        src = (ROOT / f).read_text()
        for kind, name in re.findall(r"(\w*)Opts\{\s*Name:\s*\"(flashstock_\w+)\"", src):
            names.add(name)
            if kind in ("Histogram", "Summary"):
                histograms.add(name)
        names.update(re.findall(r"NewDesc\(\s*\"(flashstock_\w+)\"", src))
    return names, histograms


def queries(node, path="$"):
    """Yields (where, text) for every query of a panel (expr) or template variable."""
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}.{k}"
            if k in ("expr", "definition") and isinstance(v, str):
                yield here, v
            elif k == "query" and isinstance(v, str):
                yield here, v
            elif k == "query" and isinstance(v, dict) and isinstance(v.get("query"), str):
                yield here + ".query", v["query"]
            else:
                yield from queries(v, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from queries(v, f"{path}[{i}]")


def datasource_uids(node, path="$"):
    """Yields (where, uid) for every datasource reference except Grafana's built-in one."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource" and isinstance(v, dict) and v.get("type") != "grafana":
                yield f"{path}.{k}", v.get("uid")
            elif k == "datasource" and isinstance(v, str):
                yield f"{path}.{k}", v
            else:
                yield from datasource_uids(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from datasource_uids(v, f"{path}[{i}]")


GRAFANA_VARS = [("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h"),
                ("$job", ".*"), ("$instance", ".*")]


def promql_errors(exprs):
    """Parses every (where, expr) with promtool; returns the failures."""
    if not exprs:
        return []
    if shutil.which("promtool") is None:
        return ["promtool not found (Debian package prometheus): cannot parse the expressions"]
    failures = []
    for where, expr in exprs:
        for var, value in GRAFANA_VARS:
            expr = expr.replace(var, value)
        if "$" in expr:
            failures.append(f"{where}: a Grafana variable this check does not know: {expr}")
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".yml") as tmp:
            json.dump({"groups": [{"name": "dashboard", "rules": [{"record": "dashboard:expr", "expr": expr}]}]}, tmp)
            tmp.flush()
            r = subprocess.run(["promtool", "check", "rules", tmp.name], capture_output=True, text=True)
        if r.returncode != 0:
            failures.append(f"{where}: not valid PromQL: {(r.stdout + r.stderr).strip().splitlines()[-1]}")
    return failures


def main():
    names, histograms = defined_metrics()
    if not names:
        sys.exit("check-dashboards: found no flashstock_* metric in the Go code; the pattern is stale")
    uids = re.findall(r"^\s*uid:\s*(\S+)", DATASOURCES.read_text(), re.M)
    if len(uids) != 1:
        sys.exit(f"check-dashboards: expected one datasource uid in {DATASOURCES.relative_to(ROOT)}, found {uids}")
    want_uid = uids[0]

    errors, files = [], sorted(DASHBOARDS.glob("*.json"))
    # The provider must read the directory compose mounts the dashboards at.
    paths = re.findall(r"^\s*path:\s*(\S+)", PROVIDER.read_text(), re.M)
    mount = f"./deploy/grafana/dashboards:{paths[0] if paths else '?'}:ro"
    if len(paths) != 1 or mount not in COMPOSE.read_text():
        errors.append(f"{COMPOSE.relative_to(ROOT)} does not mount {mount} ({PROVIDER.relative_to(ROOT)} reads {paths})")
    if not files:
        errors.append(f"no dashboard in {DASHBOARDS.relative_to(ROOT)}")
    for f in files:
        rel, before = f.relative_to(ROOT), len(errors)
        try:
            dash = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            errors.append(f"{rel}: not JSON: {e}")
            continue
        used, exprs = 0, []
        for where, text in queries(dash):
            if where.endswith(".expr"):
                exprs.append((where, text))
            for m in METRIC.findall(text):
                used += 1
                base = re.sub(r"_(bucket|count|sum)$", "", m)
                if m in names or (base != m and base in histograms):
                    continue
                errors.append(f"{rel} {where}: {m} is not a metric the Go code defines")
        errors.extend(f"{rel} {e}" for e in promql_errors(exprs))
        if used == 0:
            errors.append(f"{rel}: no query names a flashstock_* metric")
        for where, uid in datasource_uids(dash):
            if uid != want_uid:
                errors.append(f"{rel} {where}: datasource uid {uid!r}, want {want_uid!r} (provisioned)")
        if len(errors) == before:
            print(f"{rel}: {used} metric references, all defined in the Go code; {len(exprs)} expressions parse; datasource uid {want_uid}")
    for e in errors:
        print("check-dashboards:", e, file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
