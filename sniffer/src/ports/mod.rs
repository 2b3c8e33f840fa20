//! Live ports: the ports a pod's annotations ask for ([`podinfo`], pure), and watching them
//! change in `PORTS_FILE` ([`watch`]). Changing the kernel's ports is [`crate::capture`]'s.

pub mod podinfo;
pub mod watch;
