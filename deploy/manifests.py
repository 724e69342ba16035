#!/usr/bin/env python3
"""What deploy/check asks of deploy/kubernetes beyond the API schemas.

    manifests.py check [--secrets SECRETS_YAML] [--material DIR]
        writ.toml parses; every file it names is mounted into the Writ
        container from a ConfigMap key or Secret key that exists, readable
        by Writ, and its TLS private keys with a mode Writ accepts; ports,
        probes, Services, selectors, the agent's token audience and subject,
        certificate names and the pods' hardening agree.
    manifests.py compose SCHEMA_JSON
        docker-compose.yml fits the Compose specification's schema, and
        what it runs fits together: volumes, dependencies, bind mounts,
        the replicas' configuration (deploy/compose/writ.toml), their own
        ports and audit logs.
    manifests.py policies DIR
        writes the Cedar policies of the ConfigMap writ-policies into DIR.
    manifests.py layout ROOT MATERIAL REDIS_PORT
        lays out, under ROOT, the files the kubelet would mount into the Writ
        and Redis pods (Secrets from MATERIAL, made by make-secrets, with
        the mode the kubelet gives them, and, when run as root, owned by
        root and the pod's fsGroup), with writ.toml and redis.conf pointing
        under ROOT and at a Redis on localhost:REDIS_PORT; prints shell
        assignments for deploy/smoke-test. Not as root, Writ's TLS private
        keys are made 0600 instead (Writ accepts a group-readable key only
        when root owns it); KEY_LAYOUT says which was done. What the
        cluster itself provides comes from MATERIAL/cluster: ca.crt for the
        ConfigMap kube-root-ca.crt, token for projected service-account
        tokens. The issuer's jwks_url becomes https://127.0.0.1:9/… (a
        closed port: no API server here).

Python 3.11 or later (tomllib) and PyYAML.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import yaml

HERE = Path(__file__).resolve().parent
KUBE = HERE / "kubernetes"

# The Secrets make-secrets writes, and where their files are in its output.
SECRET_MATERIAL = {
    "writ-tls": "writ",
    "writ-redis-client": "writ-redis-client",
    "redis-tls": "redis",
    "writ-keys": "keys",
}

# Where deploy/smoke-test's Writ fetches the issuer's keys: a closed port
# on loopback, for there is no API server.
ISSUER_JWKS_URL = "https://127.0.0.1:9/openid/v1/jwks"

# ConfigMaps Kubernetes publishes in every namespace, and their keys: the
# cluster's CA (kube-controller-manager's root-ca-cert-publisher).
CLUSTER_CONFIGMAPS = {"kube-root-ca.crt": {"ca.crt"}}

# The private keys whose mode Writ checks (src/tls/mod.rs,
# check_key_permissions): refused if others may read them; readable by the
# group only when root owns them (and never group-writable).
PRIVATE_KEY_FIELDS = ("server.tls.key_file", "store.client_key_file")

errors: list[str] = []


def fail(message: str) -> None:
    errors.append(message)


def load_resources() -> tuple[list[str], list[dict]]:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    files = kustomization.get("resources", [])
    docs = []
    for name in files:
        for doc in yaml.safe_load_all((KUBE / name).read_text()):
            if doc:
                doc["__file"] = name
                docs.append(doc)
    return files, docs


def find(docs: list[dict], kind: str, name: str, namespace: str | None = None) -> dict | None:
    for doc in docs:
        meta = doc.get("metadata", {})
        if doc.get("kind") == kind and meta.get("name") == name:
            if namespace is None or meta.get("namespace") == namespace:
                return doc
    return None


def need(docs: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    doc = find(docs, kind, name, namespace)
    if doc is None:
        raise SystemExit(f"manifests.py: no {kind} {namespace}/{name} in deploy/kubernetes")
    return doc


def writ_toml(docs: list[dict]) -> tuple[str, dict]:
    text = need(docs, "ConfigMap", "writ-config", "writ")["data"]["writ.toml"]
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SystemExit(f"writ-config.yaml: writ.toml does not parse: {error}")


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(spec: dict, name: str) -> dict:
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        if c["name"] == name:
            return c
    raise SystemExit(f"manifests.py: no container {name}")


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def expand(value: str, env: dict[str, str], pod_name: str) -> str:
    """$(VAR) as the kubelet expands it; POD_NAME stands for the pod's name."""
    values = dict(env, POD_NAME=pod_name)
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: values.get(m.group(1), m.group(0)), value)


def mount_for(c: dict, path: str) -> tuple[dict, str] | None:
    """The volume mount holding `path`, and the path inside the volume."""
    best = None
    for m in c.get("volumeMounts", []):
        mount = m["mountPath"].rstrip("/")
        if path == mount or path.startswith(mount + "/"):
            if best is None or len(mount) > len(best[0]["mountPath"].rstrip("/")):
                inner = path[len(mount):].lstrip("/")
                if m.get("subPath"):
                    inner = str(PurePosixPath(m["subPath"], inner)) if inner else m["subPath"]
                best = (m, inner)
    return best


def volume(spec: dict, name: str, claims: tuple[str, ...] = ()) -> dict:
    for v in spec.get("volumes", []):
        if v["name"] == name:
            return v
    if name in claims:
        return {"name": name, "persistentVolumeClaim": {"claimName": name}}
    raise SystemExit(f"manifests.py: no volume {name}")


def claims_of(workload: dict) -> tuple[str, ...]:
    return tuple(t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", []))


class Sources:
    """ConfigMap and Secret keys: the manifests', and make-secrets'."""

    def __init__(self, docs: list[dict], secrets: list[dict] | None):
        self.docs = docs
        self.secrets = secrets

    def keys(self, kind: str, name: str, namespace: str) -> set[str] | None:
        if kind == "ConfigMap" and name in CLUSTER_CONFIGMAPS:
            return set(CLUSTER_CONFIGMAPS[name])
        doc = find(self.docs, kind, name, namespace)
        if doc is None and self.secrets is not None:
            doc = find(self.secrets, kind, name, namespace)
        if doc is None:
            return None
        return set(doc.get("data", {})) | set(doc.get("binaryData", {})) | set(doc.get("stringData", {}))


def kubelet_mode(spec: dict, v: dict, key: str, source: dict | None = None) -> int:
    """The mode of a ConfigMap's or Secret's file as the kubelet leaves it:
    the item's mode, else defaultMode (0644 if unset); with the pod's
    fsGroup the files (owned by root) go to that group, which may read them
    (the kubelet adds 0440 to a read-only volume's files). `source`: one
    source of a projected volume `v`, whose defaultMode applies."""
    if source is None:
        source = v.get("configMap") or v.get("secret")
        mode = source.get("defaultMode", 0o644)
    else:
        mode = v["projected"].get("defaultMode", 0o644)
    for item in source.get("items") or []:
        if item["key"] == key and "mode" in item:
            mode = item["mode"]
    if "fsGroup" in spec.get("securityContext", {}):
        mode |= 0o440
    return mode


def resolve(sources: Sources, spec: dict, c: dict, path: str, namespace: str, what: str,
            private_key: bool = False) -> str | None:
    """Where the file at `path` in container `c` comes from, or an error.
    `private_key`: a key whose mode Writ checks (PRIVATE_KEY_FIELDS)."""
    found = mount_for(c, path)
    if found is None:
        fail(f"{what}: {path} is on no volume mounted into container {c['name']}")
        return None
    mount, inner = found
    v = volume(spec, mount["name"])

    def from_key(kind: str, name: str, key: str | None, source: dict | None = None) -> str | None:
        keys = sources.keys(kind, name, namespace)
        if keys is None:
            if sources.secrets is None:
                return f"{kind} {name} (not checked: no secrets.yaml)"
            fail(f"{what}: {path} comes from {kind} {namespace}/{name}, which neither the manifests, "
                 "make-secrets nor Kubernetes make")
        elif key not in keys:
            fail(f"{what}: {path} is key {key!r} of {kind} {namespace}/{name}, which has only {sorted(keys)}")
        # The file belongs to root; the container runs as non-root.
        mode = kubelet_mode(spec, v, key, source)
        fs_group = "fsGroup" in spec.get("securityContext", {})
        if not fs_group and not mode & 0o004:
            fail(f"{what}: {path} (mode {mode:04o}, owned by root) is unreadable by container {c['name']}: "
                 "set the pod's fsGroup")
        if private_key:
            if mode & 0o007:
                fail(f"{what}: {path} would be mode {mode:04o}: Writ refuses a private key others can read "
                     "(defaultMode 0440)")
            elif mode & 0o030:
                fail(f"{what}: {path} would be mode {mode:04o}: Writ refuses a root-owned private key its "
                     "group may write or execute (defaultMode 0440)")
        return f"{kind} {name} key {key}"

    if "configMap" in v or "secret" in v:
        kind, name = ("ConfigMap", v["configMap"]["name"]) if "configMap" in v else ("Secret", v["secret"]["secretName"])
        items = (v.get("configMap") or v.get("secret")).get("items")
        key = inner
        if items:
            key = next((i["key"] for i in items if i["path"] == inner), None)
        return from_key(kind, name, key)
    if "projected" in v:
        for source in v["projected"]["sources"]:
            token = source.get("serviceAccountToken")
            if token:
                if token["path"] == inner:
                    return f"projected token (audience {token.get('audience')})"
                continue
            inner_source = source.get("configMap") or source.get("secret")
            if inner_source is None:
                continue  # downwardAPI, clusterTrustBundle: nothing writ.toml names
            kind = "ConfigMap" if "configMap" in source else "Secret"
            items = inner_source.get("items")
            if items:
                key = next((i["key"] for i in items if i["path"] == inner), None)
                if key is None:
                    continue
            else:
                keys = sources.keys(kind, inner_source["name"], namespace)
                if keys is None or inner not in keys:
                    continue
                key = inner
            return from_key(kind, inner_source["name"], key, source)
        fail(f"{what}: {path} is not a file of projected volume {mount['name']}")
        return None
    fail(f"{what}: {path} is on volume {mount['name']}, which holds no such file")
    return None


def file_paths(config: dict) -> list[tuple[str, str]]:
    """(field, path) of every file writ.toml names, audit.path aside."""
    paths = []
    tls = config.get("server", {}).get("tls", {})
    for field in ("cert_file", "key_file", "client_ca_file"):
        if field in tls:
            paths.append((f"server.tls.{field}", tls[field]))
    for field in ("ca_file", "client_cert_file", "client_key_file"):
        if field in config.get("store", {}):
            paths.append((f"store.{field}", config["store"][field]))
    audit = config.get("audit", {})
    for field in ("key_file", "signing_key_file"):
        if field in audit:
            paths.append((f"audit.{field}", audit[field]))
    for i, key in enumerate(config.get("sealing", {}).get("keys", [])):
        paths.append((f"sealing.keys[{i}].file", key["file"]))
    for i, path in enumerate(config.get("policy", {}).get("paths", [])):
        paths.append((f"policy.paths[{i}]", path))
    for name, provider in config.get("providers", {}).items():
        for field in ("key_file", "token_file", "admin_password_file", "client_secret_file", "tls_ca_file"):
            if field in provider:
                paths.append((f"providers.{name}.{field}", provider[field]))
    for i, issuer in enumerate(config.get("issuers", [])):
        for field in ("ca_file", "token_file"):
            if field in issuer:
                paths.append((f"issuers[{i}].{field}", issuer[field]))
    return paths


def check_config(config: dict, policies: dict[str, str]) -> None:
    server = config.get("server", {})
    for section in ("server", "audit", "sealing", "policy"):
        if section not in config:
            fail(f"writ.toml: [{section}] is required")
    if "tls" not in server or server.get("plaintext"):
        fail("writ.toml: [server.tls] is required and plaintext must be off")
    store = config.get("store", {})
    if store.get("kind") != "redis" or not str(store.get("url", "")).startswith("rediss://"):
        fail("writ.toml: [store] must be kind = \"redis\" with a rediss:// url (several replicas, TLS)")
    if "ca_file" not in store:
        fail("writ.toml: store.ca_file is needed to trust a private Redis CA")
    issuers = [i["issuer"] for i in config.get("issuers", [])]
    names = []
    for kind in ("agents", "services"):
        for entry in config.get(kind, []):
            names.append(entry["name"])
            identity = entry.get("identity")
            if identity and identity.get("issuer") not in issuers:
                fail(f"writ.toml: {kind} {entry['name']}: issuer {identity.get('issuer')} is not in [[issuers]]")
            if "certificate" in entry and "client_ca_file" not in server.get("tls", {}):
                fail(f"writ.toml: service {entry['name']} is identified by certificate: needs server.tls.client_ca_file")
    if len(names) != len(set(names)):
        fail(f"writ.toml: agent and service names must be unique: {names}")
    agents = {a["name"] for a in config.get("agents", [])}
    text = "\n".join(policies.values())
    for agent in re.findall(r'Writ::Agent::"([^"]+)"', text):
        if agent not in agents:
            fail(f"writ-policies: Writ::Agent::\"{agent}\" is not an agent of writ.toml")
    for provider, role in re.findall(r'Writ::Role::"([^"/]+)/([^"]+)"', text):
        if role not in config.get("providers", {}).get(provider, {}).get("roles", {}):
            fail(f"writ-policies: Writ::Role::\"{provider}/{role}\" is not a role of writ.toml's providers")


def check_hardening(doc: dict) -> None:
    spec = pod_spec(doc)
    pod = spec.get("securityContext", {})
    where = f"{doc['__file']}: {doc['kind']} {doc['metadata']['name']}"
    if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(f"{where}: the pod needs seccompProfile RuntimeDefault")
    names = {v["name"] for v in spec.get("volumes", [])} | set(claims_of(doc))
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        for m in c.get("volumeMounts", []):
            if m["name"] not in names:
                fail(f"{where}: container {c['name']} mounts volume {m['name']}, which the pod does not have")
        sc = c.get("securityContext", {})
        if not (sc.get("runAsNonRoot", pod.get("runAsNonRoot"))):
            fail(f"{where}: container {c['name']} must run as non-root")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{where}: container {c['name']} needs allowPrivilegeEscalation: false")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(f"{where}: container {c['name']} needs readOnlyRootFilesystem: true")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(f"{where}: container {c['name']} must drop ALL capabilities")
        if "resources" not in c or "requests" not in c["resources"]:
            fail(f"{where}: container {c['name']} needs resource requests")


def projected_token(spec: dict, c: dict, path: str) -> dict | None:
    """The serviceAccountToken source of a projected volume that puts a
    token at `path` in container `c`, if any."""
    found = mount_for(c, path)
    if found is None:
        return None
    v = volume(spec, found[0]["name"])
    for source in v.get("projected", {}).get("sources", []):
        token = source.get("serviceAccountToken")
        if token and token["path"] == found[1]:
            return token
    return None


def matches(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        has, value = e["key"] in labels, labels.get(e["key"])
        op = e["operator"]
        if (op == "In" and value not in e["values"]) or (op == "NotIn" and has and value in e["values"]) \
                or (op == "Exists" and not has) or (op == "DoesNotExist" and has):
            return False
    return True


def egress_allows(docs: list[dict], namespace: str, labels: dict, port: int) -> bool | None:
    """Whether the NetworkPolicies of `namespace` let pods with `labels`
    connect to TCP `port` (anywhere: `to` is not judged); None when no
    policy restricts their egress."""
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"].get("namespace") == namespace
                and "Egress" in d["spec"].get("policyTypes", []) and matches(d["spec"]["podSelector"], labels)]
    if not policies:
        return None
    for policy in policies:
        for rule in policy["spec"].get("egress") or []:
            ports = rule.get("ports")
            if not ports or any(p.get("protocol", "TCP") == "TCP" and
                                (p.get("port") is None or p["port"] == port or
                                 (isinstance(p["port"], int) and p["port"] <= port <= p.get("endPort", p["port"])))
                                for p in ports):
                return True
    return False


def check_issuers(docs: list[dict], config: dict, deployment: dict, writ: dict) -> None:
    """Where Writ fetches each issuer's keys from, and with what: the
    token_file a projected service-account token for the API server, the
    ca_file and token_file only for https, egress open to the port."""
    spec = pod_spec(deployment)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    audience = config["server"]["audience"]
    for i, issuer in enumerate(config.get("issuers", [])):
        where = f"writ.toml issuers[{i}] ({issuer['issuer']})"
        url = urlsplit(issuer.get("jwks_url") or issuer["issuer"].rstrip("/") + "/.well-known/openid-configuration")
        if ("ca_file" in issuer or "token_file" in issuer) and url.scheme != "https":
            fail(f"{where}: ca_file and token_file are for an https endpoint, not {url.geturl()}")
        if "token_file" in issuer:
            token = projected_token(spec, writ, issuer["token_file"])
            if token is None and mount_for(writ, issuer["token_file"]) is None:
                pass  # said above: on no volume
            elif token is None:
                fail(f"{where}: token_file {issuer['token_file']} must be a projected serviceAccountToken of "
                     "the Writ pod (the kubelet renews it)")
            else:
                aud = token.get("audience")
                # Left out, the token is for the API server (--api-audiences,
                # by default the issuer). server.audience would make it a
                # token Writ itself accepts, and the API server refuses.
                if aud is not None and aud != issuer["issuer"]:
                    fail(f"{where}: token_file's projected token has audience {aud!r}: leave audience out "
                         f"(the API server's own), or set it to the issuer{' (not server.audience)' if aud == audience else ''}")
                if not 600 <= token.get("expirationSeconds", 3600) <= 86400 * 2:
                    fail(f"{where}: token_file's expirationSeconds must be between 600 and 172800")
        if "token_file" in issuer or "ca_file" in issuer:
            # The API server: at the Service's 443 and, once most CNIs have
            # translated the Service's address, its own 6443.
            ports = {url.port or 443}
            if (url.hostname or "").startswith("kubernetes.default"):
                ports.add(6443)
        else:
            ports = {url.port or (443 if url.scheme == "https" else 80)}
        for port in sorted(ports):
            if egress_allows(docs, "writ", labels, port) is False:
                fail(f"network-policies.yaml: Writ may not connect to TCP {port}, where {where} serves its keys")
    for what, value in (("ServiceAccount writ", need(docs, "ServiceAccount", spec.get("serviceAccountName", "default"), "writ")
                         .get("automountServiceAccountToken")),
                        ("the Writ pod", spec.get("automountServiceAccountToken"))):
        if value is not False:
            fail(f"writ.yaml: {what} must set automountServiceAccountToken: false (the only token Writ holds "
                 "is the issuer's projected one)")


def sans(cert: Path) -> list[str]:
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
                         capture_output=True, text=True, check=True).stdout
    return [name.strip() for name in out.splitlines()[-1].split(",")]


def check(secrets_path: str | None, material: str | None) -> int:
    files, docs = load_resources()
    listed = set(files)
    present = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    for name in sorted(present - listed):
        fail(f"kustomization.yaml does not list {name}")
    seen = set()
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    for d in docs:
        key = (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        if key in seen:
            fail(f"{d['__file']}: {key} is defined twice")
        seen.add(key)
        ns = d["metadata"].get("namespace")
        if d["kind"] != "Namespace" and ns not in namespaces:
            fail(f"{d['__file']}: {d['kind']} {d['metadata']['name']}: namespace {ns!r} is not in namespaces.yaml")
        if d["kind"] in ("Deployment", "StatefulSet"):
            check_hardening(d)
            labels = d["spec"]["template"]["metadata"]["labels"]
            if any(labels.get(k) != v for k, v in d["spec"]["selector"]["matchLabels"].items()):
                fail(f"{d['__file']}: {d['kind']} {d['metadata']['name']}: selector does not match its pods")

    secrets = None
    if secrets_path:
        secrets = [d for d in yaml.safe_load_all(Path(secrets_path).read_text()) if d]
    sources = Sources(docs, secrets)

    text, config = writ_toml(docs)
    policies = need(docs, "ConfigMap", "writ-policies", "writ")["data"]
    check_config(config, policies)

    deployment = need(docs, "Deployment", "writ", "writ")
    spec = pod_spec(deployment)
    writ = container(spec, "writ")
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    # Every file writ.toml names is there.
    for field, path in file_paths(config):
        if not path.startswith("/"):
            fail(f"writ.toml: {field} = {path!r}: use absolute paths in a container")
            continue
        if field.startswith("policy.paths"):
            found = mount_for(writ, path)
            if found is None or "configMap" not in volume(spec, found[0]["name"]):
                fail(f"writ.toml: {field} {path} is not a mounted ConfigMap")
            continue
        resolve(sources, spec, writ, path, "writ", f"writ.toml {field}", field in PRIVATE_KEY_FIELDS)

    check_issuers(docs, config, deployment, writ)

    env = env_of(writ)
    pod_env = {e["name"]: e for e in writ.get("env", [])}
    if pod_env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        fail("writ.yaml: POD_NAME must come from metadata.name")
    for name in ("WRIT_REPLICA", "WRIT_AUDIT_PATH"):
        if "$(POD_NAME)" not in env.get(name, ""):
            fail(f"writ.yaml: {name} must name the pod ($(POD_NAME)): every replica its own audit log")
    audit_path = expand(env.get("WRIT_AUDIT_PATH", config["audit"]["path"]), env, "writ-0")
    found = mount_for(writ, audit_path)
    if found is None or found[0].get("readOnly"):
        fail(f"writ.yaml: the audit log {audit_path} must be on a writable volume")

    # Ports, probes, Service, PDB.
    ports = {p["name"]: p["containerPort"] for p in writ.get("ports", [])}
    grpc_port = int(config["server"]["listen"].rsplit(":", 1)[1])
    http_port = int(config["server"]["http_listen"].rsplit(":", 1)[1])
    if sorted(ports.values()) != sorted([grpc_port, http_port]):
        fail(f"writ.yaml: container ports {ports} are not the listeners {grpc_port} and {http_port}")
    # Writ's health routes (src/http.rs): /healthz, 200 while the process
    # answers; /readyz, 200 while the store, the audit log and every worker
    # work, else 503.
    for probe_name, route in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                              ("readinessProbe", "/readyz")):
        probe = writ.get(probe_name)
        if probe is None:
            fail(f"writ.yaml: the writ container needs a {probe_name}")
            continue
        get = probe.get("httpGet")
        if get is None:
            fail(f"writ.yaml: {probe_name} must be an httpGet probe (grpc probes do not speak TLS)")
            continue
        port = ports.get(get["port"], get["port"])
        if port != http_port or get.get("scheme") != "HTTPS":
            fail(f"writ.yaml: {probe_name} must get HTTPS on the HTTP listener ({http_port})")
        if get.get("path") != route:
            fail(f"writ.yaml: {probe_name} must get {route}, not {get.get('path')}")
    service = need(docs, "Service", "writ", "writ")
    if service["spec"]["selector"] != labels:
        fail("writ.yaml: Service writ does not select the Writ pods")
    for p in service["spec"]["ports"]:
        if p["targetPort"] not in ports and p["targetPort"] not in ports.values():
            fail(f"writ.yaml: Service port {p['name']} targets {p['targetPort']}, not a container port")
    pdb = need(docs, "PodDisruptionBudget", "writ", "writ")
    if pdb["spec"]["selector"]["matchLabels"] != labels:
        fail("writ.yaml: the PodDisruptionBudget does not select the Writ pods")
    if deployment["spec"]["replicas"] < 2:
        fail("writ.yaml: run at least two replicas")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    shutdown = config["server"].get("shutdown_grace", "10s")
    if not re.fullmatch(r"\d+s", shutdown) or int(shutdown[:-1]) >= grace:
        fail(f"writ.yaml: terminationGracePeriodSeconds ({grace}) must exceed server.shutdown_grace ({shutdown})")

    # Redis.
    redis_conf = need(docs, "ConfigMap", "redis-config", "writ")["data"]["redis.conf"]
    settings = dict(line.split(None, 1) for line in redis_conf.splitlines() if line.strip() and not line.startswith("#"))
    for key, value in {"port": "0", "tls-auth-clients": "yes", "appendonly": "yes", "maxmemory-policy": "noeviction"}.items():
        if settings.get(key) != value:
            fail(f"redis.yaml: redis.conf needs `{key} {value}`")
    url = urlsplit(config["store"]["url"])
    redis_service = need(docs, "Service", url.hostname.split(".")[0], url.hostname.split(".")[1])
    if url.port not in [p["port"] for p in redis_service["spec"]["ports"]] or str(url.port) != settings.get("tls-port"):
        fail(f"redis.yaml: {config['store']['url']} is not Redis's TLS port")
    redis = pod_spec(need(docs, "StatefulSet", "redis", "writ"))
    redis_c = container(redis, "redis")
    for key in ("tls-cert-file", "tls-key-file", "tls-ca-cert-file"):
        resolve(sources, redis, redis_c, settings[key], "writ", f"redis.conf {key}")

    # The example agent.
    agent = need(docs, "Deployment", "example-agent", "agents")
    aspec = pod_spec(agent)
    ac = aspec["containers"][0]
    aenv = env_of(ac)
    subject = f"system:serviceaccount:agents:{aspec['serviceAccountName']}"
    if not any(a["identity"].get("subject") == subject for a in config.get("agents", [])):
        fail(f"example-agent.yaml: {subject} is not an agent's subject in writ.toml")
    if need(docs, "ServiceAccount", aspec["serviceAccountName"], "agents") is None:
        fail("example-agent.yaml: its ServiceAccount is missing")
    origin = resolve(sources, aspec, ac, aenv.get("WRIT_TOKEN_FILE", "/missing"), "agents", "WRIT_TOKEN_FILE")
    if origin and f"audience {config['server']['audience']})" not in origin:
        fail(f"example-agent.yaml: the projected token's audience must be server.audience ({config['server']['audience']})")
    for name in ("WRIT_CA", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"):
        resolve(sources, aspec, ac, aenv.get(name, "/missing"), "agents", name)
    endpoint = urlsplit(aenv.get("WRIT_ENDPOINT", ""))
    host = endpoint.hostname or ""
    if endpoint.scheme != "https" or endpoint.port != grpc_port or host.split(".")[:2] != ["writ", "writ"]:
        fail(f"example-agent.yaml: WRIT_ENDPOINT must be https://writ.writ.svc:{grpc_port}")

    # Certificate names, on make-secrets' certificates.
    if material:
        writ_names = sans(Path(material, "writ", "tls.crt"))
        if f"DNS:{host}" not in writ_names:
            fail(f"make-certs: Writ's certificate does not name {host} (WRIT_ENDPOINT): {writ_names}")
        redis_names = sans(Path(material, "redis", "tls.crt"))
        if f"DNS:{url.hostname}" not in redis_names:
            fail(f"make-certs: Redis's certificate does not name {url.hostname} (store.url): {redis_names}")
        workflow_names = sans(Path(material, "workflow", "tls.crt"))
        for service in config.get("services", []):
            uri = service.get("certificate", {}).get("uri")
            if uri and f"URI:{uri}" not in workflow_names:
                fail(f"make-certs: the workflow certificate does not carry {uri}: {workflow_names}")

    for message in errors:
        print(f"FAIL {message}")
    if not errors:
        print(f"ok   {len(docs)} resources agree with writ.toml: files, mounts, ports, probes, Services, "
              f"agent identity{', Secret keys' if secrets else ''}{', certificate names' if material else ''}")
    return 1 if errors else 0


def compose(schema_path: str) -> int:
    import json

    import jsonschema

    repo = HERE.parent
    text = (repo / "docker-compose.yml").read_text()
    doc = yaml.safe_load(text)
    schema = json.loads(Path(schema_path).read_text())
    validator = jsonschema.Draft201909Validator(schema)
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        fail(f"docker-compose.yml: {'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}")
    services = doc.get("services", {})
    volumes = set(doc.get("volumes") or {})
    replicas = {}
    for name, service in services.items():
        deps = service.get("depends_on", {})
        for dep in deps if isinstance(deps, (list, dict)) else []:
            if dep not in services:
                fail(f"docker-compose.yml: {name} depends on unknown service {dep}")
        network = service.get("network_mode", "")
        if network.startswith("service:") and network[8:] not in services:
            fail(f"docker-compose.yml: {name}: network_mode names unknown service {network[8:]}")
        mounts = {}
        for spec in service.get("volumes", []):
            source, target = spec.split(":")[:2]
            if source.startswith("."):
                if not (repo / source).exists():
                    fail(f"docker-compose.yml: {name} mounts {source}, which is not in the repository")
                mounts[target] = repo / source
            else:
                if source not in volumes:
                    fail(f"docker-compose.yml: {name} mounts undeclared volume {source}")
                mounts[target] = None
        command = service.get("command", [])
        if isinstance(command, list) and command[:1] == ["serve"]:
            replicas[name] = (service, mounts, command)

    def under_mount(mounts: dict, path: str) -> tuple[str, Path | None] | None:
        for target, source in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if path == target or path.startswith(target.rstrip("/") + "/"):
                return target, source
        return None

    seen_audit, seen_replica, seen_ports = set(), set(), set()
    for name, (service, mounts, command) in replicas.items():
        config_path = command[command.index("--config") + 1]
        found = under_mount(mounts, config_path)
        if found is None or found[1] is None:
            fail(f"docker-compose.yml: {name}: --config {config_path} is not a file of the repository mounted in")
            continue
        target, source = found
        local = source / config_path[len(target):].lstrip("/") if source.is_dir() else source
        try:
            config = tomllib.loads(local.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            fail(f"{local.relative_to(repo)}: does not parse: {error}")
            continue
        server = config.get("server", {})
        if "tls" not in server or server.get("plaintext"):
            fail(f"{local.relative_to(repo)}: [server.tls] is required and plaintext must be off")
        if not str(config.get("store", {}).get("url", "")).startswith("rediss://"):
            fail(f"{local.relative_to(repo)}: store.url must be rediss:// (Redis over TLS)")
        for field, path in file_paths(config):
            if under_mount(mounts, path) is None:
                fail(f"docker-compose.yml: {name}: {field} {path} is on no volume of the service")
        env = service.get("environment", {})
        for key, seen in (("WRIT_AUDIT_PATH", seen_audit), ("WRIT_REPLICA", seen_replica)):
            if key not in env or env[key] in seen:
                fail(f"docker-compose.yml: {name}: {key} must be set, and differ between replicas")
            seen.add(env.get(key))
        owner = service.get("network_mode", "")[8:] or name
        published = [p.rsplit(":", 1)[-1] for p in services[owner].get("ports", [])]
        for key in ("WRIT_LISTEN", "WRIT_HTTP_LISTEN"):
            port = str(env.get(key, "")).rsplit(":", 1)[-1]
            if port in seen_ports:
                fail(f"docker-compose.yml: {name}: {key} port {port} is taken by another replica")
            seen_ports.add(port)
            if port not in published:
                fail(f"docker-compose.yml: {name}: {key} port {port} is not published by {owner}")
    if len(replicas) < 2:
        fail("docker-compose.yml: run at least two `writ serve` replicas")
    for message in errors:
        print(f"FAIL {message}")
    if not errors:
        print(f"ok   docker-compose.yml fits the Compose schema; {len(replicas)} TLS replicas "
              f"({', '.join(replicas)}) with their configuration, volumes, ports and audit logs")
    return 1 if errors else 0


def policies(out: str) -> int:
    _, docs = load_resources()
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, text in need(docs, "ConfigMap", "writ-policies", "writ")["data"].items():
        Path(out, name).write_text(text)
    return 0


def layout(root: str, material: str, redis_port: str) -> int:
    """Files as the kubelet would mount them, under `root`."""
    _, docs = load_resources()
    rootp = Path(root)

    def under(path: str) -> Path:
        return rootp / path.lstrip("/")

    def rewrite_toml(text: str) -> str:
        text = re.sub(r'"(/[^"]*)"', lambda m: f'"{under(m.group(1))}"', text)
        text = re.sub(r'rediss://[^"/]+', f"rediss://localhost:{redis_port}", text)
        # No API server here: a closed port fails at once (a warning), after
        # Writ has read the token_file (ca_file it reads at start).
        return re.sub(r'jwks_url = "[^"]*"', f'jwks_url = "{ISSUER_JWKS_URL}"', text)

    def rewrite_redis(text: str) -> str:
        lines = []
        for line in text.splitlines():
            key = line.split(None, 1)[0] if line.strip() else ""
            if key in ("tls-cert-file", "tls-key-file", "tls-ca-cert-file", "dir"):
                line = f"{key} {under(line.split(None, 1)[1])}"
            elif key == "tls-port":
                line = f"tls-port {redis_port}"
            elif key == "bind":
                line = "bind 127.0.0.1"
            lines.append(line)
        return "\n".join(lines) + "\n"

    def lay(doc: dict) -> None:
        spec = pod_spec(doc)
        for c in spec.get("initContainers", []) + spec["containers"]:
            for m in c.get("volumeMounts", []):
                v = volume(spec, m["name"], claims_of(doc))
                target = under(m["mountPath"])
                if "configMap" in v:
                    data = need(docs, "ConfigMap", v["configMap"]["name"], doc["metadata"]["namespace"])["data"]
                    if m.get("subPath"):
                        data = {target.name: data[m["subPath"]]}
                        target = target.parent
                    target.mkdir(parents=True, exist_ok=True)
                    for key, value in data.items():
                        if key == "writ.toml":
                            value = rewrite_toml(value)
                        elif key == "redis.conf":
                            value = rewrite_redis(value)
                        (target / key).write_text(value)
                elif "secret" in v or "projected" in v:
                    # As the kubelet's atomic writer leaves a Secret or a
                    # projected volume: the files in a timestamped
                    # directory, reached through the symlinks
                    # PATH -> ..data/PATH and ..data -> that directory;
                    # owned by root and the pod's fsGroup (only root can give
                    # files away), with the kubelet's mode.
                    if (target / "..data").exists():
                        continue  # mounted by another container too
                    files = []  # (path, content, mode, owner)
                    if "secret" in v:
                        source = Path(material, SECRET_MATERIAL[v["secret"]["secretName"]])
                        files = [(f.name, f.read_bytes(), kubelet_mode(spec, v, f.name), 0) for f in source.iterdir()]
                    for source in v.get("projected", {}).get("sources", []):
                        token = source.get("serviceAccountToken")
                        if token:
                            # A service-account token: 0600, the pod's
                            # runAsUser's, and readable by fsGroup with one.
                            mode = 0o600 | (0o040 if "fsGroup" in spec.get("securityContext", {}) else 0)
                            files.append((token["path"], Path(material, "cluster", "token").read_bytes(), mode,
                                          spec.get("securityContext", {}).get("runAsUser", 0)))
                            continue
                        inner = source.get("configMap") or source.get("secret")
                        if inner is None:
                            raise SystemExit(f"manifests.py layout: projected source {sorted(source)} is not laid out")
                        if "secret" in source:
                            folder = Path(material, SECRET_MATERIAL[inner["name"]])
                            data = {f.name: f.read_bytes() for f in folder.iterdir()}
                        elif inner["name"] in CLUSTER_CONFIGMAPS:
                            data = {"ca.crt": Path(material, "cluster", "ca.crt").read_bytes()}
                        else:
                            cm = need(docs, "ConfigMap", inner["name"], doc["metadata"]["namespace"])["data"]
                            data = {key: value.encode() for key, value in cm.items()}
                        items = inner.get("items") or [{"key": key, "path": key} for key in data]
                        for item in items:
                            files.append((item["path"], data[item["key"]],
                                          kubelet_mode(spec, v, item["key"], source), 0))
                    data = target / time.strftime("..%Y_%m_%d_%H_%M_%S.000000000", time.gmtime())
                    data.mkdir(parents=True)
                    (target / "..data").symlink_to(data.name)
                    for name, content, mode, owner in files:
                        (data / name).write_bytes(content)
                        if as_root:
                            os.chown(data / name, owner, spec.get("securityContext", {}).get("fsGroup", 0))
                        os.chmod(data / name, mode)
                        (target / name).symlink_to(f"..data/{name}")
                else:
                    target.mkdir(parents=True, exist_ok=True)

    as_root = os.geteuid() == 0
    deployment = need(docs, "Deployment", "writ", "writ")
    redis = need(docs, "StatefulSet", "redis", "writ")
    lay(deployment)
    lay(redis)
    under("/data").mkdir(parents=True, exist_ok=True)
    spec = pod_spec(deployment)
    writ = container(spec, "writ")
    env = env_of(writ)
    config = writ_toml(docs)[1]
    keys = [under(path) for field, path in file_paths(config) if field in PRIVATE_KEY_FIELDS]
    issuer_files = [under(path) for field, path in file_paths(config) if field.startswith("issuers[")]
    if as_root:
        key_layout = (f"Writ's TLS private keys as the kubelet leaves them: owned by root, group "
                      f"{spec.get('securityContext', {}).get('fsGroup', 0)}, mode "
                      f"{', '.join(sorted({f'{k.stat().st_mode & 0o777:04o}' for k in keys if k.exists()}))}")
    else:
        for k in keys:
            if k.exists():
                os.chmod(k, 0o600)
        key_layout = (f"not root: Writ's TLS private keys are owned by uid {os.geteuid()}, mode 0600, not "
                      "root-owned 0440 as in the pod (only root can give a file to root); run as root, "
                      "as CI does, to check the pod's layout")
    probe = container(pod_spec(redis), "redis")["readinessProbe"]["exec"]["command"]
    probe = [str(under(a)) if a.startswith("/") else (redis_port if a == "6379" else a) for a in probe]
    probe[1:1] = ["-h", "127.0.0.1"]
    out = {
        "WRIT_ARGS": " ".join(shlex.quote(str(under(a)) if a.startswith("/") else a) for a in writ["args"]),
        "WRIT_REPLICA": expand(env["WRIT_REPLICA"], env, "writ-smoke-0"),
        "WRIT_AUDIT_PATH": str(under(expand(env["WRIT_AUDIT_PATH"], env, "writ-smoke-0"))),
        "KEY_FILES": " ".join(shlex.quote(str(k)) for k in keys),
        "ISSUER_FILES": " ".join(shlex.quote(str(f)) for f in issuer_files),
        "ISSUER_JWKS_URL": ISSUER_JWKS_URL if any("jwks_url" in i for i in config.get("issuers", [])) else "",
        "KEY_LAYOUT": key_layout,
        "REDIS_CONF": str(under(container(pod_spec(redis), "redis")["command"][-1])),
        "REDIS_PROBE": " ".join(shlex.quote(a) for a in probe),
        "PROBES": " ".join(f"{p}={writ[p]['httpGet']['path']}" for p in ("startupProbe", "livenessProbe", "readinessProbe")
                           if "httpGet" in writ.get(p, {})),
    }
    for key, value in out.items():
        print(f"{key}={shlex.quote(value)}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        args = dict(zip(argv[1::2], argv[2::2]))
        return check(args.get("--secrets"), args.get("--material"))
    if argv[:1] == ["compose"] and len(argv) == 2:
        return compose(argv[1])
    if argv[:1] == ["policies"] and len(argv) == 2:
        return policies(argv[1])
    if argv[:1] == ["layout"] and len(argv) == 4:
        return layout(*argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
