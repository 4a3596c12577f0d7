//! Metrics and request logs that a benchmark can switch on and off within one run, so the
//! cost of both is measured against the same process, data and warm caches.
//!
//! Both are process-wide and installed once: the `metrics` recorder is the Prometheus
//! recorder `/metrics` renders, behind a switch (off, every metric is a no-op, as with no
//! recorder installed); the log is the JSON request log at `info`, written to a file as
//! `TENANCY_LOG=info TENANCY_LOG_FORMAT=json tenancy serve 2>file` writes it (off, every
//! event is filtered out).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tracing_subscriber::filter::{dynamic_filter_fn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

/// The switch of both.
#[derive(Clone)]
pub struct Observability {
    on: Arc<AtomicBool>,
}

impl Observability {
    /// Installs the recorder and the log subscriber (writing to `log`), both off.
    pub fn install(log: &Path) -> Result<Observability> {
        let on = Arc::new(AtomicBool::new(false));
        let recorder = Switched {
            on: Arc::clone(&on),
            inner: PrometheusBuilder::new().build_recorder(),
        };
        metrics::set_global_recorder(recorder)
            .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
        let file = std::fs::File::create(log).context("creating the request log")?;
        let gate = Arc::clone(&on);
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .with_filter(LevelFilter::INFO)
            .with_filter(dynamic_filter_fn(move |_, _| gate.load(Ordering::Relaxed)));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .context("installing the log subscriber")?;
        Ok(Observability { on })
    }

    pub fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }
}

struct Switched {
    on: Arc<AtomicBool>,
    inner: PrometheusRecorder,
}

impl Recorder for Switched {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        if self.on.load(Ordering::Relaxed) {
            self.inner.register_counter(key, metadata)
        } else {
            Counter::noop()
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        if self.on.load(Ordering::Relaxed) {
            self.inner.register_gauge(key, metadata)
        } else {
            Gauge::noop()
        }
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        if self.on.load(Ordering::Relaxed) {
            self.inner.register_histogram(key, metadata)
        } else {
            Histogram::noop()
        }
    }
}
