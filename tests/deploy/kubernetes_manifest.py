#!/usr/bin/env python3
"""deploy.kubernetes_manifest: deploy/kubernetes/ against what netwatcher says it needs.

Runs the real binary's --check with the ConfigMap's netwatcher.toml (which
must load every plugin it enables) and holds the DaemonSet to the
"requires" list --check prints: every capability added (and the pod not
privileged), every host path mounted from the host at the same place, the
host's PID and network namespaces. Then the ConfigMap, the ports, the
Prometheus annotations, the PodMonitor and the kustomization must agree.
No cluster runs here (deploy/kubernetes/README.md says so): this is what
can be checked without one.

    kubernetes_manifest.py <netwatcher binary> <source dir>
"""
import fcntl
import os
import re
import subprocess
import sys
import tempfile

import yaml

binary, source_dir = sys.argv[1], sys.argv[2]
folder = os.path.join(source_dir, "deploy", "kubernetes")
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def load(name):
    with open(os.path.join(folder, name)) as f:
        return yaml.safe_load(f)


configmap = load("configmap.yaml")
daemonset = load("daemonset.yaml")
podmonitor = load("podmonitor.yaml")
kustomization = load("kustomization.yaml")
config_text = configmap["data"]["netwatcher.toml"]

# --check with the ConfigMap's config; one netwatcher on the machine at a time.
if os.geteuid() != 0:
    sys.exit("deploy.kubernetes_manifest: --check needs root (CI runs as root)")
with open("/run/netwatcher-integration.lock", "w") as lock, tempfile.TemporaryDirectory() as work:
    fcntl.flock(lock, fcntl.LOCK_EX)
    config_path = os.path.join(work, "netwatcher.toml")
    with open(config_path, "w") as f:
        f.write(config_text)
    result = subprocess.run([binary, "--config", config_path, "--check"], capture_output=True,
                            text=True)
if result.returncode != 0:
    sys.exit("deploy.kubernetes_manifest: --check with the ConfigMap's config failed:\n" +
             result.stdout + result.stderr)
requires, in_requires = [], False
for line in result.stdout.splitlines():
    if line.startswith("requires"):
        in_requires = True
    elif in_requires and line.startswith("  "):
        kind, rest = line.split(None, 1)
        requires.append((kind, rest))
    elif in_requires:
        break
check(requires, "--check printed no 'requires' list")
capabilities = [rest.split()[0] for kind, rest in requires if kind == "capability"]
paths = [rest.split()[0] for kind, rest in requires if kind == "path"]
namespaces = [rest.split()[0] for kind, rest in requires if kind == "namespace"]
check(len(capabilities) >= 3 and len(paths) >= 3, f"implausible requires list: {requires}")

check(daemonset["kind"] == "DaemonSet", "daemonset.yaml is not a DaemonSet")
pod = daemonset["spec"]["template"]["spec"]
pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
check(daemonset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(),
      "the DaemonSet's selector does not select its pods")
check(("pid" in namespaces) == bool(pod.get("hostPID")), "hostPID does not follow --check")
check(("net" in namespaces) == bool(pod.get("hostNetwork")), "hostNetwork does not follow --check")
containers = pod["containers"]
check(len(containers) == 1, "one container expected")
container = containers[0]
security = container.get("securityContext", {})
check(not security.get("privileged", False), "the container must not be privileged")
added = {"CAP_" + c for c in security.get("capabilities", {}).get("add", [])}
for capability in capabilities:
    check(capability in added, f"capability {capability} (--check requires it) is not added")
for capability in sorted(added - set(capabilities)):
    check(False, f"capability {capability} is added but --check does not require it")
check("ALL" in security.get("capabilities", {}).get("drop", []), "the other capabilities are kept")

host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
mounts = {m["name"]: m for m in container["volumeMounts"]}
for path in paths:
    covered = [
        name for name, host in host_paths.items()
        if (path == host or path.startswith(host.rstrip("/") + "/")) and name in mounts and
        mounts[name]["mountPath"] == host
    ]
    # cgroup v2 may sit below /sys/fs/cgroup on a hybrid host; nodes mount it there.
    if not covered and path.startswith("/sys/fs/cgroup/"):
        covered = [n for n, h in host_paths.items() if h == "/sys/fs/cgroup" and n in mounts]
    check(covered, f"host path {path} (--check requires it) is not mounted from the host")

# The config: mounted where the args say, the key the args name.
args = container.get("args", [])
check("--config" in args, "the container does not pass --config")
config_arg = args[args.index("--config") + 1] if "--config" in args else ""
config_volumes = [v["name"] for v in pod["volumes"]
                  if v.get("configMap", {}).get("name") == configmap["metadata"]["name"]]
check(config_volumes, "the ConfigMap is not a volume")
for name in config_volumes:
    check(os.path.join(mounts[name]["mountPath"], "netwatcher.toml") == config_arg,
          f"--config {config_arg} is not the ConfigMap's netwatcher.toml")
check(configmap["metadata"]["namespace"] == daemonset["metadata"]["namespace"],
      "the ConfigMap and the DaemonSet are in different namespaces")

# The endpoint: the config's port is the container's, the annotations' and the monitor's.
listen = re.search(r'listen\s*=\s*"([^"]*):(\d+)"', config_text)
check(listen, "the ConfigMap's config has no prometheus listen address")
if listen:
    check(listen.group(1) in ("0.0.0.0", "[::]", ""),
          f"the endpoint listens on {listen.group(1)}: unreachable for Prometheus")
    port = int(listen.group(2))
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    check(ports.get("metrics") == port, f"container port 'metrics' is not {port}: {ports}")
    annotations = daemonset["spec"]["template"]["metadata"].get("annotations", {})
    check(annotations.get("prometheus.io/scrape") == "true", "no prometheus.io/scrape annotation")
    check(annotations.get("prometheus.io/port") == str(port), "prometheus.io/port is not the port")
    check(annotations.get("prometheus.io/path") == "/metrics", "prometheus.io/path is not /metrics")
for probe in ("readinessProbe", "livenessProbe"):
    check(container.get(probe, {}).get("httpGet", {}).get("port") == "metrics",
          f"{probe} does not ask the endpoint")
check(podmonitor["kind"] == "PodMonitor", "podmonitor.yaml is not a PodMonitor")
check(podmonitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(),
      "the PodMonitor does not select the pods")
check([e["port"] for e in podmonitor["spec"]["podMetricsEndpoints"]] == ["metrics"],
      "the PodMonitor does not scrape the 'metrics' port")

manifests = sorted(f for f in os.listdir(folder) if f.endswith(".yaml") and f != "kustomization.yaml")
check(sorted(kustomization["resources"]) == manifests,
      f"kustomization.yaml lists {kustomization['resources']}, the folder holds {manifests}")

if failures:
    sys.exit("deploy.kubernetes_manifest:\n  " + "\n  ".join(failures))
print(f"deploy.kubernetes_manifest: {len(capabilities)} capabilities, {len(paths)} host paths and "
      f"{len(namespaces)} host namespaces required and given; config, ports and monitor agree")
