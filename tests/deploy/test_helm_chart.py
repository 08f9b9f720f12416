"""The Helm chart, short of a cluster: it lints, renders, and every object it renders is
valid against Kubernetes' own schemas (offline, strict: no field Kubernetes does not
know); its workloads run the image's real commands with real settings, probe /livez and
/healthz on the port the services listen on, and take every credential from a Secret."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any, get_args

import kubernetes_validate
import pytest

from lepton.config import SaslMechanism, SecurityProtocol
from tests.deploy.chart import (
    CHART,
    component,
    config_map,
    console_scripts,
    container,
    helm,
    of_kind,
    render,
    tool,
    workloads,
)
from tests.unit.test_readme import settings_classes

# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest the
# schemas know.
KUBERNETES = ("1.29.0", "1.37.0")
# Values that switch on every optional part, and those that switch parts off.
VARIANTS = {
    "defaults": (),
    "everything": (
        "kafka.caCertificate.secretName=kafka-ca",
        "trainer.offer.gpus=2",
        "trainer.labels.size=large",
        "trainer.nodeSelector.lepton/trainer=true",
        "imagePullSecrets[0].name=registry",
        "config.LEPTON_PLACEMENT_POLICY=spread",
        "services.ingest.extraEnv[0].name=LEPTON_INGEST_POSTGRES_SOURCES",
        "services.ingest.extraEnv[0].valueFrom.secretKeyRef.name=lepton-credentials",
        "services.ingest.extraEnv[0].valueFrom.secretKeyRef.key=ingest-postgres-sources",
        "trainer.extraEnv[0].name=LEPTON_LOG_LEVEL",
        "trainer.extraEnv[0].value=debug",
    ),
    "lean": (
        "artifacts.existingClaim=",
        "artifacts.root=s3://models/lepton",
        "provision.enabled=false",
        "trainer.enabled=false",
        "serviceAccount.create=false",
        "metrics.annotations=false",
    ),
}
SERVICES = ("scheduler", "ingest", "evaluator", "monitor")


def env_of(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container(workload).get("env", [])}


def settings_by_variable() -> dict[str, Any]:
    """Each setting's field, by its environment variable."""
    return {
        f"LEPTON_{name.upper()}": field
        for cls in settings_classes()
        for name, field in cls.model_fields.items()
    }


def is_secret(field: Any) -> bool:
    """A setting that holds a credential: typed SecretStr (alone, optional or inside)."""
    return "SecretStr" in repr(field.annotation)


def test_credentials_are_told_apart_by_their_type() -> None:
    secret = {name for name, field in settings_by_variable().items() if is_secret(field)}
    assert {
        "LEPTON_KAFKA_SASL_PASSWORD",
        "LEPTON_DATABASE_URL",
        "LEPTON_IDENTITY_KEY",
        "LEPTON_MASTER_KEY",
        "LEPTON_SIGNING_KEY",
    } <= secret
    assert "LEPTON_KAFKA_BOOTSTRAP" not in secret


def test_the_chart_lints() -> None:
    helm("lint", "--strict", str(CHART))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("version", KUBERNETES)
def test_every_rendered_object_is_valid_kubernetes(variant: str, version: str) -> None:
    objects = render(*VARIANTS[variant])
    assert objects
    for found in objects:
        where = f"{found['kind']} {found['metadata']['name']} ({variant})"
        try:
            kubernetes_validate.validate(found, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{where}: {error.message} at {'.'.join(map(str, error.path))}")


def test_a_deployment_per_service_and_the_trainer_as_a_daemonset() -> None:
    objects = render()
    deployments = {component(d): d for d in of_kind(objects, "Deployment")}
    assert set(deployments) == set(SERVICES)
    for leader in ("scheduler", "monitor"):
        assert deployments[leader]["spec"]["replicas"] == 2, "a leader and its standby"
    (trainers,) = of_kind(objects, "DaemonSet")
    assert component(trainers) == "trainer"
    node_name = env_of(trainers)["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert node_name == "spec.nodeName"


def test_each_workload_runs_its_own_console_script() -> None:
    scripts = console_scripts()
    for workload in workloads(render()):
        command = container(workload)["command"]
        if component(workload) == "trainer":
            script = container(workload)["args"][0]
            assert 'exec lepton-trainer --node-id "$NODE_NAME"' in script
            assert "lepton-trainer" in scripts
        else:
            assert command == [f"lepton-{component(workload)}"]
            assert command[0] in scripts
    (job,) = of_kind(render(), "Job")
    assert container(job)["command"][0] in scripts


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_setting_the_chart_gives_is_a_real_setting(variant: str) -> None:
    known = settings_by_variable()
    objects = render(*VARIANTS[variant])
    given = set(config_map(objects))
    for workload in [*workloads(objects), *of_kind(objects, "Job")]:
        given |= set(env_of(workload)) - {"NODE_NAME"}  # the trainer's own, for its script
    assert given, "no settings"
    assert given <= set(known), f"not settings: {sorted(given - set(known))}"


def test_credentials_come_from_secrets_and_only_a_services_own() -> None:
    known = settings_by_variable()
    objects = render(*VARIANTS["everything"])
    leaked = {name for name in config_map(objects) if is_secret(known[name])}
    assert not leaked, f"secrets in the ConfigMap: {leaked}"
    for workload in [*workloads(objects), *of_kind(objects, "Job")]:
        name = component(workload)
        assert "LEPTON_KAFKA_SASL_PASSWORD" in env_of(workload), name
        for variable, entry in env_of(workload).items():
            if variable in known and is_secret(known[variable]):
                reference = entry["valueFrom"]["secretKeyRef"]
                assert "value" not in entry, f"{name}: {variable} given in clear"
                key = reference["key"]
                own = key.startswith(f"{name}-") or key in ("identity-key", "master-key")
                assert own or (name == "provision" and key == "admin-kafka-password"), (
                    f"{name} is given {key}"
                )
    trainer_env = env_of(next(w for w in workloads(objects) if component(w) == "trainer"))
    assert "LEPTON_IDENTITY_KEY" not in trainer_env, "a trainer holds no master identity key"


def test_probes_liveness_on_livez_readiness_on_healthz_on_the_health_port() -> None:
    objects = render()
    port = int(config_map(objects)["LEPTON_HEALTH_PORT"])
    assert config_map(objects)["LEPTON_HEALTH_HOST"] == "0.0.0.0"
    for workload in workloads(objects):
        found = container(workload)
        ports = {p["name"]: p["containerPort"] for p in found["ports"]}
        assert ports["health"] == port
        for probe, path in (
            ("startupProbe", "/livez"),
            ("livenessProbe", "/livez"),
            ("readinessProbe", "/healthz"),
        ):
            assert found[probe]["httpGet"] == {"path": path, "port": "health"}, probe


def test_every_container_has_requests_and_limits_and_runs_unprivileged() -> None:
    objects = render("trainer.offer.gpus=1")
    for workload in [*workloads(objects), *of_kind(objects, "Job")]:
        found = container(workload)
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(found["resources"][kind]), (component(workload), kind)
        assert found["securityContext"]["readOnlyRootFilesystem"] is True
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
    trainer = next(w for w in workloads(objects) if component(w) == "trainer")
    resources = container(trainer)["resources"]
    assert resources["requests"] == resources["limits"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["limits"]["cpu"] == "2500m", "2 cores offered, half a core for the agent"
    assert resources["limits"]["memory"] == "5120Mi"


def test_a_disruption_budget_covers_each_deployment() -> None:
    objects = render()
    budgets = of_kind(objects, "PodDisruptionBudget")
    for deployment in of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, component(deployment)
        assert covering[0]["spec"]["maxUnavailable"] == 1


def test_prometheus_annotations_name_a_port_the_pod_declares() -> None:
    for workload in workloads(render()):
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics/"
        declared = {p["containerPort"] for p in container(workload)["ports"]}
        assert int(annotations["prometheus.io/port"]) in declared
    monitor = next(w for w in workloads(render()) if component(w) == "monitor")
    env = env_of(monitor)
    scraped = monitor["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]
    assert env["LEPTON_MONITOR_METRICS_PORT"]["value"] == scraped, "the monitor's cluster view"
    assert env["LEPTON_MONITOR_METRICS_HOST"]["value"] == "0.0.0.0"


def trainer_script(tmp_path: Path, keys: Path) -> tuple[str, dict[str, str]]:
    """The trainer's start script as rendered, reading keys from ``keys``, with a stand-in
    ``lepton-trainer`` on PATH that prints what it was given."""
    trainer = next(
        w for w in workloads(render("trainer.labels.size=large")) if component(w) == "trainer"
    )
    script = container(trainer)["args"][0].replace("/etc/lepton/node-keys", str(keys))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "lepton-trainer"
    stand_in.write_text('#!/bin/sh\necho "key=$LEPTON_SIGNING_KEY"\necho "$@"\n')
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "NODE_NAME": "gpu-node-7"}
    return script, env


def run_trainer_with_key_of(tmp_path: Path, node: str) -> subprocess.CompletedProcess[str]:
    """The trainer pod's start script on node gpu-node-7, the Secret holding ``node``'s key."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / node).write_text(f"node:{node}:c2VjcmV0")
    script, env = trainer_script(tmp_path, keys)
    return subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, check=False
    )


def test_the_trainer_signs_as_its_node_with_that_nodes_key(tmp_path: Path) -> None:
    done = run_trainer_with_key_of(tmp_path, "gpu-node-7")
    assert done.returncode == 0, done.stderr
    key, arguments = done.stdout.splitlines()
    assert key == "key=node:gpu-node-7:c2VjcmV0"
    assert arguments.split() == [
        *("--node-id", "gpu-node-7", "--region", "default", "--label", "size=large"),
        *("--cpus", "2", "--memory", "4096", "--gpus", "0"),
    ]


def test_a_trainer_without_its_nodes_key_says_so_and_does_not_start(tmp_path: Path) -> None:
    done = run_trainer_with_key_of(tmp_path, "another-node")
    assert done.returncode == 1
    assert done.stdout == "", "the trainer must not start"
    assert "no signing key for node gpu-node-7" in done.stderr
    assert "lepton auth issue node:gpu-node-7" in done.stderr


def test_the_values_schema_knows_the_settings_choices() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    kafka = schema["properties"]["kafka"]["properties"]
    assert kafka["securityProtocol"]["enum"] == list(get_args(SecurityProtocol))
    assert kafka["saslMechanism"]["enum"] == list(get_args(SaslMechanism))


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("kafka.securityProtocol=sasl_ssl", "/kafka/securityProtocol"),
        ("trainer.offer.cpus=0", "/trainer/offer/cpus"),
        ("kafka.bootstrap=kafka-0", "/kafka/bootstrap"),
        ("trainer.extraEnv[0].name=LEPTON_TRAINER_STOP_GRACE_S", "/trainer/extraEnv/0"),
    ],
)
def test_helm_refuses_values_no_service_would_start_with(value: str, said: str) -> None:
    done = subprocess.run(
        [tool("helm"), "template", "rel", str(CHART), "--set", value],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert said in done.stderr, done.stderr
