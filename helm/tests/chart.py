"""Checks of Verdict's Helm chart, without a cluster or a helm binary.

    python helm/tests/chart.py VERDICT_BINARY

Lints the chart (strict), renders it offline with its defaults and with every
option on (helm's own Go SDK, through the helm-python-sdk package), validates
each Kubernetes object against the Kubernetes API schema (kubernetes-validate),
checks what the chart promises (grace period, secrets, probes, the alerts,
the rule files), and runs `verdict run --check-config` on the configuration
and rule files the chart renders, laid out as the image lays them out.
Exits non-zero with every failure listed.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
# An argon2 hash of a test password, as verdict-workbench-hash prints one.
ALICE_HASH = "$argon2id$v=19$m=19456,t=2,p=1$crwXQWQT7uh9PKak5Jiirw$pw9E5Ml9sbr6Gpk/UG4F3hpufRjCMgE14jJ3gSu0XoQ"
CHART = ROOT / "helm" / "verdict"
KUBERNETES = "1.30"
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def render(values):
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values)
    out = chart.render(values, name="risk", namespace="verdict", is_install=True)
    objects = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def validate(objects, label):
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus operator's CRDs; checked below
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except Exception as e:  # noqa: BLE001 - every schema error is a failure
            failures.append(f"{label}: {obj['kind']} {obj['metadata']['name']}: {e}")


def find(objects, kind, suffix=""):
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"].endswith(suffix):
            return obj
    return None


def check_config(binary, objects, bundle, env_extra, label):
    """Writes the rendered config and rules where the pod mounts them (under
    the test's folder) and asks the binary whether it would start."""
    config = find(objects, "ConfigMap", "-config")["data"]["verdict.toml"]
    work = pathlib.Path(tempfile.mkdtemp(prefix="verdict-chart-"))
    (work / "config").mkdir()
    (work / "config" / "verdict.toml").write_text(config)
    rules = find(objects, "ConfigMap", "-rules")
    sts = find(objects, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    if rules:
        volume = next(v for v in pod["volumes"] if v["name"] == "rules")
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "rules")
        for item in volume["configMap"]["items"]:
            target = pathlib.Path(mount["mountPath"]) / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rules["data"][item["key"]])
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERDICT_")}
    for var in pod["containers"][0]["env"]:
        env[var["name"]] = var.get("value", "from-a-secret")
    env.update(env_extra)
    run = subprocess.run(
        [binary, "run", "--check-config", "--config", str(work / "config" / "verdict.toml")],
        env=env,
        capture_output=True,
        text=True,
    )
    check(
        run.returncode == 0,
        f"{label}: verdict run --check-config refused the chart's configuration:\n"
        f"{run.stderr}\n--- verdict.toml ---\n{config}",
    )


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = sys.argv[1]

    report = helm.lint(str(CHART), strict=True)
    for m in report["messages"]:
        check(m["severity"] < 2, f"helm lint: {m['path']}: {m['error']}")
    check(not report["errors"], f"helm lint: {report['errors']}")

    # A bundle laid out as the image's /etc/verdict (see the Dockerfile).
    bundle = pathlib.Path(tempfile.mkdtemp(prefix="verdict-bundle-"))
    (bundle / "examples").symlink_to(ROOT / "examples")
    (bundle / "models").symlink_to(ROOT / "models")
    ort = os.environ.get("ORT_DYLIB_PATH", "")
    state = tempfile.mkdtemp(prefix="verdict-state-")
    local = {
        "image": {"bundle": str(bundle), "ortLibrary": ort or "/missing/libonnxruntime.so"},
        "persistence": {"mountPath": state},
    }

    # Defaults.
    objects = render({})
    validate(objects, "defaults")
    kinds = sorted(o["kind"] for o in objects)
    check(
        kinds
        == ["ConfigMap", "ConfigMap", "PodDisruptionBudget", "Service", "Service", "StatefulSet"],
        f"defaults render {kinds}",
    )
    dashboard = find(objects, "ConfigMap", "-dashboard")
    check(
        dashboard["metadata"]["labels"].get("grafana_dashboard") == "1",
        "the dashboard ConfigMap carries Grafana's sidecar label",
    )
    shipped = json.loads((CHART / "files" / "dashboard.json").read_text())
    check(
        json.loads(dashboard["data"]["verdict.json"]) == shipped,
        "the dashboard ConfigMap holds files/dashboard.json",
    )
    check(
        find(render({"metrics": {"dashboard": {"enabled": False}}}), "ConfigMap", "-dashboard")
        is None,
        "no dashboard when it is turned off",
    )
    sts = find(objects, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    check(pod["terminationGracePeriodSeconds"] == 45, "grace period: 30 s shutdown + 15 s")
    check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness on /readyz")
    check(container["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness on /healthz")
    config = find(objects, "ConfigMap", "-config")["data"]["verdict.toml"]
    check("lanes = 2\n" in config, "two lanes, as many as the CPUs requested")
    check(
        not any(e["name"] == "VERDICT_HTTP__ADMIN_TOKEN" for e in container["env"]),
        "no admin token unless one is given",
    )
    check(
        not any(e["name"] == "VERDICT_HTTP__ANALYST_TOKEN" for e in container["env"]),
        "no analyst token unless a Secret is named",
    )
    check_config(binary, render(local), bundle, {}, "defaults")

    # Every option on.
    rule_files = {}
    for path in sorted((ROOT / "examples" / "rules").rglob("*")):
        rel = path.relative_to(ROOT / "examples" / "rules").as_posix()
        if path.is_file() and not rel.startswith("tests/"):
            rule_files[rel] = path.read_text()
    rules_dir = tempfile.mkdtemp(prefix="verdict-rules-")
    full = {
        "replicaCount": 6,
        "kafka": {
            "brokers": "b1:9093,b2:9093",
            "exactlyOnce": True,
            "lanes": 2,
            "shutdownTimeoutMs": 60000,
            "consumerProperties": {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "verdict",
                "fetch.wait.max.ms": 5,
            },
            "producerProperties": {
                "linger.ms": 2,
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "verdict",
            },
            "secretProperties": {
                "sasl.password": {"secretName": "kafka-credentials", "key": "password"}
            },
        },
        "rules": {"files": rule_files, "mountPath": rules_dir},
        "admin": {"token": "s3cret"},
        "analyst": {"existingSecret": "verdict-analysts"},
        "persistence": {"enabled": True, "size": "20Gi"},
        "features": {
            "shared": {
                "kinds": ["device", "ip"],
                "address": "redis-0:6379, redis-1:6379,redis-2:6379",
                "cluster": True,
                "tls": True,
                "username": "verdict",
                "passwordSecret": {"name": "redis-credentials", "key": "password"},
            }
        },
        "metrics": {"podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "workbench": {
            "enabled": True,
            "users": [{"name": "alice", "role": "analyst", "passwordHash": ALICE_HASH}],
            "tlsSecret": "verdict-tls",
            "oidc": {
                "issuer": "https://login.example.com/realms/risk",
                "clientId": "verdict-workbench",
                "clientSecret": {"name": "verdict-oidc", "key": "client-secret"},
                "redirectUrl": "https://verdict.example.com/workbench/api/oidc/callback",
                "roles": {"risk-analysts": "analyst", "risk-approvers": "approver"},
            },
        },
    }
    objects = render(full)
    validate(objects, "every option")
    sts = find(objects, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    check(pod["terminationGracePeriodSeconds"] == 75, "grace period: 60 s shutdown + 15 s")
    token = env.get("VERDICT_HTTP__ADMIN_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
    check(token == {"name": "risk-verdict-admin", "key": "token"}, f"admin token ref {token}")
    secret = find(objects, "Secret", "-admin")
    check(secret is not None and secret["data"]["token"] == "czNjcmV0", "admin Secret")
    analyst = env.get("VERDICT_HTTP__ANALYST_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
    check(analyst == {"name": "verdict-analysts", "key": "token"}, f"analyst token ref {analyst}")
    for client in ("CONSUMER", "PRODUCER"):
        name = f"VERDICT_KAFKA__{client}_PROPERTIES__SASL.PASSWORD"
        ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef")
        check(ref == {"name": "kafka-credentials", "key": "password"}, f"{name}: {ref}")
    ref = env.get("VERDICT_FEATURES__SHARED__PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
    check(ref == {"name": "redis-credentials", "key": "password"}, f"Redis password ref {ref}")
    config = find(objects, "ConfigMap", "-config")["data"]["verdict.toml"]
    for line in [
        'device = "shared"',
        'ip = "shared"',
        'urls = ["rediss://redis-0:6379", "rediss://redis-1:6379", "rediss://redis-2:6379"]',
        "cluster = true",
        'username = "verdict"',
    ]:
        check(line in config, f"the shared store's configuration has {line!r}:\n{config}")
    check(
        "[features.shared]" not in find(render({}), "ConfigMap", "-config")["data"]["verdict.toml"],
        "no shared store by default",
    )
    check(sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state", "state PVC")
    check(
        not any(v["name"] == "state" for v in pod["volumes"]),
        "no emptyDir for state beside the PVC",
    )
    rules = find(objects, "ConfigMap", "-rules")
    items = next(v for v in pod["volumes"] if v["name"] == "rules")["configMap"]["items"]
    check(
        sorted(i["path"] for i in items) == sorted(rule_files),
        "every rule file mounted at its path",
    )
    check(
        all(rules["data"][i["key"]] == rule_files[i["path"]] for i in items),
        "rule files carried unchanged",
    )
    alerts = yaml.safe_load((CHART / "files" / "alerts.yml").read_text())
    rule = find(objects, "PrometheusRule")
    check(rule is not None and rule["spec"]["groups"] == alerts["groups"], "PrometheusRule = alerts.yml")
    monitor = find(objects, "PodMonitor")
    check(
        monitor is not None and monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics",
        "PodMonitor scrapes /metrics",
    )
    # The workbench: its configuration, the secrets it reads, TLS on the
    # port and its probes, one replica per browser.
    for line in [
        "[workbench]",
        'name = "alice"',
        'brokers = "b1:9093,b2:9093"',
        'topic = "verdict.rulesets"',
        '"security.protocol" = "SASL_SSL"',
        'cert = "/etc/verdict-tls/tls.crt"',
        'issuer = "https://login.example.com/realms/risk"',
        '"risk-approvers" = "approver"',
    ]:
        check(line in config, f"the workbench's configuration has {line!r}:\n{config}")
    for name, ref in [
        ("VERDICT_WORKBENCH__OIDC__CLIENT_SECRET", {"name": "verdict-oidc", "key": "client-secret"}),
        (
            "VERDICT_WORKBENCH__VERSIONS__KAFKA__PROPERTIES__SASL.PASSWORD",
            {"name": "kafka-credentials", "key": "password"},
        ),
    ]:
        got = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef")
        check(got == ref, f"{name}: {got}")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        check(container[probe]["httpGet"].get("scheme") == "HTTPS", f"{probe} over HTTPS")
    tls = next((v for v in pod["volumes"] if v["name"] == "tls"), None)
    check(tls == {"name": "tls", "secret": {"secretName": "verdict-tls"}}, f"TLS volume {tls}")
    check(monitor["spec"]["podMetricsEndpoints"][0].get("scheme") == "https", "PodMonitor over HTTPS")
    service = find(objects, "Service")
    check(service["spec"].get("sessionAffinity") == "ClientIP", "a browser keeps to one replica")
    defaults = render({})
    check(
        "[workbench]" not in find(defaults, "ConfigMap", "-config")["data"]["verdict.toml"]
        and "sessionAffinity" not in find(defaults, "Service")["spec"],
        "no workbench by default",
    )
    check_config(
        binary,
        render({**full, **local, "kafka": {**full["kafka"], "brokers": "127.0.0.1:9"}}),
        bundle,
        {},
        "every option",
    )

    # Values the schema refuses.
    for bad, what in [
        ({"kafka": {"brokers": ""}}, "empty brokers"),
        ({"service": {"port": 0}}, "port 0"),
        ({"rules": {"files": {"../escape.rules": "x"}}}, "a rule path leaving the folder"),
        ({"kafka": {"secretProperties": {"sasl.password": {"secretName": "s"}}}}, "a secret without key"),
    ]:
        try:
            render(bad)
            failures.append(f"the schema accepted {what}")
        except helm.HelmError:
            pass

    if failures:
        print(f"{len(failures)} chart check(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"- {f}", file=sys.stderr)
        sys.exit(1)
    print("chart: lint, render, Kubernetes schema, values schema and --check-config all pass")


if __name__ == "__main__":
    main()
