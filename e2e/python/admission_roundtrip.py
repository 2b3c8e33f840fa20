"""Feeds a Pod manifest, wrapped as an AdmissionReview, to a running injector over HTTPS, applies
the returned JSON Patch with the independent `jsonpatch` library, and validates the patched pod
against the Kubernetes schemas with `kubernetes-validate`.

usage: admission_roundtrip.py POD_YAML URL CA_PEM VERSION...
Run by `cargo xtask check-manifests`; exits non-zero with a message on any failure.
"""

import base64
import json
import ssl
import sys
import urllib.request

import jsonpatch
import kubernetes_validate
import yaml


def main() -> None:
    pod_file, url, ca_file, *versions = sys.argv[1:]
    with open(pod_file, encoding="utf-8") as f:
        pod = yaml.safe_load(f)
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "roundtrip-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"].get("namespace", "default"),
            "operation": "CREATE",
            "userInfo": {"username": "system:admin"},
            "object": pod,
            "dryRun": False,
        },
    }
    context = ssl.create_default_context(cafile=ca_file)
    request = urllib.request.Request(
        url, data=json.dumps(review).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        answer = json.load(response)
    result = answer["response"]
    assert answer["apiVersion"] == "admission.k8s.io/v1", answer
    assert result["uid"] == "roundtrip-1", result
    assert result["allowed"] is True, result
    assert result["patchType"] == "JSONPatch", result
    patch = json.loads(base64.b64decode(result["patch"]))
    patched = jsonpatch.apply_patch(pod, patch)

    sniffer = patched["spec"]["containers"][-1]
    assert sniffer["name"] == "tcp-sniffer", sniffer
    env = {e["name"]: e for e in sniffer["env"]}
    assert env["PORTS"]["value"] == "8080", env
    security = sniffer["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW", "BPF"]}, security
    assert security["allowPrivilegeEscalation"] is False, security
    assert patched["metadata"]["annotations"]["tcp-sniffer/injected"] == "true"

    for version in versions:
        kubernetes_validate.validate(patched, version, strict=True)
        print(f"patched pod valid against Kubernetes {version}")
    print(json.dumps({"patch_operations": len(patch), "containers": [c["name"] for c in patched["spec"]["containers"]]}))


if __name__ == "__main__":
    main()
