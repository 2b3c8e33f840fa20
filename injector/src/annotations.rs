//! The pod annotations the injector reads and writes (a leaf: every other module may use it).

/// Pod annotation: `"false"` opts the pod out.
pub const INJECT: &str = "tcp-sniffer/inject";
/// Pod annotation: the ports to capture (`8080,8443`).
pub const PORTS: &str = "tcp-sniffer/ports";
/// Pod annotation the injector sets on injected pods.
pub const INJECTED: &str = "tcp-sniffer/injected";
/// Pod annotation `kubectl logs/exec` use to pick a container.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
