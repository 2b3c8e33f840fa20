//! Running the images `cargo xtask image` built, under podman, as the kubelet would run the
//! injected containers.

use std::io;

use serde_json::Value;
pub use testbed::containers::{Containers, INJECTOR_IMAGE, SNIFFER_IMAGE};

/// The image storage when the check `test` can run: root, podman, and both images built (by
/// `cargo xtask image`, which `cargo xtask test` runs first as root); otherwise `None` with a
/// message, or a failure when checks are required.
#[must_use]
pub fn images(test: &str) -> Option<Containers> {
    if !crate::privileged(test) || !crate::tool(test, "podman") {
        return None;
    }
    let containers = Containers::open().expect("open the image storage under target/image");
    let built = [SNIFFER_IMAGE, INJECTOR_IMAGE]
        .iter()
        .all(|image| containers.has_image(image));
    crate::skip_unless(
        built,
        test,
        "the images are not built (cargo xtask image; cargo xtask test builds them)",
    )
    .then_some(containers)
}

/// The JSON lines of `text` (a container's log), skipping anything else.
#[must_use]
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Exactly what the injector grants the sniffer container, on `network` (a podman `--network`
/// value), with the seccomp profile `seccomp` (`None`: the runtime's default).
#[must_use]
pub fn least_privilege(network: &str, seccomp: Option<&str>) -> Vec<String> {
    let mut options: Vec<String> = [
        "--network",
        network,
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_RAW",
        "--cap-add",
        "BPF",
        "--read-only",
        "--security-opt",
        "no-new-privileges",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    if let Some(profile) = seccomp {
        options.extend(["--security-opt".to_owned(), format!("seccomp={profile}")]);
    }
    options
}

/// Makes `path` readable by every user: a key mounted into a container running as 65532.
///
/// # Errors
///
/// When its permissions cannot be changed.
pub fn make_readable(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}
