//! Admission counters and a latency histogram, rendered as Prometheus text on `GET /metrics`.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use cli_support::prometheus::{Exposition, Kind};

use crate::{
    decide::{Decision, Skip},
    limits::{Cut, Cuts},
};

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 10] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25,
];

/// The injector's counters; lock-free.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: AtomicU64,
    injected: AtomicU64,
    skipped: [AtomicU64; Skip::ALL.len()],
    denied: AtomicU64,
    bad_requests: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
    /// Connections and requests cut short by the limits, by reason.
    pub cuts: Cuts,
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
        let seconds = latency.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                count.fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ns.fetch_add(
            u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    /// Prometheus text exposition format, version 0.0.4.
    #[must_use]
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Relaxed);
        let mut text = Exposition::default();
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
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.latency_buckets)
            .map(|(bound, count)| (*bound, get(count)))
            .collect();
        text.family(
            "tcp_sniffer_injector_admission_duration_seconds",
            Kind::Histogram,
            "Time to answer a review, body read to response built.",
        )
        .histogram(
            &[],
            &buckets,
            get(&self.latency_sum_ns) as f64 / 1e9,
            get(&self.latency_count),
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
        let text = metrics.render();
        assert!(text.contains("tcp_sniffer_injector_requests_total 3\n"));
        assert!(text.contains("decisions_total{decision=\"injected\",reason=\"\"} 1\n"));
        assert!(text.contains("decisions_total{decision=\"skipped\",reason=\"host_network\"} 1\n"));
        assert!(text.contains("tcp_sniffer_injector_bad_requests_total 1\n"));
        assert!(text.contains("duration_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("duration_seconds_count 3\n"));
    }
}
