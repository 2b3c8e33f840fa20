//! An AdmissionReview request body in, the AdmissionReview response body out.
//!
//! Parsing uses kube's admission types; the response is written here because kube-core
//! serializes its patch bytes as an array of numbers (kube-rs #1781), while the API server wants
//! the `[]byte` field as base64.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::{
    DynamicObject, Resource,
    admission::{AdmissionRequest, AdmissionReview, Operation},
};
use serde::Serialize;
use serde_json::Value;
use sidecar_contract::echo::Echo;
use thiserror::Error;

use crate::{
    decide::{Decision, Request, decide},
    options::InjectorOptions,
};

const API_VERSION: &str = "admission.k8s.io/v1";

/// A body that is not a usable AdmissionReview (HTTP 400).
#[derive(Debug, Error)]
pub enum ReviewError {
    /// Not JSON, or not shaped like an AdmissionReview (the parser's message is part of this
    /// one, not a separate cause, so that it is shown once).
    #[error("the body is not an AdmissionReview: {}", Echo(&.0.to_string()))]
    Json(serde_json::Error),
    /// Another API version.
    #[error(
        "apiVersion {:?} is not supported: send admission.k8s.io/v1 (admissionReviewVersions: [\"v1\"])",
        Echo(.0)
    )]
    ApiVersion(String),
    /// Another kind.
    #[error("kind {:?} is not AdmissionReview", Echo(.0))]
    Kind(String),
    /// No `request`.
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    /// A `request.uid` far longer than the UIDs an API server sends, which the response would
    /// have to repeat whole.
    #[error(
        "request.uid is {bytes} bytes long; an API server sends a UID of 36 characters (at most {MAX_UID_BYTES} accepted)"
    )]
    Uid {
        /// Its length.
        bytes: usize,
    },
}

/// Longest accepted `request.uid` (the API server's are 36-character UUIDs).
pub const MAX_UID_BYTES: usize = 128;

/// What was decided about one review, for the answer, the log and the metrics.
#[derive(Debug)]
pub struct Outcome {
    /// The response body.
    pub body: Vec<u8>,
    /// The decision.
    pub decision: Decision,
    /// Request uid.
    pub uid: String,
    /// Namespace of the request (cut at 256 bytes, for the log).
    pub namespace: String,
    /// Pod name, or its `generateName` followed by `*` when the name is not set yet (cut at
    /// 256 bytes, for the log).
    pub pod: String,
    /// `CREATE`, `UPDATE` …
    pub operation: &'static str,
    /// Whether the request was a dry run (answered the same: the webhook has no side effects).
    pub dry_run: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<Vec<&'a str>>,
}

#[derive(Serialize)]
struct StatusOut<'a> {
    code: u16,
    message: &'a str,
}

const fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// The Pod in a request's object: metadata as parsed, spec from the remaining fields.
fn pod_of(object: DynamicObject) -> Result<Pod, serde_json::Error> {
    let DynamicObject { metadata, data, .. } = object;
    let spec = match data {
        Value::Object(mut fields) => fields
            .remove("spec")
            .map(serde_json::from_value)
            .transpose()?,
        _ => None,
    };
    Ok(Pod {
        metadata,
        spec,
        status: None,
    })
}

/// Answers one AdmissionReview body.
///
/// # Examples
///
/// ```
/// use injector::{options::InjectorOptions, review::review};
///
/// let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
///   "uid":"705ab4f5","kind":{"group":"","version":"v1","kind":"Pod"},
///   "resource":{"group":"","version":"v1","resource":"pods"},"namespace":"shop","operation":"CREATE",
///   "userInfo":{},"object":{"metadata":{"name":"web"},"spec":{"containers":[{"name":"app",
///   "ports":[{"containerPort":8080}]}]}}}}"#;
/// let outcome = review(body, &InjectorOptions::default()).unwrap();
/// let answer: serde_json::Value = serde_json::from_slice(&outcome.body).unwrap();
/// assert_eq!(answer["response"]["uid"], "705ab4f5");
/// assert_eq!(answer["response"]["allowed"], true);
/// assert_eq!(answer["response"]["patchType"], "JSONPatch");
/// ```
pub fn review(body: &[u8], options: &InjectorOptions) -> Result<Outcome, ReviewError> {
    // Fast path: a Pod review parses straight into typed Pods. Other kinds (whose objects are not
    // shaped like a Pod) and malformed bodies take the general path.
    if let Ok(review) = serde_json::from_slice::<AdmissionReview<Pod>>(body) {
        return answer(review, options, Ok);
    }
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|err| explain(body, err))?;
    answer(review, options, pod_of)
}

/// Decides on a parsed review whose objects `to_pod` turns into Pods.
fn answer<T: Resource>(
    review: AdmissionReview<T>,
    options: &InjectorOptions,
    to_pod: impl FnOnce(T) -> Result<Pod, serde_json::Error>,
) -> Result<Outcome, ReviewError> {
    if review.types.api_version != API_VERSION {
        return Err(ReviewError::ApiVersion(review.types.api_version));
    }
    if review.types.kind != "AdmissionReview" {
        return Err(ReviewError::Kind(review.types.kind));
    }
    let request: AdmissionRequest<T> =
        review.try_into().map_err(|_| ReviewError::MissingRequest)?;
    let AdmissionRequest {
        uid,
        kind,
        sub_resource,
        namespace,
        operation,
        object,
        dry_run,
        ..
    } = request;
    if uid.len() > MAX_UID_BYTES {
        return Err(ReviewError::Uid { bytes: uid.len() });
    }
    let operation = operation_name(&operation);
    let target = Request {
        group: &kind.group,
        version: &kind.version,
        kind: &kind.kind,
        sub_resource: sub_resource.as_deref(),
        operation,
    };
    let is_pod_create =
        (kind.group.as_str(), kind.kind.as_str(), operation) == ("", "Pod", "CREATE");
    let (decision, pod_label) = match object.map(to_pod) {
        Some(Ok(pod)) => {
            let label = match (&pod.metadata.name, &pod.metadata.generate_name) {
                (Some(name), _) if !name.is_empty() => Echo(name).to_string(),
                (_, Some(prefix)) => format!("{}*", Echo(prefix)),
                _ => String::new(),
            };
            (decide(&target, Some(&pod), options), label)
        }
        Some(Err(err)) if is_pod_create => (
            Decision::Deny {
                reason: format!(
                    "the Pod in the request cannot be read: {}",
                    Echo(&err.to_string())
                ),
            },
            String::new(),
        ),
        _ => (decide(&target, None, options), String::new()),
    };
    let body = respond(&uid, &decision);
    Ok(Outcome {
        body,
        decision,
        uid,
        namespace: namespace
            .as_deref()
            .map(|ns| Echo(ns).to_string())
            .unwrap_or_default(),
        pod: pod_label,
        operation,
        dry_run,
    })
}

/// The clearest error for a body that does not parse: a wrong envelope says more than the first
/// missing field deep inside it. Only failures pay for this second look.
fn explain(body: &[u8], err: serde_json::Error) -> ReviewError {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope {
        api_version: String,
        kind: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) if envelope.api_version != API_VERSION => {
            ReviewError::ApiVersion(envelope.api_version)
        }
        Ok(envelope) if envelope.kind != "AdmissionReview" => ReviewError::Kind(envelope.kind),
        _ => ReviewError::Json(err),
    }
}

/// The AdmissionReview response body for a decision.
#[must_use]
pub fn respond(uid: &str, decision: &Decision) -> Vec<u8> {
    let mut response = ResponseOut {
        uid,
        allowed: true,
        patch_type: None,
        patch: None,
        status: None,
        warnings: None,
    };
    match decision {
        Decision::Inject {
            patch, warnings, ..
        } => {
            let json = serde_json::to_vec(patch).expect("patch operations always serialize");
            response.patch_type = Some("JSONPatch");
            response.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
            response.warnings = Some(warnings.iter().map(String::as_str).collect());
        }
        Decision::Skip { warning, .. } => {
            response.warnings = warning.as_deref().map(|w| vec![w]);
        }
        Decision::Deny { reason } => {
            response.allowed = false;
            response.status = Some(StatusOut {
                code: 403,
                message: reason,
            });
        }
    }
    serde_json::to_vec(&ReviewOut {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response,
    })
    .expect("responses always serialize")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(request: Value) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"apiVersion":API_VERSION,"kind":"AdmissionReview","request":request}),
        )
        .unwrap()
    }

    fn request(kind: Value, operation: &str, object: Value) -> Value {
        json!({"uid":"u-1","kind":kind,"resource":{"group":"","version":"v1","resource":"pods"},
               "namespace":"shop","operation":operation,"userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller"},
               "object":object,"dryRun":false})
    }

    #[test]
    fn malformed_bodies_are_review_errors() {
        let options = InjectorOptions::default();
        assert!(matches!(review(b"{", &options), Err(ReviewError::Json(_))));
        assert!(matches!(review(b"[]", &options), Err(ReviewError::Json(_))));
        let v1beta1 =
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":null}"#;
        assert!(
            matches!(review(v1beta1, &options), Err(ReviewError::ApiVersion(v)) if v == "admission.k8s.io/v1beta1")
        );
        let no_request = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(
            review(no_request, &options),
            Err(ReviewError::MissingRequest)
        ));
        let wrong_kind = br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#;
        assert!(matches!(
            review(wrong_kind, &options),
            Err(ReviewError::Kind(_))
        ));
        let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            review(nested.as_bytes(), &options),
            Err(ReviewError::Json(_))
        ));
    }

    #[test]
    fn unreadable_pod_is_denied_not_an_error() {
        let pod_kind = json!({"group":"","version":"v1","kind":"Pod"});
        let outcome = review(
            &body(request(
                pod_kind,
                "CREATE",
                json!({"spec":{"containers":"nope"}}),
            )),
            &InjectorOptions::default(),
        )
        .unwrap();
        let answer: Value = serde_json::from_slice(&outcome.body).unwrap();
        assert_eq!(answer["response"]["allowed"], false);
        assert_eq!(answer["response"]["status"]["code"], 403);
        assert!(
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("cannot be read")
        );
    }

    #[test]
    fn patch_is_base64_of_a_json_patch() {
        let pod_kind = json!({"group":"","version":"v1","kind":"Pod"});
        let pod = json!({"metadata":{"generateName":"web-7d9c-"},"spec":{"containers":[{"name":"app","ports":[{"containerPort":8080}]}]}});
        let outcome = review(
            &body(request(pod_kind, "CREATE", pod)),
            &InjectorOptions::default(),
        )
        .unwrap();
        assert_eq!(outcome.pod, "web-7d9c-*");
        assert_eq!(outcome.namespace, "shop");
        let answer: Value = serde_json::from_slice(&outcome.body).unwrap();
        assert_eq!(answer["apiVersion"], API_VERSION);
        assert_eq!(answer["kind"], "AdmissionReview");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(
                answer["response"]["patch"]
                    .as_str()
                    .expect("patch is a string"),
            )
            .unwrap();
        let ops: Value = serde_json::from_slice(&patch).unwrap();
        assert_eq!(ops[0]["op"], "add");
        let paths: Vec<&str> = ops
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            &paths[paths.len() - 2..],
            ["/spec/containers/-", "/spec/volumes"]
        );
        let warnings = answer["response"]["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0]
                .as_str()
                .unwrap()
                .contains("Pod Security level must be privileged")
        );
    }

    #[test]
    fn non_pod_kinds_are_allowed_without_patch() {
        let deployment = json!({"group":"apps","version":"v1","kind":"Deployment"});
        let outcome = review(
            &body(request(
                deployment,
                "CREATE",
                json!({"metadata":{"name":"d"},"spec":{"replicas":1}}),
            )),
            &InjectorOptions::default(),
        )
        .unwrap();
        let answer: Value = serde_json::from_slice(&outcome.body).unwrap();
        assert_eq!(answer["response"], json!({"uid":"u-1","allowed":true}));
    }
}
