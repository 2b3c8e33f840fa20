//! The packet capture endpoint's settings (`CAPTURE_*`) and their validation.

use std::{net::SocketAddr, time::Duration};

use clap::{ArgAction, builder::BoolishValueParser};
use sidecar_contract::{MAX_RECORDER_BYTES, echo::Echo, env};
use sniffer_common::CAPTURE_MAX_BYTES;
use thiserror::Error;

/// The `CAPTURE_*` variables, as given (flattened into the sniffer's arguments).
#[derive(Clone, Debug, clap::Args)]
pub struct CaptureArgs {
    /// Where packet captures are served (`GET /capture`, `GET /capture/recent`, as pcapng): an
    /// address and port on the pod's loopback, which `kubectl port-forward` reaches and nothing
    /// outside the pod does; or `off`.
    #[arg(long, env = env::CAPTURE_LISTEN, default_value = "127.0.0.1:9465")]
    pub capture_listen: String,
    /// Allow `CAPTURE_LISTEN` on an address other than loopback. Anyone who reaches it can then
    /// read the pod's packet headers (and payload, up to `CAPTURE_MAX_SNAPLEN`) without
    /// Kubernetes' `pods/portforward` permission.
    #[arg(long, env = env::CAPTURE_ALLOW_REMOTE, default_value = "false", action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub capture_allow_remote: bool,
    /// The longest capture a request may ask for (seconds).
    #[arg(long, env = env::CAPTURE_MAX_SECONDS, default_value_t = 300)]
    pub capture_max_seconds: u64,
    /// The most bytes of a packet a request's `snaplen` may ask for; 0: none, each packet is cut
    /// at the end of its TCP header and no payload leaves the kernel.
    #[arg(long, env = env::CAPTURE_MAX_SNAPLEN, default_value_t = 0)]
    pub capture_max_snaplen: u32,
    /// Captures served at once; one more is answered `429`.
    #[arg(long, env = env::CAPTURE_MAX_CONCURRENT, default_value_t = 1)]
    pub capture_max_concurrent: u64,
    /// Bytes of the most recent packets' headers kept in memory for `GET /capture/recent` (the
    /// flight recorder); 0: off.
    #[arg(long, env = env::CAPTURE_RECORDER_BYTES, default_value_t = 0)]
    pub capture_recorder_bytes: u64,
}

/// The validated settings; present when captures are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Where captures are served.
    pub listen: SocketAddr,
    /// The longest capture.
    pub max_duration: Duration,
    /// The most bytes of a packet a request may ask for; 0: headers only.
    pub max_snaplen: u32,
    /// Captures served at once.
    pub max_concurrent: usize,
    /// The flight recorder's size in bytes; 0: off.
    pub recorder_bytes: usize,
}

/// Longest `CAPTURE_MAX_SECONDS`: a day.
const MAX_SECONDS: u64 = 86_400;
/// Most `CAPTURE_MAX_CONCURRENT`.
const MAX_CONCURRENT: u64 = 16;

/// A `CAPTURE_*` value the sniffer cannot start with.
#[derive(Debug, Error)]
pub enum CaptureConfigError {
    /// `CAPTURE_LISTEN` is neither `off` nor an address and port.
    #[error(
        "CAPTURE_LISTEN {:?} is not an address and port (e.g. 127.0.0.1:9465) or off",
        Echo(.0)
    )]
    Listen(String),
    /// `CAPTURE_LISTEN` is reachable from outside the pod without the opt-in.
    #[error(
        "CAPTURE_LISTEN={0} is not a loopback address: anyone who reaches it could read the pod's packets; use 127.0.0.1 (kubectl port-forward reaches it), or set CAPTURE_ALLOW_REMOTE=true"
    )]
    Remote(SocketAddr),
    /// A number outside its range.
    #[error("{name}={value} is out of range: it must be from {min} to {max}")]
    OutOfRange {
        /// The variable.
        name: &'static str,
        /// The value given.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
}

fn in_range(name: &'static str, value: u64, min: u64, max: u64) -> Result<u64, CaptureConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(CaptureConfigError::OutOfRange {
            name,
            value,
            min,
            max,
        })
    }
}

impl CaptureArgs {
    /// The settings, or `None` when `CAPTURE_LISTEN` is `off`.
    ///
    /// # Errors
    ///
    /// When a value is malformed or out of range, or the address is not loopback without
    /// `CAPTURE_ALLOW_REMOTE`.
    pub fn validate(&self) -> Result<Option<CaptureConfig>, CaptureConfigError> {
        let Self {
            capture_listen,
            capture_allow_remote,
            capture_max_seconds,
            capture_max_snaplen,
            capture_max_concurrent,
            capture_recorder_bytes,
        } = self;
        if capture_listen.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let listen: SocketAddr = capture_listen
            .trim()
            .parse()
            .map_err(|_| CaptureConfigError::Listen(capture_listen.clone()))?;
        if !listen.ip().is_loopback() && !capture_allow_remote {
            return Err(CaptureConfigError::Remote(listen));
        }
        let seconds = in_range("CAPTURE_MAX_SECONDS", *capture_max_seconds, 1, MAX_SECONDS)?;
        let snaplen = in_range(
            "CAPTURE_MAX_SNAPLEN",
            u64::from(*capture_max_snaplen),
            0,
            u64::from(CAPTURE_MAX_BYTES),
        )?;
        let concurrent = in_range(
            "CAPTURE_MAX_CONCURRENT",
            *capture_max_concurrent,
            1,
            MAX_CONCURRENT,
        )?;
        let recorder = in_range(
            "CAPTURE_RECORDER_BYTES",
            *capture_recorder_bytes,
            0,
            MAX_RECORDER_BYTES,
        )?;
        Ok(Some(CaptureConfig {
            listen,
            max_duration: Duration::from_secs(seconds),
            max_snaplen: u32::try_from(snaplen).expect("at most CAPTURE_MAX_BYTES"),
            max_concurrent: usize::try_from(concurrent).expect("at most 16"),
            recorder_bytes: usize::try_from(recorder).expect("at most 1 GiB"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidecar_contract::CAPTURE_PORT;

    fn args() -> CaptureArgs {
        CaptureArgs {
            capture_listen: "127.0.0.1:9465".into(),
            capture_allow_remote: false,
            capture_max_seconds: 300,
            capture_max_snaplen: 0,
            capture_max_concurrent: 1,
            capture_recorder_bytes: 0,
        }
    }

    #[test]
    fn defaults_serve_headers_on_loopback() {
        let config = args().validate().unwrap().unwrap();
        assert_eq!(
            config.listen,
            SocketAddr::from(([127, 0, 0, 1], CAPTURE_PORT))
        );
        assert_eq!(config.max_duration, Duration::from_secs(300));
        assert_eq!((config.max_snaplen, config.max_concurrent), (0, 1));
        let ipv6 = CaptureArgs {
            capture_listen: "[::1]:9465".into(),
            ..args()
        };
        assert!(ipv6.validate().unwrap().is_some());
    }

    #[test]
    fn off_turns_captures_off() {
        for value in ["off", "OFF", " off "] {
            let off = CaptureArgs {
                capture_listen: value.into(),
                ..args()
            };
            assert_eq!(off.validate().unwrap(), None);
        }
    }

    #[test]
    fn a_pod_address_needs_the_opt_in() {
        let remote = CaptureArgs {
            capture_listen: "0.0.0.0:9465".into(),
            ..args()
        };
        let err = remote.validate().unwrap_err();
        assert!(matches!(err, CaptureConfigError::Remote(_)));
        assert!(
            err.to_string().contains("CAPTURE_ALLOW_REMOTE=true"),
            "{err}"
        );
        let allowed = CaptureArgs {
            capture_allow_remote: true,
            ..remote
        };
        assert!(allowed.validate().unwrap().is_some());
    }

    #[test]
    fn bad_values_name_their_variable() {
        let bad = |change: fn(&mut CaptureArgs)| {
            let mut args = args();
            change(&mut args);
            args.validate().unwrap_err().to_string()
        };
        assert!(bad(|a| a.capture_listen = "localhost".into()).contains("CAPTURE_LISTEN"));
        assert!(bad(|a| a.capture_max_seconds = 0).contains("CAPTURE_MAX_SECONDS=0"));
        assert!(bad(|a| a.capture_max_snaplen = 4097).contains("CAPTURE_MAX_SNAPLEN=4097"));
        assert!(bad(|a| a.capture_max_concurrent = 0).contains("CAPTURE_MAX_CONCURRENT=0"));
        assert!(bad(|a| a.capture_recorder_bytes = 2 << 30).contains("CAPTURE_RECORDER_BYTES"));
    }
}
