//! `injector inject -f pod.yaml`: the pod as the webhook would mutate it, through the same
//! [`review`](crate::review::review) path as `POST /mutate` (like `istioctl kube-inject`).

use base64::Engine as _;
use serde_json::{Value, json};
use thiserror::Error;

use crate::{decide::Decision, options::InjectorOptions, review};

/// The largest input `inject -f` reads: the webhook's body limit.
pub const MAX_INPUT_BYTES: usize = 4 << 20;
/// The deepest nesting of flow collections (`[…]`, `{…}`, JSON included) accepted: Pod manifests
/// use a few levels, and the YAML scanner's time grows with the square of this depth (a 200 KB
/// `kind: Pod` followed by `x: [[[…]]]` took 44 s).
pub const MAX_FLOW_DEPTH: usize = 64;

/// The preview cannot be made.
#[derive(Debug, Error)]
pub enum PreviewError {
    /// Larger than [`MAX_INPUT_BYTES`].
    #[error("the input is larger than {MAX_INPUT_BYTES} bytes")]
    TooLarge,
    /// Flow collections nested deeper than [`MAX_FLOW_DEPTH`].
    #[error(
        "the input nests [ and {{ collections more than {MAX_FLOW_DEPTH} deep (line {line}); no Pod manifest does"
    )]
    TooDeep {
        /// 1-based line where the limit was passed.
        line: usize,
    },
    /// Neither YAML nor JSON (the parser's message is part of this one, not a separate cause, so
    /// that it is shown once).
    #[error("the input is not YAML or JSON: {0}")]
    Parse(serde_yaml::Error),
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
    if input.len() > MAX_INPUT_BYTES {
        return Err(PreviewError::TooLarge);
    }
    check_flow_depth(input)?;
    let mut pod: Value = serde_yaml::from_str(input).map_err(PreviewError::Parse)?;
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
        Decision::Inject {
            ports,
            source,
            warning,
            ..
        } => {
            let encoded = answer["response"]["patch"].as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| PreviewError::Patch(e.to_string()))?;
            let patch: json_patch::Patch =
                serde_json::from_slice(&bytes).map_err(|e| PreviewError::Patch(e.to_string()))?;
            json_patch::patch(&mut pod, &patch).map_err(|e| PreviewError::Patch(e.to_string()))?;
            format!(
                "injected: ports {ports:?} from {}; warning: {warning}",
                source.label()
            )
        }
        Decision::Skip { reason, warning } => match warning {
            Some(warning) => format!("not injected ({}): {warning}", reason.label()),
            None => format!("not injected ({})", reason.label()),
        },
        Decision::Deny { reason } => return Err(PreviewError::Denied(reason.clone())),
    };
    Ok(Preview { pod, summary })
}

/// Where [`check_flow_depth`] is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scan {
    Plain,
    /// Inside '…'; `quote` when the last character was a `'`, which closes the scalar unless
    /// another `'` follows (`''` is an escaped quote).
    Single {
        quote: bool,
    },
    Double {
        escaped: bool,
    },
    Comment,
}

/// Refuses input whose flow collections nest deeper than [`MAX_FLOW_DEPTH`], in one pass, before
/// the YAML parser sees it. Brackets inside quoted scalars and comments do not count; a quote
/// opens a scalar only where a scalar can start (after an indicator, not inside a plain word).
fn check_flow_depth(input: &str) -> Result<(), PreviewError> {
    let mut state = Scan::Plain;
    let mut depth = 0usize;
    let mut line = 1;
    // The last character on this line that is not a space or tab ('\n' at the line's start),
    // and whether whitespace (or the line's start) comes right before the current character.
    let (mut last, mut blank) = ('\n', true);
    for c in input.chars() {
        state = match state {
            Scan::Comment if c == '\n' => Scan::Plain,
            Scan::Comment => Scan::Comment,
            Scan::Single { quote: true } if c != '\'' => Scan::Plain,
            Scan::Single { quote } => Scan::Single {
                quote: c == '\'' && !quote,
            },
            Scan::Double { escaped: false } if c == '"' => Scan::Plain,
            Scan::Double { escaped } => Scan::Double {
                escaped: c == '\\' && !escaped,
            },
            Scan::Plain => Scan::Plain,
        };
        // A closing quote was just passed, or no scalar was open: `c` is plain text.
        if state == Scan::Plain {
            match c {
                '\'' if matches!(last, '\n' | ':' | '-' | '[' | '{' | ',' | '?') => {
                    state = Scan::Single { quote: false };
                }
                '"' if matches!(last, '\n' | ':' | '-' | '[' | '{' | ',' | '?') => {
                    state = Scan::Double { escaped: false };
                }
                '#' if blank => state = Scan::Comment,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(PreviewError::TooDeep { line });
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if c == '\n' {
            line += 1;
            (last, blank) = ('\n', true);
        } else if c == ' ' || c == '\t' {
            blank = true;
        } else {
            (last, blank) = (c, false);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: nginx\n    ports:\n    - containerPort: 8080\n";

    #[test]
    fn yaml_pod_is_injected() {
        let preview = preview(POD, "shop", &InjectorOptions::default()).unwrap();
        assert!(
            preview
                .summary
                .starts_with("injected: ports [8080] from container_ports; warning: tcp-sniffer added a sidecar with capabilities NET_RAW, BPF"),
            "{}",
            preview.summary
        );
        assert_eq!(preview.pod["spec"]["containers"][1]["name"], "tcp-sniffer");
        assert_eq!(
            preview.pod["metadata"]["annotations"]["tcp-sniffer/injected"],
            "true"
        );
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        let options = InjectorOptions::default();
        let start = std::time::Instant::now();
        for input in [
            format!(
                "kind: Pod\nx: {}{}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            format!("{}{}", "{a: ".repeat(50_000), "}".repeat(50_000)),
            format!(
                "{{\"kind\":\"Pod\",\"x\":{}1{}}}",
                "[".repeat(65),
                "]".repeat(65)
            ),
            "[".repeat(1_000_000),
        ] {
            assert!(
                matches!(
                    super::preview(&input, "d", &options),
                    Err(PreviewError::TooDeep { .. })
                ),
                "{}",
                &input[..40]
            );
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        let big = "#".repeat(MAX_INPUT_BYTES + 1);
        assert!(matches!(
            super::preview(&big, "d", &options),
            Err(PreviewError::TooLarge)
        ));
    }

    #[test]
    fn brackets_in_quotes_and_comments_do_not_count() {
        let deep = "[".repeat(100);
        for input in [
            format!("kind: Pod\nmetadata:\n  name: \"{deep}\"\n"),
            format!("kind: Pod\nmetadata:\n  name: '{deep}'\n"),
            format!("kind: Pod # {deep}\n"),
            format!("kind: Pod\nx: 'it''s {deep}'\n"),
            format!("kind: Pod\nx: \"a\\\" {deep}\"\n"),
        ] {
            assert!(check_flow_depth(&input).is_ok(), "{input}");
        }
        // A quote inside a plain scalar does not hide the brackets after it.
        let hidden = format!("kind: Pod\nx: it's\ny: {deep}");
        assert!(matches!(
            check_flow_depth(&hidden),
            Err(PreviewError::TooDeep { line: 3 })
        ));
        // At the limit is fine.
        let limit = format!(
            "x: {}{}",
            "[".repeat(MAX_FLOW_DEPTH),
            "]".repeat(MAX_FLOW_DEPTH)
        );
        assert!(check_flow_depth(&limit).is_ok());
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
