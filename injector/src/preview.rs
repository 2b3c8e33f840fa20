//! `injector inject -f pod.yaml`: the pod as the webhook would mutate it, through the same
//! [`review`](crate::review::review) path as `POST /mutate` (like `istioctl kube-inject`).

use base64::Engine as _;
use serde_json::{Value, json};
use thiserror::Error;

use crate::{decide::Decision, options::InjectorOptions, review};

/// The preview cannot be made.
#[derive(Debug, Error)]
pub enum PreviewError {
    /// Neither YAML nor JSON.
    #[error("the input is not YAML or JSON: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// Not a Pod.
    #[error("inject -f takes a Pod; the input is a {0}")]
    NotAPod(String),
    /// The webhook would refuse the pod.
    #[error("the webhook would deny this pod: {0}")]
    Denied(String),
    /// The review path failed (a bug: the preview builds a valid review).
    #[error(transparent)]
    Review(#[from] review::ReviewError),
    /// The patch does not apply (a bug).
    #[error("the patch does not apply: {0}")]
    Patch(String),
}

/// What happened to the pod.
#[derive(Debug)]
pub struct Preview {
    /// The pod after mutation (unchanged when skipped).
    pub pod: Value,
    /// A one-line account: injected on which ports, or skipped and why.
    pub summary: String,
}

/// Mutates `input` (a Pod in YAML or JSON) as the webhook would, in its `metadata.namespace` or
/// else in `namespace`.
pub fn preview(
    input: &str,
    namespace: &str,
    options: &InjectorOptions,
) -> Result<Preview, PreviewError> {
    let mut pod: Value = serde_yaml::from_str(input)?;
    let kind = pod["kind"].as_str().unwrap_or("object without kind");
    if kind != "Pod" {
        return Err(PreviewError::NotAPod(kind.to_owned()));
    }
    // The pod's own namespace, when it names one, is where it would be created.
    let namespace = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or(namespace)
        .to_owned();
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "inject-preview",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "injector-preview"},
            "object": pod,
            "dryRun": true,
        }
    });
    let outcome = review::review(
        &serde_json::to_vec(&body).expect("JSON serializes"),
        options,
    )?;
    let answer: Value = serde_json::from_slice(&outcome.body).expect("the response is JSON");
    let summary = match &outcome.decision {
        Decision::Inject { ports, source, .. } => {
            let encoded = answer["response"]["patch"].as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| PreviewError::Patch(e.to_string()))?;
            let patch: json_patch::Patch =
                serde_json::from_slice(&bytes).map_err(|e| PreviewError::Patch(e.to_string()))?;
            json_patch::patch(&mut pod, &patch).map_err(|e| PreviewError::Patch(e.to_string()))?;
            format!("injected: ports {ports:?} from {}", source.label())
        }
        Decision::Skip { reason, warning } => match warning {
            Some(warning) => format!("not injected ({}): {warning}", reason.label()),
            None => format!("not injected ({})", reason.label()),
        },
        Decision::Deny { reason } => return Err(PreviewError::Denied(reason.clone())),
    };
    Ok(Preview { pod, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: nginx\n    ports:\n    - containerPort: 8080\n";

    #[test]
    fn yaml_pod_is_injected() {
        let preview = preview(POD, "shop", &InjectorOptions::default()).unwrap();
        assert_eq!(
            preview.summary,
            "injected: ports [8080] from container_ports"
        );
        assert_eq!(preview.pod["spec"]["containers"][1]["name"], "tcp-sniffer");
        assert_eq!(
            preview.pod["metadata"]["annotations"]["tcp-sniffer/injected"],
            "true"
        );
    }

    #[test]
    fn json_input_and_skips_and_errors() {
        let host = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"h"},"spec":{"hostNetwork":true,"containers":[{"name":"a"}]}}"#;
        let preview = preview(host, "default", &InjectorOptions::default()).unwrap();
        assert_eq!(preview.summary, "not injected (host_network)");
        assert_eq!(
            preview.pod["spec"]["containers"].as_array().unwrap().len(),
            1
        );
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
        assert!(
            matches!(super::preview(deployment, "d", &InjectorOptions::default()), Err(PreviewError::NotAPod(k)) if k == "Deployment")
        );
        let bad = POD.replace(
            "name: web",
            "name: web\n  annotations:\n    tcp-sniffer/ports: \"0\"",
        );
        assert!(matches!(
            super::preview(&bad, "d", &InjectorOptions::default()),
            Err(PreviewError::Denied(_))
        ));
        assert!(matches!(
            super::preview("{", "d", &InjectorOptions::default()),
            Err(PreviewError::Parse(_))
        ));
    }
}
