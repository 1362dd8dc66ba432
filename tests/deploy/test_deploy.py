#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
# Checks deploy/ against the real server, without a cluster or a Docker engine:
#   - every YAML under deploy/ loads; kustomizations name files that exist;
#   - the Deployment's ports, probes, args and grace period agree with the cluster config, the
#     server's flags (`lychee-server --help`) and its HTTP routes (server/http/side_routes.cc);
#   - the ConfigMap's config uses only keys of configs/default.yaml and the real lychee-server
#     starts with it;
#   - every lychee_* metric (and label) named in deploy/prometheus, deploy/grafana and the
#     autoscalers is in a real /metrics scrape of that server;
#   - the PrometheusRule is the generated form of lychee-rules.yml; the Dockerfile's runtime
#     packages cover the libraries of build/bin;
#   - `kubectl kustomize` renders both overlays (skipped when kubectl is not installed).
# Run by CTest with /usr/bin/python3 (Debian's python3-yaml); LYCHEE_BIN_DIR points to build/bin.
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BIN_DIR = pathlib.Path(os.environ.get("LYCHEE_BIN_DIR", ROOT / "build" / "bin")).resolve()
SERVER = BIN_DIR / "lychee-server"
# Labels Prometheus (scrape, Kubernetes discovery, Operator) adds; not in the exposition.
SCRAPE_LABELS = {"namespace", "pod", "job", "instance", "service", "container", "endpoint", "le"}


def load_yaml_docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def deploy_yaml_files():
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def base_config_path():
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    (gen,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "lychee-config"]
    (entry,) = gen["files"]
    key, _, file = entry.partition("=")
    return key, K8S / "base" / file


def deployment():
    (doc,) = load_yaml_docs(K8S / "base" / "deployment.yaml")
    assert doc["kind"] == "Deployment"
    return doc


def server_container(dep):
    (c,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "lychee-server"]
    return c


class Server:
    """build/bin/lychee-server on loopback with the cluster config, ports 0."""

    def __init__(self, config):
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [str(SERVER), "--config", str(config), "--grpc-port", "0", "--http-port", "0",
             "--host", "127.0.0.1"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        deadline = time.time() + 60
        self.http = None
        while time.time() < deadline and self.http is None:
            if self.proc.poll() is not None:
                raise RuntimeError("lychee-server exited: " + self.output())
            m = re.search(r"lychee-server: http listening on ([\d.]+:\d+)", self.output())
            if m and "grpc listening on" in self.output():
                self.http = m.group(1)
            time.sleep(0.1)
        if self.http is None:
            self.stop()
            raise RuntimeError("lychee-server did not start: " + self.output())

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def get(self, path, body=None):
        req = urllib.request.Request(f"http://{self.http}{path}", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def parse_exposition(text):
    """{family: set(label names)} from Prometheus text format; histogram series fold into it."""
    families, types = {}, {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            types[m.group(1)] = m.group(2)
            families.setdefault(m.group(1), set())
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?", line)
        name, labels = m.group(1), m.group(3) or ""
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
                name = name[: -len(suffix)]
        families.setdefault(name, set()).update(re.findall(r'([a-zA-Z_]\w*)="', labels))
    return families, types


class DeployTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.config_key, cls.config_path = base_config_path()
        cls.config = yaml.safe_load(cls.config_path.read_text())
        cls.default = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
        cls.server = Server(cls.config_path)
        # One request, so the per-request families have labelled series (policy, finished_reason).
        status, body = cls.server.get(
            "/v1/completions",
            json.dumps({"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}).encode())
        assert status == 200, body
        status, cls.metrics_text = cls.server.get("/metrics")
        assert status == 200
        cls.families, cls.types = parse_exposition(cls.metrics_text)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    # --- files ------------------------------------------------------------------------------
    def test_every_yaml_loads(self):
        files = deploy_yaml_files()
        self.assertGreater(len(files), 10)
        for path in files:
            with self.subTest(path=str(path.relative_to(ROOT))):
                docs = load_yaml_docs(path)
                self.assertTrue(docs)
                for doc in docs:
                    self.assertIsInstance(doc, dict)
                    if path.is_relative_to(K8S) or path.parent.name == "operator":
                        if "kind" in doc and "Kustomization" not in doc["kind"] and doc["kind"] != "Component":
                            self.assertIn("apiVersion", doc)
                            self.assertIn("name", doc["metadata"])

    def test_kustomizations_name_existing_files(self):
        kustomizations = sorted(K8S.rglob("kustomization.yaml"))
        self.assertGreaterEqual(len(kustomizations), 5)
        for k in kustomizations:
            doc = yaml.safe_load(k.read_text())
            paths = list(doc.get("resources", [])) + list(doc.get("components", []))
            paths += [p["path"] for p in doc.get("patches", []) if "path" in p]
            for gen in doc.get("configMapGenerator", []):
                paths += [f.partition("=")[2] or f for f in gen.get("files", [])]
            for rel in paths:
                with self.subTest(kustomization=str(k.relative_to(ROOT)), path=rel):
                    self.assertTrue((k.parent / rel).exists())
        for overlay in ("cpu", "gpu"):
            self.assertTrue((K8S / "overlays" / overlay / "kustomization.yaml").exists())

    # --- config -----------------------------------------------------------------------------
    def test_configmap_keys_are_known(self):
        self.assertEqual(self.config_key, "config.yaml")
        unknown = set(self.config) - set(self.default)
        self.assertFalse(unknown, f"keys not in configs/default.yaml: {unknown}")
        # ... and the server's parser knows every key of configs/default.yaml.
        parser = (ROOT / "server" / "main" / "config.cc").read_text()
        parsed = set(re.findall(r'if \(key == "(\w+)"\)', parser))
        self.assertEqual(set(self.default), parsed)
        for key, value in self.config.items():
            if self.default[key] is not None and value is not None:
                with self.subTest(key=key):
                    self.assertIs(type(value), type(self.default[key]))

    def test_server_started_with_the_cluster_config(self):
        self.assertIn("on cpu", self.server.output())
        self.assertEqual(self.server.get("/health")[0], 200)
        self.assertEqual(self.server.get("/ready")[0], 200)

    # --- Deployment / Service ---------------------------------------------------------------
    def test_ports_match_config(self):
        c = server_container(deployment())
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(ports, {"grpc": self.config["grpc_port"], "http": self.config["http_port"]})
        self.assertEqual((ports["grpc"], ports["http"]), (50051, 8000))
        (svc,) = load_yaml_docs(K8S / "base" / "service.yaml")
        svc_ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
        self.assertEqual(svc_ports, {"grpc": (50051, "grpc"), "http": (8000, "http")})
        labels = deployment()["spec"]["template"]["metadata"]["labels"]
        for k, v in svc["spec"]["selector"].items():
            self.assertEqual(labels.get(k), v)
        dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
        for df in (dockerfile, (DEPLOY / "docker" / "Dockerfile.cuda").read_text()):
            m = re.search(r"^EXPOSE (.*)$", df, re.M)
            self.assertEqual(set(m.group(1).split()), {"50051", "8000"})
            self.assertRegex(df, r"HEALTHCHECK[^\n]*\n[^\n]*127\.0\.0\.1:8000/health")

    def test_probes_use_server_routes(self):
        routes = set(re.findall(r'router\.Add\("GET", "(/[\w/]*)"',
                                (ROOT / "server" / "http" / "side_routes.cc").read_text()))
        self.assertTrue({"/health", "/ready", "/metrics"} <= routes)
        c = server_container(deployment())
        port_names = {p["name"] for p in c["ports"]}
        expected = {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/ready"}
        for probe, path in expected.items():
            with self.subTest(probe=probe):
                get = c[probe]["httpGet"]
                self.assertEqual(get["path"], path)
                self.assertIn(get["path"], routes)
                self.assertIn(get["port"], port_names | {self.config["http_port"]})
                self.assertEqual(self.server.get(get["path"])[0], 200)
        # The startup probe covers model loading: at least 5 minutes.
        s = c["startupProbe"]
        self.assertGreaterEqual(s["periodSeconds"] * s["failureThreshold"], 300)

    def test_args_are_server_flags(self):
        dep = deployment()
        c = server_container(dep)
        help_text = subprocess.run([str(SERVER), "--help"], capture_output=True, text=True,
                                   check=True).stdout
        flags = set(re.findall(r"(--[a-z][a-z-]+)", help_text))
        for arg in c["args"]:
            if arg.startswith("--"):
                self.assertIn(arg, flags)
        config_file = c["args"][c["args"].index("--config") + 1]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        (vol,) = [n for n, v in volumes.items() if v.get("configMap", {}).get("name") == "lychee-config"]
        self.assertEqual(config_file, f"{mounts[vol]}/{self.config_key}")
        # Overlays' documented future flag exists too.
        self.assertIn("--device", flags)
        self.assertIn("--device cuda", " ".join(
            (K8S / "overlays" / "gpu" / f).read_text() for f in ("kustomization.yaml", "patch-gpu.yaml")
        ).replace('", "', " ").replace('"', ""))

    def test_termination_grace_covers_drain(self):
        spec = deployment()["spec"]["template"]["spec"]
        c = server_container(deployment())
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
        grace = self.config.get("shutdown_grace_seconds", self.default["shutdown_grace_seconds"])
        self.assertGreater(spec["terminationGracePeriodSeconds"], grace + sleep)

    def test_pdb_and_gpu_overlay(self):
        (pdb,) = load_yaml_docs(K8S / "base" / "pdb.yaml")
        self.assertEqual(pdb["kind"], "PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"],
                         deployment()["spec"]["selector"]["matchLabels"])
        self.assertLess(pdb["spec"]["maxUnavailable"], deployment()["spec"]["replicas"])
        (patch,) = load_yaml_docs(K8S / "overlays" / "gpu" / "patch-gpu.yaml")
        (c,) = patch["spec"]["template"]["spec"]["containers"]
        self.assertEqual(c["resources"]["limits"]["nvidia.com/gpu"], 1)
        self.assertTrue(patch["spec"]["template"]["spec"]["tolerations"])
        self.assertTrue(patch["spec"]["template"]["spec"]["nodeSelector"])

    # --- metrics ----------------------------------------------------------------------------
    def metric_files(self):
        files = [p for p in deploy_yaml_files()
                 if p.is_relative_to(DEPLOY / "prometheus") or p.is_relative_to(K8S / "components")]
        files.append(DEPLOY / "grafana" / "lychee-dashboard.json")
        return files

    def test_referenced_metrics_exist(self):
        referenced = {}
        for path in self.metric_files():
            text = path.read_text()
            if path.name.endswith(".test.yml"):
                continue  # input series of the rule tests, not queries
            for name in re.findall(r"\blychee_[a-z0-9_]+", text):
                referenced.setdefault(name, set()).add(path.name)
        self.assertIn("lychee_num_requests_waiting", referenced)
        self.assertIn("lychee_dropped_mass", {self.family(n) for n in referenced})
        for name, where in sorted(referenced.items()):
            with self.subTest(metric=name, files=sorted(where)):
                self.assertIn(self.family(name), self.families,
                              f"{name} (in {sorted(where)}) is not in lychee-server's /metrics")

    def family(self, name):
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and self.types.get(base) == "histogram":
                return base
        return name

    def test_referenced_labels_exist(self):
        """Label matchers and `by (...)` groupings name labels the series carry (or scrape labels)."""
        for path in self.metric_files():
            if path.name.endswith(".test.yml"):
                continue
            text = path.read_text()
            if path.suffix == ".json":
                text = "\n".join(t["expr"] for p in json.loads(text)["panels"] for t in p["targets"])
            for name, matchers in re.findall(r"\b(lychee_[a-z0-9_]+)\{([^}]*)\}", text):
                for label in re.findall(r'([a-zA-Z_]\w*)\s*[=!~]+\s*"', matchers):
                    if label in SCRAPE_LABELS:
                        continue
                    with self.subTest(path=path.name, metric=name, label=label):
                        self.assertIn(label, self.families[self.family(name)])
            all_labels = set().union(*self.families.values())
            for group in re.findall(r"\bby \(([^)]*)\)", text):
                for label in re.split(r"\s*,\s*", group.strip()):
                    if label and label not in SCRAPE_LABELS and not label.startswith("<<"):
                        with self.subTest(path=path.name, by=label):
                            self.assertIn(label, all_labels)

    def test_prometheus_rules(self):
        promtool = shutil.which("promtool") or "/usr/bin/promtool"
        if not os.access(promtool, os.X_OK):
            self.skipTest("promtool not installed (scripts/install-deps.sh installs Debian's prometheus)")
        for rules in sorted((DEPLOY / "prometheus").glob("*rules*.yml")):
            args = ["test", "rules"] if rules.name.endswith(".test.yml") else ["check", "rules"]
            r = subprocess.run([promtool, *args, str(rules)], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_prometheusrule_is_generated_from_rules(self):
        out = subprocess.run([sys.executable, str(DEPLOY / "prometheus" / "make_prometheusrule.py"),
                              "--print"], capture_output=True, text=True, check=True).stdout
        committed = (DEPLOY / "prometheus" / "operator" / "prometheusrule.yaml").read_text()
        self.assertEqual(out, committed,
                         "rerun /usr/bin/python3 deploy/prometheus/make_prometheusrule.py")
        rules = yaml.safe_load((DEPLOY / "prometheus" / "lychee-rules.yml").read_text())
        self.assertEqual(yaml.safe_load(committed)["spec"]["groups"], rules["groups"])
        alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
        self.assertTrue({"LycheeHighQueue", "LycheeKvCacheNearlyFull", "LycheeHighTimeToFirstToken",
                         "LycheeHighErrorRate"} <= alerts)

    def test_monitors_select_the_service(self):
        svc_labels = load_yaml_docs(K8S / "base" / "service.yaml")[0]["metadata"]["labels"]
        pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
        port_names = {p["name"] for p in server_container(deployment())["ports"]}
        (sm,) = load_yaml_docs(DEPLOY / "prometheus" / "operator" / "servicemonitor.yaml")
        (pm,) = load_yaml_docs(DEPLOY / "prometheus" / "operator" / "podmonitor.yaml")
        for k, v in sm["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(svc_labels.get(k), v)
        for k, v in pm["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(pod_labels.get(k), v)
        for ep in sm["spec"]["endpoints"] + pm["spec"]["podMetricsEndpoints"]:
            self.assertEqual((ep["port"], ep["path"]), ("http", "/metrics"))
            self.assertIn(ep["port"], port_names)

    def test_autoscalers_target_the_deployment(self):
        (hpa,) = load_yaml_docs(K8S / "components" / "hpa" / "hpa.yaml")
        self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], deployment()["metadata"]["name"])
        self.assertEqual(hpa["spec"]["metrics"][0]["pods"]["metric"]["name"],
                         "lychee_num_requests_waiting")
        (so,) = load_yaml_docs(K8S / "components" / "keda" / "scaledobject.yaml")
        self.assertEqual(so["spec"]["scaleTargetRef"]["name"], deployment()["metadata"]["name"])
        self.assertIn("lychee_num_requests_waiting", so["spec"]["triggers"][0]["metadata"]["query"])

    def test_grafana_dashboard(self):
        dash = json.loads((DEPLOY / "grafana" / "lychee-dashboard.json").read_text())
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
        for needle in ("lychee_num_requests_running", "lychee_num_requests_waiting",
                       "lychee_kv_cache_usage_perc", "lychee_generation_tokens_total",
                       "histogram_quantile(0.99, sum by (le) (rate(lychee_time_to_first_token_seconds_bucket",
                       "lychee_inter_token_latency_seconds_bucket",
                       "lychee_e2e_request_latency_seconds_bucket", "lychee_num_preemptions_total",
                       "lychee_prefix_cache_hits_total", "lychee_dropped_mass_bucket",
                       "lychee_dropped_mass_bound_bucket", "lychee_dropped_mass_exact_bucket",
                       "lychee_kv_tokens_read_total", "lychee_kv_tokens_dense_total",
                       "lychee_policy_widenings_total", "lychee_policy_dense_fallbacks_total",
                       "lychee_policy_selection_seconds_total", "lychee_policy_selections_total",
                       "lychee_policy_reused_selections_total", "lychee_cache_corrections_total"):
            self.assertIn(needle, exprs)

    # --- images -----------------------------------------------------------------------------
    def test_dockerfile_runtime_packages_cover_the_binaries(self):
        if not shutil.which("dpkg") or not shutil.which("ldd"):
            self.skipTest("no dpkg/ldd: not a Debian host")
        df = (DEPLOY / "docker" / "Dockerfile").read_text()
        self.assertRegex(df, r"(?m)^FROM debian:12 AS build")
        self.assertRegex(df, r"scripts/install-deps\.sh")
        self.assertRegex(df, r"make build PRESET=cpu")
        self.assertRegex(df, r"(?m)^USER 10001")
        block = df.split("# runtime-packages:", 1)[1].split("&& rm -rf", 1)[0]
        listed = set(re.findall(r"\b(lib[\w.+-]+|zlib1g|ca-certificates|curl)\b", block))
        # The programs the image copies (lychee-server at least; the others where built).
        programs = [BIN_DIR / b for b in ("lychee-server", "lychee-client", "lychee-generate",
                                          "lychee-tokenize") if (BIN_DIR / b).exists()]
        for b in re.findall(r"/src/build/bin/([\w-]+)", df):
            self.assertIn(b, ("lychee-server", "lychee-client", "lychee-generate", "lychee-tokenize"))
        ldd = subprocess.run(["ldd"] + [str(p) for p in programs],
                             capture_output=True, text=True, check=True).stdout
        self.assertNotIn("not found", ldd)
        needed = set()
        for lib in sorted(set(re.findall(r"=> (/\S+)", ldd))):
            # A `cuda`-preset build links the CUDA toolkit's libraries (cuBLAS): no Debian package
            # owns them, and the CPU image is built with PRESET=cpu, which does not link them
            # (deploy/docker/Dockerfile.cuda takes them from NVIDIA's runtime image).
            if os.path.realpath(lib).startswith("/usr/local/cuda"):
                continue
            owner = None
            for candidate in (os.path.realpath(lib), lib):
                r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
                if r.returncode == 0:
                    owner = r.stdout.split(":")[0]
                    break
            self.assertIsNotNone(owner, f"no Debian package owns {lib}")
            needed.add(owner)
        # libc6 (libc, libm) is in every Debian image.
        missing = needed - listed - {"libc6"}
        self.assertFalse(missing, f"add to deploy/docker/Dockerfile's runtime packages: {missing}")

    # --- kustomize --------------------------------------------------------------------------
    def test_kubectl_kustomize_renders_overlays(self):
        kubectl = shutil.which("kubectl")
        if not kubectl:
            self.skipTest("kubectl not installed: overlays not rendered (the checks above read the "
                          "files directly)")
        probe = subprocess.run([kubectl, "kustomize", str(K8S / "base")], capture_output=True, text=True)
        if probe.returncode != 0 and "unknown command" in probe.stderr:
            self.skipTest("this kubectl has no `kustomize` subcommand")
        self.assertEqual(probe.returncode, 0, probe.stderr)
        for overlay in ("cpu", "gpu"):
            with self.subTest(overlay=overlay):
                r = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                                   capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, r.stderr)
                docs = [d for d in yaml.safe_load_all(r.stdout) if d]
                kinds = {d["kind"]: d for d in docs}
                self.assertTrue({"ConfigMap", "Service", "Deployment", "PodDisruptionBudget",
                                 "HorizontalPodAutoscaler"} <= set(kinds))
                cm_name = kinds["ConfigMap"]["metadata"]["name"]
                self.assertRegex(cm_name, r"^lychee-config-\w+$")
                self.assertEqual(yaml.safe_load(kinds["ConfigMap"]["data"][self.config_key]), self.config)
                spec = kinds["Deployment"]["spec"]["template"]["spec"]
                self.assertIn(cm_name, [v.get("configMap", {}).get("name") for v in spec["volumes"]])
                image = spec["containers"][0]["image"]
                self.assertTrue(image.endswith(":" + overlay if overlay == "cpu" else ":cuda"), image)
                if overlay == "gpu":
                    self.assertEqual(spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], 1)
                    # The strategic merge keeps the base's probes and mounts.
                    self.assertIn("readinessProbe", spec["containers"][0])
                    self.assertEqual(len(spec["containers"][0]["volumeMounts"]), 4)


    def test_api_keys_come_from_a_secret(self):
        dep = deployment()
        c = server_container(dep)
        key_file = c["args"][c["args"].index("--api-key-file") + 1]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        (vol,) = [n for n, v in volumes.items()
                  if v.get("secret", {}).get("secretName") == "lychee-api-keys"]
        self.assertTrue(key_file.startswith(mounts[vol] + "/"), key_file)
        # No key is written into the ConfigMap.
        self.assertFalse(self.config.get("api_keys"))

    def test_tls_component(self):
        text = (K8S / "components" / "tls" / "kustomization.yaml").read_text()
        doc = yaml.safe_load(text)
        self.assertEqual(doc["kind"], "Component")
        (patch,) = doc["patches"]
        ops = yaml.safe_load(patch["patch"])
        help_text = subprocess.run([str(SERVER), "--help"], capture_output=True, text=True,
                                   check=True).stdout
        flags = set(re.findall(r"(--[a-z][a-z-]+)", help_text))
        args = [op["value"] for op in ops if op["path"].endswith("/args/-")]
        self.assertEqual(args[0::2], ["--tls-cert", "--tls-key"])
        for flag in args[0::2] + ["--tls-client-ca"]:
            self.assertIn(flag, flags)
        self.assertIn("--tls-client-ca", text)
        schemes = [op["path"] for op in ops if op["path"].endswith("/httpGet/scheme")]
        self.assertEqual(len(schemes), 3)
        secrets = [op["value"]["secret"]["secretName"] for op in ops
                   if op["path"].endswith("/volumes/-")]
        self.assertEqual(secrets, ["lychee-tls"])
        kubectl = shutil.which("kubectl")
        if not kubectl:
            return
        with tempfile.TemporaryDirectory() as tmp:
            overlay = pathlib.Path(tmp)
            (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / "cpu", overlay)],
                "components": [os.path.relpath(K8S / "components" / "tls", overlay)]}))
            r = subprocess.run([kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone",
                                str(overlay)], capture_output=True, text=True)
            if r.returncode != 0 and "unknown command" in r.stderr:
                return
            self.assertEqual(r.returncode, 0, r.stderr)
            (dep,) = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "Deployment"]
            c = dep["spec"]["template"]["spec"]["containers"][0]
            self.assertEqual(c["args"][-4:], ["--tls-cert", "/etc/lychee-tls/tls.crt", "--tls-key",
                                              "/etc/lychee-tls/tls.key"])
            self.assertEqual(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS")
            self.assertIn("/etc/lychee-tls", [m["mountPath"] for m in c["volumeMounts"]])


if __name__ == "__main__":
    unittest.main(verbosity=2)
