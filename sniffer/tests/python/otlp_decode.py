"""Decodes OTLP/HTTP logs bodies with the official opentelemetry-proto package, strictly, and
prints each log record as one JSON line: its resource and scope, time, event name and
attributes.

usage: otlp_decode.py protobuf|json BODY_FILE...
Run by the sniffer's integration tests; exits non-zero on any body the official parser refuses.
"""

import json
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest


def value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "string_value":
        return any_value.string_value
    if kind == "int_value":
        return any_value.int_value
    if kind == "bool_value":
        return any_value.bool_value
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    raise SystemExit(f"unexpected AnyValue kind {kind!r}")


def main() -> None:
    encoding, *paths = sys.argv[1:]
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        request = ExportLogsServiceRequest()
        if encoding == "protobuf":
            request.ParseFromString(data)
        elif encoding == "json":
            # Unknown fields are errors (ignore_unknown_fields defaults to False).
            json_format.Parse(data, request)
        else:
            raise SystemExit(f"unknown encoding {encoding!r}")
        for resource_logs in request.resource_logs:
            resource = {kv.key: value(kv.value) for kv in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                scope = [scope_logs.scope.name, scope_logs.scope.version]
                for log in scope_logs.log_records:
                    print(json.dumps({
                        "resource": resource,
                        "scope": scope,
                        "time_unix_nano": log.time_unix_nano,
                        "event_name": log.event_name,
                        "attributes": {kv.key: value(kv.value) for kv in log.attributes},
                    }))


if __name__ == "__main__":
    main()
