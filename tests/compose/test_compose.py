"""Static checks of docker-compose.yml and the Dockerfile against worker/config.c
(docs/contract.md §1, §7).

Run from the repository root with Debian's interpreter:
    /usr/bin/python3 -m unittest discover -s tests/compose -v
It needs PyYAML, taken from Debian's python3-yaml package (apt-get install python3-yaml),
hence /usr/bin/python3 rather than whatever python3 comes first on PATH. Nothing else
outside the standard library. No Docker engine is needed: `config -q` validates the file
against the Compose schema with the docker CLI's compose plugin, or else with docker-compose
(v1, Debian's docker-compose package, which tests/harness/deps.sh installs); only when
neither is present is it skipped, saying so.
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

try:
    import yaml
except ImportError as e:  # pragma: no cover - depends on the machine
    raise ImportError(
        "PyYAML is missing: run with /usr/bin/python3 after `apt-get install python3-yaml`"
    ) from e

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
DOCKERFILE = os.path.join(ROOT, "Dockerfile")
CONFIG_C = os.path.join(ROOT, "worker", "config.c")

SERVICES = ("kafka", "kafka-init", "postgres", "migrate", "worker", "api")
TOPIC_SETTINGS = ("KAFKA_INPUT_TOPIC", "KAFKA_RESULTS_TOPIC", "KAFKA_DLQ_TOPIC")


def compose_command():
    """The command that validates a Compose file on this machine: `docker compose` (the
    docker CLI's plugin), else `docker-compose` (v1); None when neither is present. Neither
    needs a Docker engine for `config`."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def config_settings():
    """{ENV: default or None} from the rows {"ENV", "--flag", TYPE, OFF(x), default, …}
    of the settings[] table in worker/config.c."""
    src = read(CONFIG_C)
    table = re.search(r"static const setting settings\[\]\s*=\s*\{(.*?)\n\};", src, re.S)
    if not table:
        raise AssertionError("settings[] table not found in worker/config.c")
    lit = r'"(?:[^"\\]|\\.)*"'
    rows = re.findall(
        r'\{\s*"([A-Z][A-Z0-9_]*)"\s*,\s*"(--[a-z0-9-]+)"\s*,\s*S_[A-Z_]+\s*,\s*OFF\(\w+\)\s*,'
        r'\s*(NULL|' + lit + r'(?:\s*' + lit + r')*)',
        table.group(1),
    )
    starts = re.findall(r'\{\s*"[A-Z]', table.group(1))
    if len(starts) != len(rows):
        raise AssertionError("worker/config.c: %d settings rows but %d parsed; update the regex"
                             % (len(starts), len(rows)))
    settings = {}
    for env, _flag, raw in rows:
        # NULL: no default. Adjacent C string literals concatenate.
        settings[env] = None if raw == "NULL" else "".join(
            m[1:-1] for m in re.findall(lit, raw))
    return settings


def environment(service):
    """A service's environment as a dict, whichever of the two compose forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            name, _, value = str(item).partition("=")
            out[name] = value if _ else None
        return out
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def duration_seconds(text):
    """Compose durations such as 30s, 1m30s, 1500ms."""
    total, pos = 0.0, 0
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text)):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(str(text)) or pos == 0:
        raise ValueError("not a compose duration: %r" % (text,))
    return total


def dockerfile_instructions():
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    out, cur = [], ""
    for line in read(DOCKERFILE).splitlines():
        stripped = line.strip()
        if not cur and (not stripped or stripped.startswith("#")):
            continue
        if cur and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            cur += stripped[:-1] + " "
            continue
        cur += stripped
        word, _, rest = cur.partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


class ComposeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.doc = yaml.safe_load(read(COMPOSE))
        cls.services = cls.doc.get("services") or {}
        cls.settings = config_settings()

    def test_config_table_parsed(self):
        # Guards the regex: the table's well-known rows must all be found.
        for env in ("KAFKA_BROKERS", "KAFKA_GROUP_ID", "DATABASE_URL", "METRICS_ADDR",
                    "LOG_LEVEL") + TOPIC_SETTINGS:
            self.assertIn(env, self.settings)
        self.assertIsNone(self.settings["DATABASE_URL"])

    def test_services_exist(self):
        for name in SERVICES:
            self.assertIn(name, self.services, "service %s is missing" % name)

    def test_worker_is_scalable(self):
        worker = self.services["worker"]
        self.assertNotIn("container_name", worker, "a fixed name prevents --scale")
        self.assertNotIn("ports", worker, "a published host port prevents --scale")
        self.assertNotIn("hostname", worker)

    def test_worker_and_migrate_env_names_are_settings(self):
        for name in ("worker", "migrate", "api"):
            for env in environment(self.services[name]):
                self.assertIn(env, self.settings,
                              "%s sets %s, which worker/config.c does not read" % (name, env))

    def test_worker_and_migrate_config(self):
        worker, migrate = self.services["worker"], self.services["migrate"]
        wenv, menv = environment(worker), environment(migrate)
        self.assertEqual(worker.get("command"), ["run"])
        self.assertEqual(migrate.get("command"), ["migrate"])
        self.assertIn("build", worker)
        self.assertIn("build", migrate)
        self.assertEqual(wenv.get("KAFKA_BROKERS"), "kafka:9092")
        self.assertEqual(wenv.get("METRICS_ADDR"), "0.0.0.0:9090")
        self.assertEqual(wenv.get("LOG_LEVEL"), "info")
        for env in (wenv, menv):
            self.assertRegex(env.get("DATABASE_URL") or "", r"^postgres(ql)?://[^/]*@postgres:5432/\w+")
        self.assertEqual(wenv["DATABASE_URL"], menv["DATABASE_URL"])

    def test_worker_dependencies(self):
        deps = self.services["worker"].get("depends_on") or {}
        self.assertIsInstance(deps, dict, "depends_on needs conditions")
        for one_shot in ("migrate", "kafka-init"):
            self.assertEqual((deps.get(one_shot) or {}).get("condition"),
                             "service_completed_successfully", one_shot)
        migrate_deps = self.services["migrate"].get("depends_on") or {}
        self.assertEqual((migrate_deps.get("postgres") or {}).get("condition"), "service_healthy")
        init_deps = self.services["kafka-init"].get("depends_on") or {}
        self.assertEqual((init_deps.get("kafka") or {}).get("condition"), "service_healthy")

    def test_worker_stops_before_it_is_killed(self):
        worker = self.services["worker"]
        grace = duration_seconds(worker.get("stop_grace_period", "10s"))
        self.assertEqual(grace, 30)
        shutdown = environment(worker).get("SHUTDOWN_TIMEOUT_MS") or self.settings.get(
            "SHUTDOWN_TIMEOUT_MS")
        if shutdown is not None:
            self.assertLess(int(shutdown) / 1000.0, grace,
                            "SHUTDOWN_TIMEOUT_MS must end before stop_grace_period")

    def test_api_in_front_of_the_same_topic(self):
        api, worker = self.services["api"], self.services["worker"]
        self.assertEqual(api.get("command"), ["api"])
        self.assertEqual(api.get("image"), worker.get("image"))
        env = environment(api)
        self.assertEqual(env.get("KAFKA_INPUT_TOPIC"), environment(worker).get("KAFKA_INPUT_TOPIC"))
        self.assertEqual(env.get("KAFKA_BROKERS"), environment(worker).get("KAFKA_BROKERS"))
        self.assertTrue(env.get("API_KEYS_FILE"), "the API has no unauthenticated mode")
        self.assertTrue(any(str(v).endswith(":" + env["API_KEYS_FILE"] + ":ro")
                            for v in api.get("volumes") or []), "the keys file is mounted read-only")
        self.assertTrue(env.get("API_ADDR", "").startswith("0.0.0.0:"), "reachable from outside")
        port = env["API_ADDR"].rsplit(":", 1)[1]
        self.assertIn(f"{port}:{port}", [str(p) for p in api.get("ports") or []])
        grace = duration_seconds(api.get("stop_grace_period", "10s"))
        self.assertLess(int(env.get("SHUTDOWN_TIMEOUT_MS", "20000")) / 1000.0, grace)
        deps = api.get("depends_on") or {}
        self.assertEqual((deps.get("kafka-init") or {}).get("condition"),
                         "service_completed_successfully")

    def test_kafka_single_node_kraft(self):
        kafka = self.services["kafka"]
        self.assertEqual(kafka.get("image"), "apache/kafka:4.1.1")
        env = environment(kafka)
        for name in ("KAFKA_NODE_ID", "KAFKA_PROCESS_ROLES", "KAFKA_LISTENERS",
                     "KAFKA_CONTROLLER_LISTENER_NAMES", "KAFKA_CONTROLLER_QUORUM_VOTERS"):
            self.assertTrue(env.get(name), name)
        self.assertEqual(env.get("KAFKA_ADVERTISED_LISTENERS"), "PLAINTEXT://kafka:9092")
        self.assertEqual(set(env["KAFKA_PROCESS_ROLES"].split(",")), {"broker", "controller"})
        for name in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                     "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                     "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
            self.assertEqual(env.get(name), "1", name)
        self.assertIn("healthcheck", kafka)
        self.assertIn("pg_isready", str(self.services["postgres"].get("healthcheck", {}).get("test")))
        self.assertRegex(self.services["postgres"].get("image", ""), r"^postgres:16")

    def kafka_init_script(self):
        init = self.services["kafka-init"]
        self.assertEqual(init.get("image"), self.services["kafka"].get("image"))
        parts = []
        for key in ("entrypoint", "command"):
            v = init.get(key)
            parts.extend(v if isinstance(v, list) else [v] if v else [])
        return "\n".join(str(p) for p in parts)

    def test_kafka_init_topics_are_config_defaults(self):
        script = self.kafka_init_script()
        created = {}
        for line in script.splitlines():
            if "--create" not in line:
                continue
            self.assertIn("/opt/kafka/bin/kafka-topics.sh", line)
            self.assertIn("--if-not-exists", line)
            topic = re.search(r"--topic[ =](\S+)", line).group(1)
            parts = re.search(r"--partitions[ =](\d+)", line)
            created[topic] = int(parts.group(1)) if parts else None
        defaults = {self.settings[s] for s in TOPIC_SETTINGS}
        self.assertEqual(set(created), defaults)
        self.assertEqual(created[self.settings["KAFKA_INPUT_TOPIC"]], 6)
        # A worker told to use other topics than those created would fail at start.
        wenv = environment(self.services["worker"])
        for s in TOPIC_SETTINGS:
            self.assertIn(wenv.get(s, self.settings[s]), created, s)

    def test_worker_healthcheck_uses_healthz(self):
        hc = self.services["worker"].get("healthcheck")
        if hc is not None:
            self.assertFalse(hc.get("disable"), "the worker's health check is disabled")
            self.assertIn("/healthz", str(hc.get("test")))
            port = environment(self.services["worker"])["METRICS_ADDR"].rsplit(":", 1)[1]
            self.assertIn(":%s/healthz" % port, str(hc.get("test")))
        self.assertTrue(any(i == "HEALTHCHECK" and "/healthz" in a
                            for i, a in dockerfile_instructions()))

    def compose_config(self, path):
        cmd = compose_command()
        if cmd is None:
            self.skipTest("neither the docker CLI's compose plugin (`docker compose`) nor "
                          "docker-compose is installed: the file is not validated against the "
                          "Compose schema (tests/harness/deps.sh installs docker-compose)")
        res = subprocess.run(cmd + ["-f", path, "config", "-q"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True)
        return " ".join(cmd), res

    def test_docker_compose_config(self):
        """The file is valid by the Compose schema (`config -q`, no engine needed)."""
        cmd, res = self.compose_config(COMPOSE)
        self.assertEqual(res.returncode, 0, "%s config: %s" % (cmd, res.stdout))
        print("\n  %s config -q: valid" % cmd, end=" ")

    def test_docker_compose_config_refuses_a_bad_file(self):
        """The same check refuses a file that breaks the schema (so that it checks at all)."""
        bad = read(COMPOSE).replace("\n  worker:\n", "\n  worker:\n    restartt: always\n", 1)
        self.assertNotEqual(bad, read(COMPOSE))
        with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="compose-test-") as f:
            f.write(bad)
            f.flush()
            cmd, res = self.compose_config(f.name)
        self.assertNotEqual(res.returncode, 0, "%s config accepted: %s" % (cmd, res.stdout))
        self.assertIn("restartt", res.stdout)


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ins = dockerfile_instructions()

    def args(self, name):
        return [a for i, a in self.ins if i == name]

    def test_two_stages(self):
        froms = self.args("FROM")
        self.assertEqual(len(froms), 2, froms)
        self.assertRegex(froms[0], r"^debian:bookworm\s+AS\s+\w+", )
        self.assertRegex(froms[1], r"^debian:bookworm-slim(\s|$)")

    def test_runs_as_non_root(self):
        users = self.args("USER")
        self.assertTrue(users, "no USER: the image would run as root")
        user = users[-1].split(":")[0]
        self.assertNotIn(user, ("root", "0"))
        # The last USER must be in the final stage.
        last_from = max(k for k, (i, _) in enumerate(self.ins) if i == "FROM")
        last_user = max(k for k, (i, _) in enumerate(self.ins) if i == "USER")
        self.assertGreater(last_user, last_from)

    def test_entrypoint_cmd_and_env(self):
        self.assertEqual(self.args("ENTRYPOINT"), ['["metadata-worker"]'])
        self.assertEqual(self.args("CMD"), ['["run"]'])
        env = " ".join(self.args("ENV"))
        self.assertRegex(env, r"\bMETRICS_ADDR=0\.0\.0\.0:9090\b")
        settings = config_settings()
        for name in re.findall(r"\b([A-Z][A-Z0-9_]*)=", env):
            self.assertIn(name, settings, "ENV %s is not a setting of worker/config.c" % name)

    def test_healthcheck(self):
        hc = self.args("HEALTHCHECK")
        self.assertEqual(len(hc), 1)
        self.assertIn("/healthz", hc[0])
        self.assertIn("127.0.0.1", hc[0])

    def test_packages_come_from_the_one_list(self):
        """Every apt-get install reads its packages from deps/packages.txt (no second list)."""
        installs = [a for a in self.args("RUN") if "apt-get install" in a]
        self.assertEqual(len(installs), 2, installs)
        for run, section in zip(installs, ("build", "runtime")):
            self.assertIn("deps/packages.sh %s)" % section, run)
            self.assertRegex(run, r"apt-get install [^&]*\$pkgs")
            pkgs = subprocess.run(["sh", os.path.join(ROOT, "deps", "packages.sh"), section],
                                  stdout=subprocess.PIPE, universal_newlines=True, check=True)
            self.assertTrue(pkgs.stdout.split(), section)
        self.assertIn("deps/ /tmp/deps/", self.args("COPY"))

    def test_build_excludes_host_build_dir(self):
        with open(os.path.join(ROOT, ".dockerignore"), encoding="utf-8") as f:
            lines = {l.strip().rstrip("/") for l in f if l.strip() and not l.startswith("#")}
        self.assertIn("build", lines)


if __name__ == "__main__":
    unittest.main()
