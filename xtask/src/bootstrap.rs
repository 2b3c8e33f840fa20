//! Installs what building and testing need on a fresh machine: the nightly `rust-src` component,
//! a `bpf-linker` linked against the nightly toolchain's own libLLVM, and Debian packages.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use testbed::cmd;

/// The toolchain that compiles the kernel program (`-Z build-std` needs nightly).
pub const EBPF_TOOLCHAIN: &str = "nightly";
/// bpf-linker release known to work with LLVM 22 here.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// A `rustup run <toolchain> <program>` command, independent of any toolchain file or override.
pub fn rustup_run(toolchain: &str, program: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", toolchain, program]);
    // Variables the outer cargo set for xtask would point the inner one at the wrong toolchain.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTDOC",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Adds `rust-src` to the nightly toolchain unless it is there.
pub fn ensure_rust_src() -> Result<()> {
    let installed = cmd::stdout(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
    .context(
        "cannot list the nightly toolchain's components (is the nightly toolchain installed?)",
    )?;
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        return Ok(());
    }
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
    .context("cannot add rust-src to the nightly toolchain; -Z build-std=core needs it")
}

/// The nightly toolchain's libLLVM, which bpf-linker must link against.
struct Llvm {
    /// Major version, e.g. 22; selects bpf-linker's `llvm-<major>` feature.
    major: u32,
    /// The shared library shipped in the toolchain's `lib/`.
    library: PathBuf,
}

fn nightly_llvm() -> Result<Llvm> {
    let verbose = cmd::stdout(rustup_run(EBPF_TOOLCHAIN, "rustc").arg("-vV"))?;
    let version = verbose
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .context("`rustc -vV` of the nightly toolchain names no LLVM version")?;
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot read the LLVM major version from {version:?}"))?;
    let sysroot = cmd::stdout(rustup_run(EBPF_TOOLCHAIN, "rustc").args(["--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let prefix = format!("libLLVM.so.{major}.");
    let library = fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .with_context(|| {
            format!(
                "no {prefix}* in {}: this nightly toolchain does not ship the libLLVM bpf-linker needs",
                lib_dir.display()
            )
        })?;
    Ok(Llvm { major, library })
}

/// What the checks and tests need from PyPI, pinned: Kubernetes schemas and JSON Patch for the
/// manifest checks, the official OpenTelemetry protos (and their protobuf runtime) for the OTLP
/// format tests.
const PYTHON_REQUIREMENTS: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "jsonpatch==1.48",
    "opentelemetry-proto==1.45.2",
    "protobuf==7.36.2",
    // The Prometheus operator's CRDs as models, to check the monitoring component's objects.
    "cloudcoil-models-prometheus-operator==0.80.1.0",
];

/// A Python virtual environment under the tools directory with exactly the requirements
/// installed; returns its `bin/` directory. Rebuilt when the requirement list changes.
pub fn ensure_python_venv() -> Result<PathBuf> {
    let requirements = PYTHON_REQUIREMENTS;
    let venv = tools_dir()?.join("venv");
    let marker = venv.join("tcp-sniffer-requirements.txt");
    let wanted = requirements.join("\n");
    if fs::read_to_string(&marker).is_ok_and(|have| have == wanted) {
        return Ok(venv.join("bin"));
    }
    let python = if on_path("python3") {
        "python3"
    } else {
        "python"
    };
    cmd::run(
        Command::new(python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )
    .context("cannot create a Python virtual environment (is python3-venv installed?)")?;
    cmd::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(requirements),
    )
    .with_context(|| format!("cannot install {requirements:?} from PyPI"))?;
    fs::write(&marker, wanted).with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(venv.join("bin"))
}

/// Where project tools live across clones: `$XDG_CACHE_HOME/tcp-sniffer` or `~/.cache/tcp-sniffer`.
pub fn tools_dir() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("TCP_SNIFFER_TOOLS_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let cache = match env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(cache.join("tcp-sniffer"))
}

/// Returns a directory holding a working `bpf-linker` built for the nightly toolchain's LLVM,
/// building it first when it is missing, broken, or built for another LLVM.
pub fn ensure_bpf_linker() -> Result<PathBuf> {
    let llvm = nightly_llvm()?;
    let lib_name = llvm
        .library
        .file_name()
        .and_then(|n| n.to_str())
        .context("libLLVM path has no file name")?
        .to_owned();
    // One install per libLLVM build: a new nightly (another LLVM) gets its own linker.
    let root = tools_dir()?.join("bpf-linker").join(&lib_name);
    let bin_dir = root.join("bin");
    let linker = bin_dir.join("bpf-linker");
    if linker.exists() {
        match cmd::stdout(Command::new(&linker).arg("--version")) {
            Ok(_) => return Ok(bin_dir),
            Err(err) => eprintln!(
                "existing {} is unusable ({err:#}); rebuilding",
                linker.display()
            ),
        }
    }
    // bpf-linker's build finds LLVM under LLVM_PREFIX/lib; its rpath keeps pointing there, so the
    // prefix lives beside the binary rather than in a temporary directory.
    let prefix = root.join("llvm");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    for name in ["libLLVM.so", lib_name.as_str()] {
        let link = lib.join(name);
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
        }
        symlink(&llvm.library, &link)
            .with_context(|| format!("cannot create {}", link.display()))?;
    }
    eprintln!(
        "building bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {}) into {}",
        llvm.library.display(),
        llvm.major,
        root.display()
    );
    cmd::run(
        Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "bpf-linker", "--force", "--no-default-features"])
            .args(["--version", BPF_LINKER_VERSION])
            .arg("--features")
            .arg(format!("llvm-{}", llvm.major))
            .arg("--root")
            .arg(&root)
            .env("LLVM_PREFIX", &prefix),
    )
    .context("cannot build bpf-linker")?;
    cmd::stdout(Command::new(&linker).arg("--version"))
        .context("the bpf-linker just built does not run")?;
    Ok(bin_dir)
}

/// Installs Debian packages whose commands are missing; `pairs` maps a command to its package.
pub fn ensure_debian_packages(pairs: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = pairs
        .iter()
        .filter(|(command, _)| !on_path(command))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!("missing packages {missing:?} and no apt-get to install them");
    }
    cmd::run(Command::new("apt-get").arg("update").arg("-qq"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("cannot install {missing:?}"))
}

fn on_path(command: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}
