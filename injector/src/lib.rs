//! tcp-sniffer's injector: a mutating admission webhook that adds the sniffer container to pods.
//!
//! | module | role |
//! |---|---|
//! | [`annotations`] | the pod annotations read and written |
//! | [`options`] | `InjectorOptions`: the container's settings from the file and overrides, validated |
//! | [`decide`] | decide the mutation: inject, skip (why), or deny (why) |
//! | [`sidecar`] | the container that is added |
//! | [`patch`] | the JSON Patch that adds it |
//! | [`review`] | AdmissionReview body in, response body out |
//! | [`tls`] | serve TLS: the certificate store and its reloading |
//! | [`server`] | the HTTPS server: accept and drain (`mod.rs`), a connection's life (`connection.rs`), what a request gets (`routes.rs`), the plain-HTTP probes port (`metrics_port.rs`) |
//! | [`limits`] | bounds on connections, request-body memory and time |
//! | [`metrics`] | counters and the latency histogram |
//! | [`certs`] | `injector gen-certs` |
//! | [`preview`] | `injector inject -f` |
//! | [`profile`] | `injector install-seccomp-profile` |
//! | [`files`] | replacing files atomically, never through a link |

pub mod annotations;
pub mod certs;
pub mod decide;
pub mod files;
pub mod limits;
pub mod metrics;
pub mod options;
pub mod patch;
pub mod preview;
pub mod profile;
pub mod review;
pub mod server;
pub mod sidecar;
pub mod tls;
