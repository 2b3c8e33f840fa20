//! Integration tests of the `injector` binary: real HTTPS on loopback, cluster-shaped
//! AdmissionReviews, hostile input, certificate rotation, the command line.

mod admission;
mod common;
mod hostile;
mod https;
mod limits;
mod process;
