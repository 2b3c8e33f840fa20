"""Checks the rendered base manifests: a NetworkPolicy selects the injector's pods, admits
exactly the webhook port and the metrics port (named ports that the Deployment's container
declares, 8443 and 9090), and allows no egress; the probes use the metrics port.

usage: network_policy.py RENDERED_YAML
Run by `cargo xtask check-manifests`; exits non-zero with a message on any failure.
"""

import sys

import yaml


def fail(message: str) -> None:
    sys.exit(f"network policy check: {message}")


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    if len(policies) != 1 or len(deployments) != 1:
        fail(f"expected one NetworkPolicy and one Deployment, got {len(policies)} and {len(deployments)}")
    policy, deployment = policies[0]["spec"], deployments[0]["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    selector = policy["podSelector"].get("matchLabels", {})
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        fail(f"podSelector {selector} does not select the injector's pods {labels}")
    if sorted(policy.get("policyTypes", [])) != ["Egress", "Ingress"]:
        fail(f"policyTypes {policy.get('policyTypes')} must be Ingress and Egress")
    if policy.get("egress"):
        fail(f"the injector needs no egress, but {policy['egress']} is allowed")
    admitted = sorted(p["port"] for rule in policy["ingress"] for p in rule["ports"])
    if admitted != ["https", "metrics"]:
        fail(f"ingress admits {admitted}, not exactly the https and metrics ports")
    container = deployment["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if ports != {"https": 8443, "metrics": 9090}:
        fail(f"the container declares {ports}")
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    if env.get("METRICS_ADDR") != "0.0.0.0:9090" or not env.get("LISTEN_ADDR", "").endswith(":8443"):
        fail(f"METRICS_ADDR/LISTEN_ADDR {env} do not match the declared ports")
    for probe in ("readinessProbe", "livenessProbe"):
        if container[probe]["httpGet"]["port"] != "metrics":
            fail(f"{probe} does not use the metrics port")
    print("network policy: only the webhook (8443) and metrics (9090) ports are admitted; no egress")


if __name__ == "__main__":
    main()
