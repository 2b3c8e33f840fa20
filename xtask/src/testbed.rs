//! Two network namespaces joined by a veth pair (`client` 10.0.0.1, `server` 10.0.0.2, each
//! with an `eth0`), for the benchmark and the image checks; removed on drop.

use std::process::Command;

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::cmd;

/// Two namespaces and a veth between them, removed on drop.
pub struct Testbed {
    /// The client namespace.
    pub client: String,
    /// The server namespace.
    pub server: String,
}

impl Testbed {
    /// Creates both namespaces and the link.
    pub fn new(prefix: &str) -> Result<Self> {
        let id = format!("{prefix}-{}", std::process::id());
        let bed = Self {
            client: format!("{id}-c"),
            server: format!("{id}-s"),
        };
        for ns in [&bed.client, &bed.server] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &bed.client,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &bed.server,
        ])?;
        for (ns, addr) in [(&bed.client, "10.0.0.1/24"), (&bed.server, "10.0.0.2/24")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(bed)
    }

    /// `program` run inside namespace `ns`.
    pub fn exec(ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }

    /// rx + tx packets of the server's `eth0`.
    pub fn server_packets(&self) -> Result<u64> {
        let out = cmd::stdout(Command::new("ip").args([
            "-n",
            &self.server,
            "-s",
            "-j",
            "link",
            "show",
            "eth0",
        ]))?;
        let link: Value = serde_json::from_str(&out).context("ip -j output")?;
        let stats = &link[0]["stats64"];
        let count = |dir: &str| stats[dir]["packets"].as_u64().context("no packet counter");
        Ok(count("rx")? + count("tx")?)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    cmd::output(Command::new("ip").args(args)).map(drop)
}
