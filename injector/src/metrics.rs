//! Admission counters and a latency histogram, rendered as Prometheus text on `GET /metrics`.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use cli_support::prometheus::{Exposition, Kind, Seconds};

use crate::{
    decide::{Decision, Skip},
    limits::{Cut, Cuts},
};

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 10] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25,
];

/// The injector's counters; lock-free.
#[derive(Debug)]
pub struct Metrics {
    requests: AtomicU64,
    injected: AtomicU64,
    skipped: [AtomicU64; Skip::ALL.len()],
    denied: AtomicU64,
    bad_requests: AtomicU64,
    latency: Seconds,
    /// Connections and requests cut short by the limits, by reason.
    pub cuts: Cuts,
    /// Unix time (seconds) the counting began: the process's start.
    start_time_seconds: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: AtomicU64::default(),
            injected: AtomicU64::default(),
            skipped: Default::default(),
            denied: AtomicU64::default(),
            bad_requests: AtomicU64::default(),
            latency: Seconds::new(&BUCKETS),
            cuts: Cuts::default(),
            start_time_seconds: cli_support::clock::unix_seconds(),
        }
    }
}

impl Metrics {
    /// Records an answered review and its handling time.
    pub fn decided(&self, decision: &Decision, latency: Duration) {
        self.requests.fetch_add(1, Relaxed);
        match decision {
            Decision::Inject { .. } => self.injected.fetch_add(1, Relaxed),
            Decision::Skip { reason, .. } => self.skipped[reason.index()].fetch_add(1, Relaxed),
            Decision::Deny { .. } => self.denied.fetch_add(1, Relaxed),
        };
        self.observe(latency);
    }

    /// Records a body that was not an AdmissionReview (HTTP 400/413).
    pub fn bad_request(&self, latency: Duration) {
        self.requests.fetch_add(1, Relaxed);
        self.bad_requests.fetch_add(1, Relaxed);
        self.observe(latency);
    }

    fn observe(&self, latency: Duration) {
        self.latency.observe(latency);
    }

    /// Prometheus text exposition format, version 0.0.4; `certificate_not_after` is the serving
    /// certificate's expiry (Unix seconds), when one is loaded.
    #[must_use]
    pub fn render(&self, certificate_not_after: Option<i64>) -> String {
        let get = |c: &AtomicU64| c.load(Relaxed);
        let mut text = Exposition::default();
        text.family(
            "tcp_sniffer_injector_build_info",
            Kind::Gauge,
            "Always 1; the version of the injector.",
        )
        .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1);
        text.family(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since the Unix epoch, in seconds.",
        )
        .sample(&[], self.start_time_seconds);
        if let Some(not_after) = certificate_not_after {
            text.family(
                "tcp_sniffer_injector_certificate_not_after_seconds",
                Kind::Gauge,
                "Expiry (X.509 notAfter) of the serving certificate now loaded, in Unix seconds.",
            )
            .sample(&[], not_after as f64);
        }
        text.family(
            "tcp_sniffer_injector_requests_total",
            Kind::Counter,
            "Admission requests received on /mutate.",
        )
        .sample(&[], get(&self.requests));
        let mut decisions = text.family(
            "tcp_sniffer_injector_decisions_total",
            Kind::Counter,
            "Answered reviews by decision and reason.",
        );
        decisions
            .sample(
                &[("decision", "injected"), ("reason", "")],
                get(&self.injected),
            )
            .sample(&[("decision", "denied"), ("reason", "")], get(&self.denied));
        for skip in Skip::ALL {
            decisions.sample(
                &[("decision", "skipped"), ("reason", skip.label())],
                get(&self.skipped[skip.index()]),
            );
        }
        text.family(
            "tcp_sniffer_injector_bad_requests_total",
            Kind::Counter,
            "Bodies that were not a usable AdmissionReview.",
        )
        .sample(&[], get(&self.bad_requests));
        self.latency.render(
            &mut text.family(
                "tcp_sniffer_injector_admission_duration_seconds",
                Kind::Histogram,
                "Time to answer a review, body read to response built.",
            ),
            &[],
        );
        let mut cuts = text.family(
            "tcp_sniffer_injector_cuts_total",
            Kind::Counter,
            "Connections and requests cut short by the server's limits, by reason.",
        );
        for cut in Cut::ALL {
            cuts.sample(&[("reason", cut.label())], self.cuts.count(cut));
        }
        text.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_decisions_and_buckets_latency() {
        let metrics = Metrics::default();
        let inject = Decision::Inject {
            ports: vec![80],
            source: crate::decide::PortSource::Options,
            patch: Vec::new(),
            warnings: Vec::new(),
        };
        metrics.decided(&inject, Duration::from_micros(80));
        metrics.decided(
            &Decision::Skip {
                reason: Skip::HostNetwork,
                warning: None,
            },
            Duration::from_millis(3),
        );
        metrics.bad_request(Duration::from_secs(1));
        let text = metrics.render(Some(1_900_000_000));
        assert!(text.contains("tcp_sniffer_injector_requests_total 3\n"));
        assert!(text.contains("decisions_total{decision=\"injected\",reason=\"\"} 1\n"));
        assert!(text.contains("decisions_total{decision=\"skipped\",reason=\"host_network\"} 1\n"));
        assert!(text.contains("tcp_sniffer_injector_bad_requests_total 1\n"));
        assert!(text.contains("duration_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("duration_seconds_count 3\n"));
        assert!(text.contains("tcp_sniffer_injector_certificate_not_after_seconds 1900000000\n"));
        assert!(text.contains("tcp_sniffer_injector_build_info{version=\""));
    }
}
