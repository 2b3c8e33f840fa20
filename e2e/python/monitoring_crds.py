"""Checks the monitoring component's Prometheus-operator objects against the operator's own
schemas, as cloudcoil's models generate them from the operator's CRDs (PyPI package
cloudcoil-models-prometheus-operator): every field has the type the CRD gives it, and no field
is one the CRD does not know (the models ignore unknown fields, so what they drop is compared
with what was written).

usage: monitoring_crds.py RENDERED.yaml   (the output of `kubectl kustomize`)
Prints one line per object checked; exits 1 naming the first problem.
"""
import sys

import yaml
from cloudcoil.models.prometheus_operator import v1

MODELS = {"PodMonitor": v1.PodMonitor, "ServiceMonitor": v1.ServiceMonitor,
          "PrometheusRule": v1.PrometheusRule}


def unknown(written, kept, path):
    """The paths of fields in `written` that the model did not keep."""
    if isinstance(written, dict):
        for key, value in written.items():
            if not isinstance(kept, dict) or key not in kept:
                yield f"{path}.{key}"
            else:
                yield from unknown(value, kept[key], f"{path}.{key}")
    elif isinstance(written, list):
        for index, value in enumerate(written):
            yield from unknown(value, kept[index] if isinstance(kept, list) and index < len(kept) else None,
                               f"{path}[{index}]")


checked = 0
for document in yaml.safe_load_all(open(sys.argv[1])):
    if not document or document.get("apiVersion") != "monitoring.coreos.com/v1":
        continue
    kind, name = document["kind"], document["metadata"]["name"]
    model = MODELS.get(kind)
    if model is None:
        sys.exit(f"{kind} {name}: no schema known for this kind")
    try:
        parsed = model.model_validate(document)
    except Exception as error:  # pydantic's ValidationError names the field and the problem
        sys.exit(f"{kind} {name} does not match the operator's schema:\n{error}")
    kept = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    extra = list(unknown(document, kept, kind))
    if extra:
        sys.exit(f"{kind} {name} has fields the operator's CRD does not define: {', '.join(extra)}")
    print(f"{kind} {name}: matches the operator's schema")
    checked += 1
if checked == 0:
    sys.exit("no monitoring.coreos.com/v1 object in the rendered manifests")
