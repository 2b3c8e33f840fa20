//! RFC 6902 JSON Patch operations that inject the container into a pod, with RFC 6901 pointers.

use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::annotations::{
    DEFAULT_CONTAINER as DEFAULT_CONTAINER_ANNOTATION, INJECTED as INJECTED_ANNOTATION,
};

/// One `add` operation (the only kind injection needs).
#[derive(Clone, Debug, Serialize)]
pub struct Add {
    op: &'static str,
    /// JSON pointer to the place added to.
    pub path: String,
    /// What is added, already serialized (the container is written once, not via a `Value`).
    pub value: Box<RawValue>,
}

impl Add {
    fn new(path: String, value: &impl Serialize) -> Self {
        Self {
            op: "add",
            path,
            value: serde_json::value::to_raw_value(value).expect("patch values always serialize"),
        }
    }
}

impl PartialEq for Add {
    fn eq(&self, other: &Self) -> bool {
        (self.op, &self.path, self.value.get()) == (other.op, &other.path, other.value.get())
    }
}

/// Escapes one reference token of a JSON pointer: `~` → `~0`, `/` → `~1` (RFC 6901 §3).
///
/// # Examples
///
/// ```
/// assert_eq!(injector::patch::escape("tcp-sniffer/injected"), "tcp-sniffer~1injected");
/// assert_eq!(injector::patch::escape("a~b"), "a~0b");
/// ```
#[must_use]
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The operations that add `container` (and `volume`, when it has one) and the injection
/// annotations to `pod`.
///
/// Paths depend on what the pod already has: a missing `metadata.annotations`,
/// `spec.initContainers` or `spec.volumes` is added whole, since JSON Patch cannot add into a
/// missing parent.
#[must_use]
pub fn injection(
    pod: &Pod,
    container: &Container,
    native_sidecar: bool,
    volume: Option<&Volume>,
) -> Vec<Add> {
    let mut ops = Vec::with_capacity(4);
    let mut annotations = vec![(INJECTED_ANNOTATION, "true".to_owned())];
    let existing = pod.metadata.annotations.as_ref();
    let first_app = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
        .map(|c| c.name.clone());
    // Keep `kubectl logs/exec` pointed at the app rather than at the new container.
    if let Some(first_app) = first_app
        && !existing.is_some_and(|a| a.contains_key(DEFAULT_CONTAINER_ANNOTATION))
    {
        annotations.push((DEFAULT_CONTAINER_ANNOTATION, first_app));
    }
    match existing {
        None => ops.push(Add::new(
            "/metadata/annotations".to_owned(),
            &annotations
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )),
        Some(_) => ops.extend(annotations.into_iter().map(|(key, value)| {
            Add::new(format!("/metadata/annotations/{}", escape(key)), &value)
        })),
    }
    let spec = pod.spec.as_ref();
    if native_sidecar {
        // First, so it starts before the other init containers and sees their traffic too.
        if spec.is_some_and(|s| s.init_containers.is_some()) {
            ops.push(Add::new("/spec/initContainers/0".to_owned(), container));
        } else {
            ops.push(Add::new("/spec/initContainers".to_owned(), &[container]));
        }
    } else {
        ops.push(Add::new("/spec/containers/-".to_owned(), container));
    }
    if let Some(volume) = volume {
        if spec.is_some_and(|s| s.volumes.is_some()) {
            ops.push(Add::new("/spec/volumes/-".to_owned(), volume));
        } else {
            ops.push(Add::new("/spec/volumes".to_owned(), &[volume]));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn sidecar() -> Container {
        Container {
            name: "tcp-sniffer".into(),
            ..Container::default()
        }
    }

    #[test]
    fn pod_without_annotations_gets_the_whole_map() {
        let p =
            pod(json!({"metadata":{"generateName":"web-"},"spec":{"containers":[{"name":"app"}]}}));
        let ops = serde_json::to_value(injection(&p, &sidecar(), false, None)).unwrap();
        assert_eq!(
            ops,
            json!([
                {"op":"add","path":"/metadata/annotations","value":{
                    "tcp-sniffer/injected":"true","kubectl.kubernetes.io/default-container":"app"}},
                {"op":"add","path":"/spec/containers/-","value":{"name":"tcp-sniffer"}}
            ])
        );
    }

    #[test]
    fn existing_annotations_get_escaped_keys() {
        let p = pod(
            json!({"metadata":{"annotations":{"a":"b"}},"spec":{"containers":[{"name":"app"}]}}),
        );
        let paths: Vec<String> = injection(&p, &sidecar(), false, None)
            .into_iter()
            .map(|op| op.path)
            .collect();
        assert_eq!(
            paths,
            [
                "/metadata/annotations/tcp-sniffer~1injected",
                "/metadata/annotations/kubectl.kubernetes.io~1default-container",
                "/spec/containers/-"
            ]
        );
    }

    #[test]
    fn default_container_is_kept_when_set() {
        let p = pod(
            json!({"metadata":{"annotations":{"kubectl.kubernetes.io/default-container":"web"}},
                           "spec":{"containers":[{"name":"app"}]}}),
        );
        let ops = injection(&p, &sidecar(), false, None);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].path, "/metadata/annotations/tcp-sniffer~1injected");
    }

    #[test]
    fn native_sidecar_goes_first_in_init_containers() {
        let without = pod(json!({"spec":{"containers":[{"name":"app"}]}}));
        let ops = injection(&without, &sidecar(), true, None);
        assert_eq!(ops.last().unwrap().path, "/spec/initContainers");
        let value: Value = serde_json::from_str(ops.last().unwrap().value.get()).unwrap();
        assert_eq!(value, json!([{"name":"tcp-sniffer"}]));
        let with =
            pod(json!({"spec":{"containers":[{"name":"app"}],"initContainers":[{"name":"init"}]}}));
        assert_eq!(
            injection(&with, &sidecar(), true, None)
                .last()
                .unwrap()
                .path,
            "/spec/initContainers/0"
        );
    }

    #[test]
    fn the_volume_is_appended_or_added_with_its_list() {
        let volume = Volume {
            name: "tcp-sniffer-podinfo".into(),
            ..Volume::default()
        };
        let without = pod(json!({"spec":{"containers":[{"name":"app"}]}}));
        let ops = injection(&without, &sidecar(), false, Some(&volume));
        assert_eq!(ops.last().unwrap().path, "/spec/volumes");
        let value: Value = serde_json::from_str(ops.last().unwrap().value.get()).unwrap();
        assert_eq!(value, json!([{"name":"tcp-sniffer-podinfo"}]));
        let with = pod(
            json!({"spec":{"containers":[{"name":"app"}],"volumes":[{"name":"data","emptyDir":{}}]}}),
        );
        assert_eq!(
            injection(&with, &sidecar(), false, Some(&volume))
                .last()
                .unwrap()
                .path,
            "/spec/volumes/-"
        );
    }

    #[test]
    fn pointer_escaping() {
        assert_eq!(escape("~/"), "~0~1");
        assert_eq!(escape("plain"), "plain");
    }
}
