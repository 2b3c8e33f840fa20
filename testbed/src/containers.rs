//! The images `cargo xtask image` builds and the private container storage they live in, for the
//! end-to-end checks that run them under podman.

use std::{fs, io, path::PathBuf, process::Command};

use crate::paths::target_dir;

/// The target of the static binaries in the images.
pub const MUSL: &str = "x86_64-unknown-linux-musl";
/// Local image name of the sniffer.
pub const SNIFFER_IMAGE: &str = concat!("localhost/tcp-sniffer:", env!("CARGO_PKG_VERSION"));
/// Local image name of the injector.
pub const INJECTOR_IMAGE: &str =
    concat!("localhost/tcp-sniffer-injector:", env!("CARGO_PKG_VERSION"));

/// Private container storage under `target/image`, so the host's configuration is untouched.
#[derive(Debug)]
pub struct Containers {
    dir: PathBuf,
}

impl Containers {
    /// The storage, created if missing.
    ///
    /// # Errors
    ///
    /// When its directory or configuration cannot be written.
    pub fn open() -> io::Result<Self> {
        let dir = target_dir().join("image");
        fs::create_dir_all(&dir)?;
        // vfs needs no kernel overlay support; runc and cgroupfs work without systemd here.
        fs::write(
            dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nruntime = \"runc\"\n",
        )?;
        Ok(Self { dir })
    }

    /// The directory the image builds take their context files from (the static binaries,
    /// the CA bundle).
    #[must_use]
    pub fn staging(&self) -> &PathBuf {
        &self.dir
    }

    /// A buildah or podman command on this storage.
    #[must_use]
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--storage-driver")
            .arg("vfs")
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"));
        cmd
    }

    /// Whether `image` is in this storage.
    #[must_use]
    pub fn has_image(&self, image: &str) -> bool {
        self.command("podman")
            .args(["image", "exists", image])
            .output()
            .is_ok_and(|out| out.status.success())
    }
}
