"""Checks of deploy/kubernetes (docs/kubernetes.md): the manifests are valid for the pinned
Kubernetes version, lint clean, render, reference only ConfigMap and Secret keys that exist,
and agree with the worker's code and the documented bounds. Each check is also fed a broken
input and must refuse it.

Run from the repository root with Debian's interpreter:
    /usr/bin/python3 -m unittest discover -s tests/deploy -p 'test_kubernetes*.py' -v
Needs Debian's python3-yaml, python3-jsonschema, python3-venv and yamllint (deps/packages.txt,
section test), and kubernetes-validate from PyPI, which tests/deploy/venv.sh installs into
build/venv-deploy once (a failure to reach PyPI fails the tests that need it, saying so).
`kubectl kustomize` renders the kustomizations when kubectl is on PATH; without it the Python
reference checks below still run on the files the kustomizations list.
KEDA's objects are CRDs, which kubernetes-validate does not know: they are validated against
tests/deploy/keda-schema.json, a schema of the fields used here written for this test.
"""

import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

try:
    import yaml
    import jsonschema
except ImportError as e:  # pragma: no cover - depends on the machine
    raise ImportError("run with /usr/bin/python3 after `apt-get install python3-yaml "
                      "python3-jsonschema`") from e

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.join(ROOT, "tests", "deploy")
K8S = os.path.join(ROOT, "deploy", "kubernetes")
BASE = os.path.join(K8S, "base")
KEDA = os.path.join(K8S, "keda")
YAMLLINT_CONFIG = os.path.join(ROOT, "deploy", ".yamllint")
# The Kubernetes version the manifests are validated against (and documented for).
K8S_VERSION = "1.29.0"
KUSTOMIZATIONS = [K8S, BASE, KEDA, os.path.join(K8S, "autoscaled")]
WORKLOAD_KINDS = ("StatefulSet", "Deployment", "Job")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def kustomization(folder):
    return yaml.safe_load(read(os.path.join(folder, "kustomization.yaml")))


def manifest_files(folder):
    """The files a kustomization lists as resources (not kustomization.yaml itself)."""
    k = kustomization(folder)
    return [os.path.join(folder, r) for r in k.get("resources", [])
            if os.path.isfile(os.path.join(folder, r))]


def base_objects():
    return [d for f in manifest_files(BASE) for d in load_all(f)]


def keda_objects():
    return [d for f in manifest_files(KEDA) for d in load_all(f)]


def find(objs, kind, name=None):
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    if len(hits) != 1:
        raise AssertionError("expected one %s %s, found %d" % (kind, name or "", len(hits)))
    return hits[0]


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def config_settings():
    """{ENV: default or None} from worker/config.c's settings[] table."""
    src = read(os.path.join(ROOT, "worker", "config.c"))
    table = re.search(r"static const setting settings\[\]\s*=\s*\{(.*?)\n\};", src, re.S).group(1)
    rows = re.findall(r'\{"([A-Z_]+)",\s*"--[a-z-]+",\s*S_\w+,\s*OFF\(\w+\),\s*(NULL|"[^"]*")',
                      table)
    return {env: (None if d == "NULL" else d.strip('"')) for env, d in rows}


def help_settings():
    """The variables `metadata-worker --help` names, when the binary is built (make)."""
    binary = os.environ.get("MW_BIN", os.path.join(ROOT, "build", "metadata-worker"))
    if not os.access(binary, os.X_OK):
        return None
    out = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=10).stdout
    return set(re.findall(r"^\s+--[a-z-]+\s+([A-Z][A-Z0-9_]+)\s", out, re.M))


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def configmap_data(objs):
    return {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}


def secret_data(objs):
    return {o["metadata"]["name"]: dict(o.get("data", {}), **o.get("stringData", {}))
            for o in objs if o["kind"] == "Secret"}


def container_env(objs, container):
    """{NAME: value or a description} of what a container gets: envFrom ConfigMaps, then env."""
    cms, env = configmap_data(objs), {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            env.update(cms.get(src["configMapRef"]["name"], {}))
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "configMapKeyRef" in e.get("valueFrom", {}):
            r = e["valueFrom"]["configMapKeyRef"]
            env[e["name"]] = cms.get(r["name"], {}).get(r["key"])
        else:
            env[e["name"]] = "<%s>" % next(iter(e["valueFrom"]))
    return env


def reference_problems(objs):
    """Every ConfigMap/Secret (and key) that a workload or a TriggerAuthentication refers to
    and that is not among objs: a list of lines, empty when all resolve."""
    cms, secrets = configmap_data(objs), secret_data(objs)
    stores = {"configMap": cms, "secret": secrets}
    problems = []

    def need(store, name, key, where):
        if name not in stores[store]:
            problems.append("%s: %s %s does not exist" % (where, store, name))
        elif key is not None and key not in stores[store][name]:
            problems.append("%s: %s %s has no key %s" % (where, store, name, key))

    for o in objs:
        where = "%s/%s" % (o["kind"], o["metadata"]["name"])
        if o["kind"] == "TriggerAuthentication":
            for r in o["spec"].get("secretTargetRef", []):
                need("secret", r["name"], r["key"], where)
        if o["kind"] not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(o)
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            w = "%s container %s" % (where, c["name"])
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    need("configMap", src["configMapRef"]["name"], None, w)
                if "secretRef" in src:
                    need("secret", src["secretRef"]["name"], None, w)
            for e in c.get("env", []):
                vf = e.get("valueFrom", {})
                if "configMapKeyRef" in vf:
                    need("configMap", vf["configMapKeyRef"]["name"], vf["configMapKeyRef"]["key"],
                         "%s env %s" % (w, e["name"]))
                if "secretKeyRef" in vf:
                    need("secret", vf["secretKeyRef"]["name"], vf["secretKeyRef"]["key"],
                         "%s env %s" % (w, e["name"]))
            # $(VAR) in args is expanded by Kubernetes only when VAR is defined.
            defined = set(container_env(objs, c))
            for a in c.get("args", []) + c.get("command", []):
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                    if var not in defined:
                        problems.append("%s: $(%s) in args is not defined" % (w, var))
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            volumes = {v["name"] for v in spec.get("volumes", [])}
            for m in sorted(mounts - volumes):
                problems.append("%s: volumeMount %s has no volume" % (w, m))
        for v in spec.get("volumes", []):
            for store, name_field in (("secret", "secretName"), ("configMap", "name")):
                if store in v:
                    name = v[store][name_field]
                    keys = [i["key"] for i in v[store].get("items", [])] or [None]
                    for key in keys:
                        need(store, name, key, "%s volume %s" % (where, v["name"]))
    return problems


def kafka_properties(objs):
    """{name: value} of the Secret metadata-worker-kafka's kafka.properties (the file the
    worker reads with KAFKA_CONFIG_FILE: name=value lines, # comments)."""
    text = secret_data(objs)["metadata-worker-kafka"]["kafka.properties"]
    return dict(tuple(x.strip() for x in line.split("=", 1)) for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith(("#", "!")))


_KV = {}


def kubernetes_validate():
    """The path of kubernetes-validate, made by tests/deploy/venv.sh on the first call; fails
    (never skips) when it cannot be installed, and every later call fails at once the same
    way instead of trying PyPI again."""
    if not _KV:
        p = subprocess.run(["bash", os.path.join(HERE, "venv.sh")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=600)
        if p.returncode != 0:
            _KV["error"] = ("kubernetes-validate could not be installed by tests/deploy/venv.sh "
                            "(PyPI unreachable?):\n" + p.stderr)
        else:
            _KV["path"] = p.stdout.strip().splitlines()[-1]
    if "error" in _KV:
        raise AssertionError(_KV["error"])
    return _KV["path"]


def run_kv(*files):
    p = subprocess.run([kubernetes_validate(), "--strict", "-k", K8S_VERSION] + list(files),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    return p.returncode, p.stdout


def yamllint(*paths):
    if not shutil.which("yamllint"):
        raise AssertionError("yamllint is missing: apt-get install yamllint "
                             "(deps/packages.txt, section test)")
    p = subprocess.run(["yamllint", "-f", "parsable", "-c", YAMLLINT_CONFIG] + list(paths),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    return p.returncode, p.stdout


def keda_problems(obj):
    schema = json.loads(read(os.path.join(HERE, "keda-schema.json")))
    kind = obj.get("kind")
    if kind not in ("ScaledObject", "TriggerAuthentication"):
        return ["unknown KEDA kind %r" % kind]
    v = jsonschema.Draft7Validator(dict(schema[kind], definitions=schema["definitions"]))
    return ["%s: %s" % ("/".join(map(str, e.absolute_path)) or "(top)", e.message)
            for e in v.iter_errors(obj)]


class TempDir(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mw-deploy.")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def write(self, name, docs):
        path = os.path.join(self.tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump_all(docs, f, sort_keys=False)
        return path


class TestYamllint(TempDir):
    def test_deploy_is_lint_clean(self):
        rc, out = yamllint(os.path.join(ROOT, "deploy"))
        self.assertEqual(rc, 0, out)

    def test_bad_indentation_is_refused(self):
        text = read(os.path.join(BASE, "configmap.yaml")).replace(
            "\n  KAFKA_GROUP_ID:", "\n   KAFKA_GROUP_ID:", 1)
        path = os.path.join(self.tmp, "configmap.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        rc, out = yamllint(path)
        self.assertNotEqual(rc, 0, "yamllint accepted a badly indented file")
        self.assertIn("error", out)


class TestKubernetesValidate(TempDir):
    """kubernetes-validate --strict against Kubernetes K8S_VERSION: types, required fields and
    unknown fields (strict) of every built-in object."""

    def test_every_manifest_is_valid(self):
        files = manifest_files(BASE)
        self.assertGreaterEqual(len(files), 5)
        rc, out = run_kv(*files)
        self.assertEqual(rc, 0, out)
        self.assertNotIn("Couldn't find schema", out)
        kinds = {d["kind"] for f in files for d in load_all(f)}
        for kind in ("StatefulSet", "Deployment", "Job", "Service", "ConfigMap", "Secret",
                     "PodDisruptionBudget"):
            self.assertIn(kind, kinds)
            self.assertIn("passed for resource %s/" % kind.lower(), out)

    def test_rendered_kustomizations_are_valid(self):
        if not shutil.which("kubectl"):
            self.skipTest("kubectl not on PATH: the files are validated one by one above")
        for folder in (K8S, os.path.join(K8S, "autoscaled")):
            path = os.path.join(self.tmp, os.path.basename(folder) + ".yaml")
            docs = [d for d in render(folder) if not d["apiVersion"].startswith("keda.sh/")]
            self.write(os.path.basename(path), docs)
            rc, out = run_kv(path)
            self.assertEqual(rc, 0, out)
            self.assertNotIn("Couldn't find schema", out)

    def test_wrong_type_is_refused(self):
        docs = load_all(os.path.join(BASE, "worker.yaml"))
        find(docs, "StatefulSet")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "45s"
        rc, out = run_kv(self.write("worker.yaml", docs))
        self.assertNotEqual(rc, 0, out)
        self.assertIn("terminationGracePeriodSeconds", out)

    def test_missing_required_field_is_refused(self):
        docs = load_all(os.path.join(BASE, "worker.yaml"))
        del find(docs, "StatefulSet")["spec"]["selector"]
        rc, out = run_kv(self.write("worker.yaml", docs))
        self.assertNotEqual(rc, 0, out)
        self.assertIn("selector", out)

    def test_unknown_field_is_refused(self):
        docs = load_all(os.path.join(BASE, "api.yaml"))
        c = pod_spec(find(docs, "Deployment"))["containers"][0]
        c["livenessProbe"]["httpGet"]["paht"] = c["livenessProbe"]["httpGet"].pop("path")
        rc, out = run_kv(self.write("api.yaml", docs))
        self.assertNotEqual(rc, 0, out)
        self.assertIn("paht", out)


def render(folder):
    p = subprocess.run(["kubectl", "kustomize", folder], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError("kubectl kustomize %s: %s" % (folder, p.stderr))
    return [d for d in yaml.safe_load_all(p.stdout) if d]


class TestKustomize(TempDir):
    def test_every_listed_file_exists(self):
        for folder in KUSTOMIZATIONS:
            k = kustomization(folder)
            entries = k.get("resources", []) + k.get("components", [])
            self.assertTrue(entries, folder)
            for r in entries:
                path = os.path.normpath(os.path.join(folder, r))
                self.assertTrue(os.path.isfile(path) or
                                os.path.isfile(os.path.join(path, "kustomization.yaml")),
                                "%s lists %s, which does not exist" % (folder, r))
        self.assertEqual(kustomization(KEDA)["kind"], "Component")
        # Every manifest in base/ and keda/ is listed (none forgotten).
        for folder in (BASE, KEDA):
            listed = {os.path.basename(f) for f in manifest_files(folder)}
            present = {f for f in os.listdir(folder) if f.endswith(".yaml")} - {"kustomization.yaml"}
            self.assertEqual(listed, present, folder)

    def test_every_reference_resolves(self):
        self.assertEqual(reference_problems(base_objects() + keda_objects()), [])

    def test_a_missing_key_is_refused(self):
        objs = base_objects()
        broken = copy.deepcopy(objs)
        env = pod_spec(find(broken, "Job"))["containers"][0]["env"]
        next(e for e in env if "configMapKeyRef" in e.get("valueFrom", {}))[
            "valueFrom"]["configMapKeyRef"]["key"] = "LOG_LEVLE"
        self.assertEqual(reference_problems(broken),
                         ["Job/metadata-worker-migrate container migrate env LOG_LEVEL: "
                          "configMap metadata-worker-config has no key LOG_LEVLE"])
        broken = copy.deepcopy(objs)
        find(broken, "Secret", "metadata-worker-kafka")["stringData"].pop("kafka.properties")
        problems = reference_problems(broken + keda_objects())
        self.assertTrue(any("StatefulSet/metadata-worker" in p and "kafka.properties" in p
                            for p in problems), problems)
        self.assertTrue(any("Deployment/metadata-worker-api" in p for p in problems), problems)
        broken = copy.deepcopy(objs)
        find(broken, "Secret", "metadata-worker-kafka")["stringData"].pop("sasl-password")
        problems = reference_problems(broken + keda_objects())
        self.assertTrue(any("TriggerAuthentication" in p for p in problems), problems)
        broken = [o for o in copy.deepcopy(objs) if o["metadata"]["name"] != "metadata-worker-api-config"]
        self.assertIn("Deployment/metadata-worker-api container api: configMap "
                      "metadata-worker-api-config does not exist", reference_problems(broken))

    def test_kubectl_renders_both(self):
        if not shutil.which("kubectl"):
            self.skipTest("kubectl not on PATH: test_every_listed_file_exists and "
                          "test_every_reference_resolves check the files instead")
        plain = render(K8S)
        scaled = render(os.path.join(K8S, "autoscaled"))
        self.assertEqual(reference_problems(plain), [])
        self.assertEqual(reference_problems(scaled), [])
        self.assertEqual({o["kind"] for o in scaled} - {o["kind"] for o in plain},
                         {"ScaledObject", "TriggerAuthentication"})
        # With KEDA the ScaledObject owns the count: re-applying must not reset it.
        self.assertIn("replicas", find(plain, "StatefulSet")["spec"])
        self.assertNotIn("replicas", find(scaled, "StatefulSet")["spec"])
        tags = {c["image"] for o in plain if o["kind"] in WORKLOAD_KINDS
                for c in pod_spec(o)["containers"]}
        self.assertEqual(tags, {"metadata-worker:local"})


class TestKeda(unittest.TestCase):
    def test_objects_match_the_schema(self):
        objs = keda_objects()
        self.assertEqual(sorted(o["kind"] for o in objs), ["ScaledObject", "TriggerAuthentication"])
        for o in objs:
            self.assertEqual(keda_problems(o), [], o["kind"])

    def test_broken_objects_are_refused(self):
        so = find(keda_objects(), "ScaledObject")
        broken = copy.deepcopy(so)
        del broken["spec"]["scaleTargetRef"]
        self.assertTrue(any("scaleTargetRef" in p for p in keda_problems(broken)))
        broken = copy.deepcopy(so)
        broken["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 10000  # must be a string
        self.assertTrue(any("lagThreshold" in p for p in keda_problems(broken)))
        broken = copy.deepcopy(so)
        broken["spec"]["maxReplicaCount"] = "6"
        self.assertTrue(keda_problems(broken))
        ta = find(keda_objects(), "TriggerAuthentication")
        broken = copy.deepcopy(ta)
        del broken["spec"]["secretTargetRef"][0]["key"]
        self.assertTrue(any("key" in p for p in keda_problems(broken)))

    def test_scales_the_statefulset_within_the_partitions(self):
        so = find(keda_objects(), "ScaledObject")["spec"]
        sts = find(base_objects(), "StatefulSet")
        self.assertEqual(so["scaleTargetRef"], {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                                "name": sts["metadata"]["name"]})
        self.assertGreaterEqual(so["minReplicaCount"], 1)
        # The input topic's partitions, as docker-compose.yml creates it.
        compose = read(os.path.join(ROOT, "docker-compose.yml"))
        topic = configmap_data(base_objects())["metadata-worker-config"]["KAFKA_INPUT_TOPIC"]
        partitions = int(re.search(r"--topic %s --partitions (\d+)" % re.escape(topic),
                                   compose).group(1))
        self.assertEqual(so["maxReplicaCount"], partitions)
        self.assertLessEqual(sts["spec"]["replicas"], partitions)
        self.assertIn("uses %d)" % partitions, read(os.path.join(ROOT, "docs", "operations.md")))
        trig = so["triggers"][0]
        self.assertEqual(trig["type"], "kafka")
        self.assertEqual(trig["metadata"]["allowIdleConsumers"], "false")
        self.assertGreater(int(trig["metadata"]["lagThreshold"]), 0)

    def test_trigger_agrees_with_the_worker(self):
        trig = find(keda_objects(), "ScaledObject")["spec"]["triggers"][0]
        cm = configmap_data(base_objects())["metadata-worker-config"]
        md = trig["metadata"]
        self.assertEqual(md["bootstrapServers"], cm["KAFKA_BROKERS"])
        self.assertEqual(md["consumerGroup"], cm["KAFKA_GROUP_ID"])
        self.assertEqual(md["topic"], cm["KAFKA_INPUT_TOPIC"])
        reset = re.search(r'"auto\.offset\.reset",\s*"(\w+)"',
                          read(os.path.join(ROOT, "worker", "kafka.c"))).group(1)
        self.assertEqual(md["offsetResetPolicy"], reset)
        self.assertEqual(trig["authenticationRef"]["name"],
                         find(keda_objects(), "TriggerAuthentication")["metadata"]["name"])

    def test_login_agrees_with_the_worker(self):
        """KEDA logs in as the workers' kafka.properties says: same mechanism, TLS, user and
        password (KEDA cannot read the file, so the Secret holds the login twice)."""
        objs = base_objects()
        secrets = secret_data(objs)
        props = kafka_properties(objs)
        refs = {r["parameter"]: r for r in
                find(keda_objects(), "TriggerAuthentication")["spec"]["secretTargetRef"]}
        value = lambda p: secrets[refs[p]["name"]][refs[p]["key"]]  # noqa: E731
        keda_sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256",
                     "SCRAM-SHA-512": "scram_sha512", "OAUTHBEARER": "oauthbearer"}
        self.assertEqual(value("sasl"), keda_sasl[props["sasl.mechanisms"]])
        tls = props["security.protocol"] in ("SSL", "SASL_SSL")
        self.assertEqual(value("tls"), "enable" if tls else "disable")
        self.assertEqual(value("username"), props["sasl.username"])
        self.assertEqual(value("password"), props["sasl.password"])
        self.assertEqual(refs["ca"]["key"], os.path.basename(props["ssl.ca.location"]))
        # A login changed in one place only is caught.
        broken = copy.deepcopy(objs)
        find(broken, "Secret", "metadata-worker-kafka")["stringData"]["sasl-password"] = "other"
        self.assertNotEqual(secret_data(broken)["metadata-worker-kafka"]["sasl-password"],
                            kafka_properties(broken)["sasl.password"])

    def test_workers_and_api_read_the_properties_file(self):
        """Both name kafka.properties with KAFKA_CONFIG_FILE and mount it from the Secret
        where it says; no Kafka property is on a command line."""
        objs = base_objects()
        path = configmap_data(objs)["metadata-worker-config"]["KAFKA_CONFIG_FILE"]
        for kind in ("StatefulSet", "Deployment"):
            spec = pod_spec(find(objs, kind))
            c = spec["containers"][0]
            self.assertNotIn("-X", c["args"], kind)
            self.assertEqual(container_env(objs, c).get("KAFKA_CONFIG_FILE"), path, kind)
            mounted = set()
            volumes = {v["name"]: v for v in spec["volumes"]}
            for m in c["volumeMounts"]:
                sec = volumes[m["name"]].get("secret", {})
                if sec.get("secretName") == "metadata-worker-kafka":
                    mounted |= {os.path.join(m["mountPath"], i["path"])
                                for i in sec["items"] if i["key"] == "kafka.properties"}
            self.assertIn(path, mounted, kind)
        ca = kafka_properties(objs)["ssl.ca.location"]
        self.assertTrue(ca.startswith(os.path.dirname(path) + "/"), ca)


class TestAgainstTheCode(unittest.TestCase):
    """The manifests against worker/config.c, worker/http.c, worker/ingest.c, the Dockerfile
    and docs/operations.md."""

    @classmethod
    def setUpClass(cls):
        cls.objs = base_objects()
        cls.settings = config_settings()
        cls.cm = configmap_data(cls.objs)

    def test_config_c_and_help_agree(self):
        names = help_settings()
        if names is None:
            self.skipTest("build/metadata-worker not built (make): config.c's table is used")
        self.assertEqual(names, set(self.settings))

    def test_configmap_keys_are_settings(self):
        for name, data in self.cm.items():
            unknown = sorted(set(data) - set(self.settings))
            self.assertEqual(unknown, [], "%s holds variables the worker does not read" % name)
        # And a wrong one is caught: the check is not vacuous.
        self.assertNotIn("KAFKA_GROUP_INSTANCE", self.settings)

    def test_every_variable_is_a_setting_or_used_in_args(self):
        for o in self.objs:
            if o["kind"] not in WORKLOAD_KINDS:
                continue
            for c in pod_spec(o)["containers"]:
                used = set(re.findall(r"\$\((\w+)\)", " ".join(c.get("args", []))))
                extra = sorted(set(container_env(self.objs, c)) - set(self.settings) - used)
                self.assertEqual(extra, [], "%s/%s" % (o["kind"], c["name"]))

    def test_probes_and_ports(self):
        http_c = read(os.path.join(ROOT, "worker", "http.c"))
        metrics_port = port_of(self.cm["metadata-worker-config"]["METRICS_ADDR"])
        for o in self.objs:
            if o["kind"] not in ("StatefulSet", "Deployment"):
                continue
            c = pod_spec(o)["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            self.assertEqual(ports["metrics"], metrics_port, o["kind"])
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                get = c[probe]["httpGet"]
                self.assertEqual(get["path"], path)
                self.assertIn('"%s"' % path, http_c)
                port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
                self.assertEqual(port, metrics_port, "%s %s" % (o["kind"], probe))
        api = pod_spec(find(self.objs, "Deployment"))["containers"][0]
        api_ports = {p["name"]: p["containerPort"] for p in api["ports"]}
        self.assertEqual(api_ports["http"],
                         port_of(self.cm["metadata-worker-api-config"]["API_ADDR"]))
        # Each Service's targetPort is a port its pods name.
        for svc in (o for o in self.objs if o["kind"] == "Service"):
            pods = next(o for o in self.objs if o["kind"] in ("StatefulSet", "Deployment") and
                        o["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"])
            names = {p["name"] for p in pod_spec(pods)["containers"][0]["ports"]}
            for p in svc["spec"]["ports"]:
                self.assertIn(p["targetPort"], names, svc["metadata"]["name"])
        sts = find(self.objs, "StatefulSet")
        self.assertEqual(sts["spec"]["serviceName"],
                         find(self.objs, "Service", sts["metadata"]["name"])["metadata"]["name"])
        self.assertEqual(find(self.objs, "Service", "metadata-worker")["spec"]["clusterIP"], "None")

    def test_grace_period_above_the_shutdown_bound(self):
        cm = self.cm["metadata-worker-config"]
        shutdown_s = int(cm.get("SHUTDOWN_TIMEOUT_MS", self.settings["SHUTDOWN_TIMEOUT_MS"])) / 1000
        leave_ms = int(re.search(r"now_ms\(\) \+ (\d+);",
                                 read(os.path.join(ROOT, "worker", "ingest.c"))).group(1))
        self.assertIn("On Kubernetes set `terminationGracePeriodSeconds` above %d"
                      % (shutdown_s + leave_ms / 1000),
                      read(os.path.join(ROOT, "docs", "operations.md")).replace("\n", " "))
        worker = pod_spec(find(self.objs, "StatefulSet"))
        self.assertGreater(worker["terminationGracePeriodSeconds"], shutdown_s + leave_ms / 1000)
        api = pod_spec(find(self.objs, "Deployment"))
        pre_stop = int(api["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1])
        self.assertGreater(api["terminationGracePeriodSeconds"], shutdown_s + pre_stop)

    def test_static_membership_only_in_the_statefulset(self):
        sts = pod_spec(find(self.objs, "StatefulSet"))["containers"][0]
        e = next(e for e in sts["env"] if e["name"] == "KAFKA_GROUP_INSTANCE_ID")
        self.assertEqual(e["valueFrom"], {"fieldRef": {"fieldPath": "metadata.name"}})
        self.assertIn("KAFKA_GROUP_INSTANCE_ID", self.settings)
        for kind in ("Deployment", "Job"):  # new names at every rollout: never static
            c = pod_spec(find(self.objs, kind))["containers"][0]
            self.assertNotIn("KAFKA_GROUP_INSTANCE_ID", container_env(self.objs, c), kind)

    def test_security_context(self):
        uid = re.search(r"^USER (\d+):(\d+)", read(os.path.join(ROOT, "Dockerfile")), re.M)
        for o in self.objs:
            if o["kind"] not in WORKLOAD_KINDS:
                continue
            spec = pod_spec(o)
            sc = spec["securityContext"]
            self.assertIs(sc["runAsNonRoot"], True, o["kind"])
            self.assertEqual((sc["runAsUser"], sc["runAsGroup"]),
                             (int(uid.group(1)), int(uid.group(2))))
            self.assertEqual(sc["seccompProfile"], {"type": "RuntimeDefault"})
            self.assertIs(spec["automountServiceAccountToken"], False)
            for c in spec["containers"]:
                csc = c["securityContext"]
                self.assertIs(csc["allowPrivilegeEscalation"], False)
                self.assertIs(csc["readOnlyRootFilesystem"], True)
                self.assertEqual(csc["capabilities"], {"drop": ["ALL"]})
                for what in ("requests", "limits"):
                    self.assertEqual(set(c["resources"][what]), {"cpu", "memory"},
                                     "%s %s" % (o["kind"], what))

    def test_secrets_stay_in_secrets(self):
        """DATABASE_URL and the Kafka password come from Secrets, never a ConfigMap."""
        for data in self.cm.values():
            self.assertNotIn("DATABASE_URL", data)
            self.assertFalse([k for k in data if "PASSWORD" in k or "SASL" in k])
        for kind in ("StatefulSet", "Job"):
            env = pod_spec(find(self.objs, kind))["containers"][0]["env"]
            db = next(e for e in env if e["name"] == "DATABASE_URL")
            self.assertIn("secretKeyRef", db["valueFrom"])
        for kind in ("StatefulSet", "Deployment"):
            c = pod_spec(find(self.objs, kind))["containers"][0]
            self.assertFalse([a for a in c["args"] if "password" in a], kind)
            self.assertFalse([e for e in c.get("env", []) if "PASSWORD" in e["name"]], kind)
        self.assertIn("sasl.password", kafka_properties(self.objs))
        # The API needs no database.
        api = pod_spec(find(self.objs, "Deployment"))["containers"][0]
        self.assertNotIn("DATABASE_URL", container_env(self.objs, api))

    def test_memory_limit_above_the_measured_peak(self):
        """The worker's limit is above every peak RSS docs/benchmarks.md reports (MB)."""
        bench = read(os.path.join(ROOT, "docs", "benchmarks.md"))
        peaks = []
        for line in bench.splitlines():
            # Lines that speak of RSS, and the worker's rows of the contenders' table (whose
            # last cell is its peak RSS).
            if "RSS" in line or line.startswith("| **worker"):
                peaks += [float(x.replace(",", "")) for x in
                          re.findall(r"\b(\d+(?:,\d{3})*(?:\.\d+)?) MB\b", line)]
        worker_peaks = [p for p in peaks if p < 1000]  # the naive and Flink peers use ~1 GB
        self.assertIn(122, worker_peaks)
        limit = pod_spec(find(self.objs, "StatefulSet"))["containers"][0]["resources"]["limits"]["memory"]
        self.assertTrue(limit.endswith("Mi"))
        self.assertGreater(int(limit[:-2]), max(worker_peaks))


class TestDocs(unittest.TestCase):
    def test_page_linked_and_figures_exist(self):
        page = read(os.path.join(ROOT, "docs", "kubernetes.md"))
        self.assertIn("docs/kubernetes.md", read(os.path.join(ROOT, "README.md")))
        self.assertIn("kubernetes.md", read(os.path.join(ROOT, "docs", "operations.md")))
        self.assertIn("kubectl apply -k deploy/kubernetes", page)
        self.assertIn(K8S_VERSION.rsplit(".", 1)[0], page)
        # Every figure the page quotes from the benchmarks is there, as written.
        bench = read(os.path.join(ROOT, "docs", "benchmarks.md"))
        for fig in re.findall(r"\b\d{1,3}(?:,\d{3})+(?:\.\d+)?\b", page):
            if fig in ("10,000", "1,000,000"):  # the threshold and its items, derived here
                continue
            self.assertIn(fig, bench, "docs/kubernetes.md quotes %s, absent from "
                                      "docs/benchmarks.md" % fig)
        lag = find(keda_objects(), "ScaledObject")["spec"]["triggers"][0]["metadata"]["lagThreshold"]
        self.assertIn("{:,}".format(int(lag)), page)


if __name__ == "__main__":
    unittest.main()
