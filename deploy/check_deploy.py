"""Offline checks of the deployment files (run by deploy/test.sh).

The Kubernetes manifests (deploy/kubernetes, one server; deploy/kubernetes-shared,
receivers and workers on PostgreSQL) are parsed as YAML (PyYAML) and the fields that the
server's rules depend on are asserted: one writer per data directory, the
probes on the right paths and port, the secret from a Secret, the admin port
for Prometheus. The Containerfile and the systemd unit are read as text and
held to the same rules. `python3 deploy/check_deploy.py -v`; with
`--print-configmap-config` it prints the ConfigMap's config.toml instead.
"""

import re
import shlex
import sys
import unittest
from fnmatch import fnmatch
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
K8S = DEPLOY / "kubernetes"
DATA_DIR = "/var/lib/whereby-trigger"
CONFIG = "/etc/whereby-trigger/config.toml"
WEBHOOK_PORT = 8080
ADMIN_PORT = 9090


def load_manifests():
    """Every document of every YAML file in deploy/kubernetes, by file."""
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        with path.open() as f:
            out[path.name] = [d for d in yaml.safe_load_all(f) if d is not None]
    return out


def find(kind, name=None):
    found = [
        d
        for docs in load_manifests().values()
        for d in docs
        if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]
    return found


def flag(args, name):
    """The value after `name` (or in `name=value`) in an argument list."""
    for i, a in enumerate(args):
        if a == name:
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


class Kubernetes(unittest.TestCase):
    def setUp(self):
        deployments = find("Deployment")
        self.assertEqual(len(deployments), 1, "one Deployment")
        self.dep = deployments[0]
        self.pod = self.dep["spec"]["template"]
        containers = self.pod["spec"]["containers"]
        self.assertEqual(len(containers), 1)
        self.c = containers[0]
        self.ports = {p["name"]: p["containerPort"] for p in self.c["ports"]}

    def port_number(self, port):
        return self.ports[port] if isinstance(port, str) else port

    def test_every_document_names_itself(self):
        for file, docs in load_manifests().items():
            self.assertTrue(docs, f"{file} is empty")
            if file == "kustomization.yaml":
                continue
            for d in docs:
                for key in ("apiVersion", "kind", "metadata"):
                    self.assertIn(key, d, f"{file}: {key}")
                self.assertTrue(d["metadata"].get("name"), f"{file}: metadata.name")

    def test_one_writer_per_data_directory(self):
        spec = self.dep["spec"]
        self.assertEqual(spec["replicas"], 1)
        self.assertEqual(spec["strategy"]["type"], "Recreate")
        self.assertNotIn("rollingUpdate", spec["strategy"])

    def test_data_directory_is_a_persistent_volume_claim(self):
        mounts = {m["mountPath"]: m["name"] for m in self.c["volumeMounts"]}
        self.assertEqual(flag(self.c["args"], "--data-dir"), DATA_DIR)
        volumes = {v["name"]: v for v in self.pod["spec"]["volumes"]}
        claim = volumes[mounts[DATA_DIR]]["persistentVolumeClaim"]["claimName"]
        (pvc,) = find("PersistentVolumeClaim", claim)
        self.assertEqual(pvc["spec"]["accessModes"], ["ReadWriteOnce"])
        self.assertIn("storage", pvc["spec"]["resources"]["requests"])

    def test_probes(self):
        probes = {
            "livenessProbe": "/healthz",
            "readinessProbe": "/readyz",
            "startupProbe": "/healthz",
        }
        for probe, path in probes.items():
            get = self.c[probe]["httpGet"]
            self.assertEqual(get["path"], path, probe)
            self.assertEqual(self.port_number(get["port"]), WEBHOOK_PORT, probe)
        self.assertEqual(int(flag(self.c["args"], "--port")), WEBHOOK_PORT)

    def test_admin_port_scraped_by_prometheus(self):
        notes = self.pod["metadata"]["annotations"]
        self.assertEqual(notes["prometheus.io/scrape"], "true")
        self.assertEqual(notes["prometheus.io/path"], "/metrics")
        self.assertEqual(int(notes["prometheus.io/port"]), ADMIN_PORT)
        self.assertEqual(self.ports["admin"], ADMIN_PORT)
        # Inside a pod the admin listener must bind beyond loopback to be scraped.
        self.assertEqual(flag(self.c["args"], "--admin-bind"), f"0.0.0.0:{ADMIN_PORT}")

    def test_secret_from_a_secret(self):
        env = {e["name"]: e for e in self.c["env"]}
        ref = env["WHEREBY_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]
        self.assertNotIn("value", env["WHEREBY_WEBHOOK_SECRET"])
        (secret,) = find("Secret", ref["name"])
        self.assertIn(ref["key"], secret["stringData"])
        self.assertNotIn("secret.example.yaml", kustomization()["resources"])
        for e in self.c["env"]:
            self.assertNotRegex(str(e.get("value", "")), r"whsec_", "no secret inline")

    def test_config_from_the_config_map(self):
        self.assertEqual(flag(self.c["args"], "--config"), CONFIG)
        mounts = {m["name"]: m for m in self.c["volumeMounts"]}
        volumes = {v["name"]: v for v in self.pod["spec"]["volumes"]}
        (name,) = [n for n, v in volumes.items() if "configMap" in v]
        self.assertEqual(mounts[name]["mountPath"], str(Path(CONFIG).parent))
        (cm,) = find("ConfigMap", volumes[name]["configMap"]["name"])
        self.assertIn(Path(CONFIG).name, cm["data"])

    def test_runs_unprivileged(self):
        pod = self.pod["spec"]["securityContext"]
        self.assertTrue(pod["runAsNonRoot"])
        self.assertNotEqual(pod["runAsUser"], 0)
        c = self.c["securityContext"]
        self.assertFalse(c["allowPrivilegeEscalation"])
        self.assertEqual(c["capabilities"]["drop"], ["ALL"])

    def test_service_reaches_the_webhook_port_only(self):
        (svc,) = find("Service")
        labels = self.pod["metadata"]["labels"]
        for k, v in svc["spec"]["selector"].items():
            self.assertEqual(labels.get(k), v)
        self.assertEqual(self.dep["spec"]["selector"]["matchLabels"], svc["spec"]["selector"])
        targets = [self.port_number(p["targetPort"]) for p in svc["spec"]["ports"]]
        self.assertEqual(targets, [WEBHOOK_PORT])

    def test_kustomization_lists_existing_files(self):
        for res in kustomization()["resources"]:
            self.assertTrue((K8S / res).is_file(), res)
        listed = set(kustomization()["resources"])
        for path in K8S.glob("*.yaml"):
            if path.name not in ("kustomization.yaml", "secret.example.yaml"):
                self.assertIn(path.name, listed)


def kustomization(directory=None):
    with ((directory or K8S) / "kustomization.yaml").open() as f:
        return yaml.safe_load(f)


SHARED = DEPLOY / "kubernetes-shared"


def shared_manifests():
    """Every document of deploy/kubernetes-shared, by kind and name."""
    out = {}
    for path in sorted(SHARED.glob("*.yaml")):
        with path.open() as f:
            for d in yaml.safe_load_all(f):
                if d is not None and "kind" in d and d.get("kind") != "Kustomization":
                    out[(d["kind"], d["metadata"]["name"])] = d
    return out


class SharedKubernetes(unittest.TestCase):
    """Receivers and workers on one PostgreSQL database."""

    def setUp(self):
        m = shared_manifests()
        self.receiver = m[("Deployment", "whereby-trigger-receiver")]
        self.worker = m[("Deployment", "whereby-trigger-worker")]
        self.service = m[("Service", "whereby-trigger")]
        self.secret = yaml.safe_load((SHARED / "secret.example.yaml").read_text())
        self.m = m

    @staticmethod
    def container(dep):
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        return c

    def test_receivers_only_receive_and_workers_only_work(self):
        r = self.container(self.receiver)["args"]
        w = self.container(self.worker)["args"]
        self.assertEqual(r[0], "serve")
        self.assertIn("--no-actions", r)
        self.assertEqual(w[0], "worker")
        for args in (r, w):
            self.assertEqual(flag(args, "--config"), CONFIG)
            self.assertIsNone(flag(args, "--data-dir"), "the database is the store")
            self.assertEqual(flag(args, "--admin-bind"), f"0.0.0.0:{ADMIN_PORT}")

    def test_several_of_each_and_no_volume(self):
        for dep in (self.receiver, self.worker):
            self.assertGreaterEqual(dep["spec"]["replicas"], 2)
            self.assertEqual(dep["spec"]["strategy"]["type"], "RollingUpdate")
            volumes = dep["spec"]["template"]["spec"]["volumes"]
            self.assertFalse(any("persistentVolumeClaim" in v for v in volumes))

    def test_database_url_and_node_name(self):
        for dep in (self.receiver, self.worker):
            env = {e["name"]: e for e in self.container(dep)["env"]}
            ref = env["WHEREBY_TRIGGER_STORE_URL"]["valueFrom"]["secretKeyRef"]
            self.assertEqual(ref["name"], self.secret["metadata"]["name"])
            self.assertIn(ref["key"], self.secret["stringData"])
            node = env["WHEREBY_TRIGGER_NODE_ID"]["valueFrom"]["fieldRef"]
            self.assertEqual(node["fieldPath"], "metadata.name")
            for e in env.values():
                self.assertNotRegex(str(e.get("value", "")), r"whsec_|postgres://")
        receiver_env = {e["name"] for e in self.container(self.receiver)["env"]}
        self.assertIn("WHEREBY_WEBHOOK_SECRET", receiver_env)

    def test_probes(self):
        for dep in (self.receiver, self.worker):
            c = self.container(dep)
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
            self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/healthz")
            self.assertEqual(ports[c["readinessProbe"]["httpGet"]["port"]], WEBHOOK_PORT)
            self.assertEqual(int(flag(c["args"], "--port")), WEBHOOK_PORT)

    def test_the_service_reaches_receivers_only(self):
        selector = self.service["spec"]["selector"]
        def selected(dep):
            labels = dep["spec"]["template"]["metadata"]["labels"]
            return all(labels.get(k) == v for k, v in selector.items())
        self.assertTrue(selected(self.receiver))
        self.assertFalse(selected(self.worker))

    def test_kustomization_lists_existing_files(self):
        listed = kustomization(SHARED)["resources"]
        self.assertNotIn("secret.example.yaml", listed)
        for res in listed:
            self.assertTrue((SHARED / res).is_file(), res)
        for path in SHARED.glob("*.yaml"):
            if path.name not in ("kustomization.yaml", "secret.example.yaml"):
                self.assertIn(path.name, listed)


def configmap_config():
    (cm,) = find("ConfigMap", "whereby-trigger-config")
    return cm["data"]["config.toml"]


def containerfile():
    """The Containerfile's instructions: (KEYWORD, arguments), continuations joined."""
    text = (DEPLOY / "Containerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(instructions):
    result = []
    for word, rest in instructions:
        if word == "FROM":
            result.append([])
        if result:
            result[-1].append((word, rest))
    return result


def exec_form(rest):
    return yaml.safe_load(rest)  # a JSON array is YAML too


class Container(unittest.TestCase):
    def setUp(self):
        self.ins = containerfile()
        self.stages = stages(self.ins)
        self.runtime = dict()
        for word, rest in self.stages[-1]:
            self.runtime.setdefault(word, []).append(rest)

    def test_multi_stage(self):
        self.assertGreaterEqual(len(self.stages), 2)
        self.assertTrue(any("--from=build" in r for r in self.runtime["COPY"]))
        self.assertTrue(
            any("cargo build --release --locked" in rest for _, rest in self.stages[0])
        )

    def test_non_root(self):
        (user,) = self.runtime["USER"]
        self.assertNotIn(user.split(":")[0], ("0", "root"))

    def test_data_directory_is_a_volume(self):
        (volume,) = self.runtime["VOLUME"]
        self.assertEqual(exec_form(volume), [DATA_DIR])
        cmd = exec_form(self.runtime["CMD"][0])
        self.assertEqual(flag(cmd, "--data-dir"), DATA_DIR)
        self.assertEqual(flag(cmd, "--config"), CONFIG)
        self.assertEqual(flag(cmd, "--admin-bind"), f"0.0.0.0:{ADMIN_PORT}")

    def test_ports_and_health_check(self):
        (expose,) = self.runtime["EXPOSE"]
        self.assertEqual(sorted(int(p) for p in expose.split()), [WEBHOOK_PORT, ADMIN_PORT])
        (health,) = self.runtime["HEALTHCHECK"]
        self.assertIn(f"/dev/tcp/127.0.0.1/{WEBHOOK_PORT}", health)
        self.assertIn("GET /healthz", health)

    def test_context_sends_no_build_output(self):
        ignore = (ROOT / ".dockerignore").read_text().split()
        for needed in ("target", ".git", "fuzz"):
            self.assertIn(needed, ignore)
        # Every file the Containerfile copies is in the context.
        for word, rest in self.ins:
            if word != "COPY" or "--from=" in rest:
                continue
            sources = shlex.split(rest)[:-1]
            for src in sources:
                self.assertTrue((ROOT / src).exists(), src)
                for pattern in ignore:
                    self.assertFalse(fnmatch(src, pattern) or src.startswith(pattern + "/"), src)


def unit():
    """The unit's settings: {key: [values]} (comments dropped)."""
    out = {}
    for line in (DEPLOY / "whereby-trigger.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


class Systemd(unittest.TestCase):
    def test_sandboxing(self):
        u = unit()
        required = {
            "DynamicUser": "yes",
            "StateDirectory": "whereby-trigger",
            "ProtectSystem": "strict",
            "NoNewPrivileges": "yes",
            "Restart": "on-failure",
            "PrivateTmp": "yes",
            "CapabilityBoundingSet": "",
        }
        for key, value in required.items():
            self.assertEqual(u.get(key), [value], key)

    def test_data_dir_is_the_state_directory(self):
        args = shlex.split(unit()["ExecStart"][0])
        self.assertEqual(flag(args, "--data-dir"), "%S/whereby-trigger")
        self.assertEqual(flag(args, "--config"), "%E/whereby-trigger/config.toml")

    def test_secret_from_a_root_only_file(self):
        u = unit()
        self.assertEqual(u["EnvironmentFile"], ["/etc/whereby-trigger/secret.env"])
        self.assertNotIn("whsec_", (DEPLOY / "whereby-trigger.service").read_text().replace(
            "WHEREBY_WEBHOOK_SECRET=whsec_…", ""))


if __name__ == "__main__":
    if sys.argv[1:] == ["--print-configmap-config"]:
        sys.stdout.write(configmap_config())
        sys.exit(0)
    if sys.argv[1:] == ["--print-shared-configmap-config"]:
        cm = shared_manifests()[("ConfigMap", "whereby-trigger-config")]
        sys.stdout.write(cm["data"]["config.toml"])
        sys.exit(0)
    unittest.main()
