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
            warnings,
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
                "injected: ports {ports:?} from {}; warning: {}",
                source.label(),
                warnings.join("; warning: ")
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

/// Refuses input whose flow collections nest deeper than [`MAX_FLOW_DEPTH`], before the YAML
/// parser proper sees it.
///
/// Depth is counted on the tokens of libyaml's own scanner (the one `serde_yaml` parses with),
/// so a bracket counts exactly when the parser would take it as one: inside a quoted scalar, a
/// comment or a plain word it does not, and no quoting trick can hide a real one (a character
/// scan that guessed where quotes open was fooled by `name: b-"c`). The scan stops at the first
/// collection past the limit: its cost per token grows with the depth reached, so it stays
/// linear in the input.
fn check_flow_depth(input: &str) -> Result<(), PreviewError> {
    use std::mem::MaybeUninit;

    use unsafe_libyaml::{
        YAML_FLOW_MAPPING_END_TOKEN, YAML_FLOW_MAPPING_START_TOKEN, YAML_FLOW_SEQUENCE_END_TOKEN,
        YAML_FLOW_SEQUENCE_START_TOKEN, YAML_STREAM_END_TOKEN, yaml_parser_delete,
        yaml_parser_initialize, yaml_parser_scan, yaml_parser_set_input_string, yaml_parser_t,
        yaml_token_delete, yaml_token_t,
    };

    let mut parser = MaybeUninit::<yaml_parser_t>::uninit();
    // SAFETY: `parser` is initialized by `yaml_parser_initialize` before any other use and
    // deleted exactly once below; `input` outlives it; every token scanned is deleted once.
    unsafe {
        if yaml_parser_initialize(parser.as_mut_ptr()).fail {
            // Out of memory: let the parser proper report it.
            return Ok(());
        }
        let parser = parser.as_mut_ptr();
        yaml_parser_set_input_string(parser, input.as_ptr(), input.len() as _);
        let mut depth = 0usize;
        let result = loop {
            let mut token = MaybeUninit::<yaml_token_t>::uninit();
            if yaml_parser_scan(parser, token.as_mut_ptr()).fail {
                // A syntax error: the parser proper reports it, with its position.
                break Ok(());
            }
            let token = token.as_mut_ptr();
            let (kind, line) = ((*token).type_, (*token).start_mark.line);
            yaml_token_delete(token);
            match kind {
                YAML_FLOW_SEQUENCE_START_TOKEN | YAML_FLOW_MAPPING_START_TOKEN => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        let line = usize::try_from(line).unwrap_or(usize::MAX);
                        break Err(PreviewError::TooDeep {
                            line: line.saturating_add(1),
                        });
                    }
                }
                YAML_FLOW_SEQUENCE_END_TOKEN | YAML_FLOW_MAPPING_END_TOKEN => {
                    depth = depth.saturating_sub(1);
                }
                YAML_STREAM_END_TOKEN => break Ok(()),
                _ => {}
            }
        };
        yaml_parser_delete(parser);
        result
    }
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
            // A quote in a plain word once made a character scan think a string opened.
            format!(
                "kind: Pod\nname: b-\"c\nx: {}{}",
                "[".repeat(64_000),
                "]".repeat(64_000)
            ),
            format!(
                "kind: Pod\nname: b-\"c\nx: {}",
                "[".repeat(MAX_INPUT_BYTES - 100)
            ),
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
        for opener in [
            "name: b-\"c",
            "name: a \"b",
            "name: x'y",
            "name: [\"a\", b-\"c]",
        ] {
            let hidden = format!("kind: Pod\n{opener}\nx: {deep}");
            assert!(
                matches!(
                    check_flow_depth(&hidden),
                    Err(PreviewError::TooDeep { line: 3 })
                ),
                "{opener}"
            );
        }
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
