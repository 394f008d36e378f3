//! `visualrwkv serve`: an OpenAI-compatible HTTP server for a VisualRWKV checkpoint — chat
//! completions with images (streamed or not), text completions, models, health and Prometheus
//! metrics (docs/serving.md).
//!
//! Two threads of work: tokio + axum answer HTTP (parsing, image decoding, limits, the wire
//! format), and the calling thread runs [`visualrwkv::serving::Scheduler`] over the loaded
//! model — admitting queued requests between steps and decoding all active ones together. They
//! meet through channels: a handler sends its request with a channel for its events; a
//! handler gone (the client disconnected) closes that channel and the scheduler drops the
//! sequence at its next step.

mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;
use visualrwkv::Engine;
use visualrwkv::serving::{Admitted, Event, Scheduler, SchedulerConfig, ServeError, ServeRequest};
use visualrwkv_rwkv::RwkvBackend;

use super::vlm::ModelArgs;
use crate::Res;
use crate::args::DecoderKind;
use crate::device::{DeviceArgs, DeviceSpec, Job};

/// Flags of `serve`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Matrix type of the fused CPU decoder (auto: f32 on the CPU, the model's tensor ops on a
    /// GPU; burn: the model's tensor ops everywhere).
    #[arg(long, value_enum, default_value_t = DecoderKind::Auto)]
    weights: DecoderKind,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// Budget of the image-state cache in MiB (0: no cache).
    #[arg(long, default_value_t = 512)]
    cache_mb: usize,
    /// A directory whose files `file://` URLs and plain paths may name (none: only data: URLs).
    #[arg(long)]
    image_root: Option<PathBuf>,
    /// Largest image accepted, in bytes (after base64 decoding).
    #[arg(long, default_value_t = 20 * 1024 * 1024)]
    max_image_bytes: usize,
    /// Largest image side accepted, in pixels.
    #[arg(long, default_value_t = 8192)]
    max_image_side: u32,
    /// Most rows of an assembled prompt (text tokens and image rows).
    #[arg(long, default_value_t = 8192)]
    max_context: usize,
    /// Largest `max_tokens` a request may ask for.
    #[arg(long, default_value_t = 4096)]
    max_tokens_limit: usize,
    /// The model name `/v1/models` lists (default: the checkpoint's folder or file name).
    #[arg(long)]
    model_name: Option<String>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Counters `/metrics` reports, shared by the HTTP side and the scheduler.
#[derive(Default)]
pub struct Metrics {
    requests: AtomicU64,
    errors: AtomicU64,
    image_hits: AtomicU64,
    image_misses: AtomicU64,
    state_hits: AtomicU64,
    tokens: AtomicU64,
    active: AtomicU64,
    queued: AtomicU64,
    /// Time-to-first-token histogram: counts per bucket of [`TTFT_BUCKETS`] (+Inf last), the
    /// sum in microseconds.
    ttft: [AtomicU64; TTFT_BUCKETS.len() + 1],
    ttft_sum_us: AtomicU64,
}

/// Upper bounds (seconds) of the time-to-first-token histogram's buckets.
pub const TTFT_BUCKETS: [f64; 12] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

impl Metrics {
    fn observe_ttft(&self, seconds: f64) {
        let bucket = TTFT_BUCKETS.iter().position(|&b| seconds <= b).unwrap_or(TTFT_BUCKETS.len());
        self.ttft[bucket].fetch_add(1, Ordering::Relaxed);
        self.ttft_sum_us.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of the counters.
    fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        };
        metric("visualrwkv_requests_total", "counter", "Requests to /v1 endpoints.", get(&self.requests));
        metric("visualrwkv_request_errors_total", "counter", "Requests answered with an error.", get(&self.errors));
        metric(
            "visualrwkv_image_cache_hits_total",
            "counter",
            "Images that skipped the vision tower.",
            get(&self.image_hits),
        );
        metric(
            "visualrwkv_image_cache_misses_total",
            "counter",
            "Images run through the vision tower.",
            get(&self.image_misses),
        );
        metric(
            "visualrwkv_image_state_hits_total",
            "counter",
            "Requests that continued from a cached state after the image.",
            get(&self.state_hits),
        );
        metric("visualrwkv_tokens_generated_total", "counter", "Tokens generated.", get(&self.tokens));
        metric("visualrwkv_active_sequences", "gauge", "Sequences being decoded.", get(&self.active));
        metric("visualrwkv_queued_requests", "gauge", "Requests waiting for a batch slot.", get(&self.queued));
        let name = "visualrwkv_time_to_first_token_seconds";
        out.push_str(&format!(
            "# HELP {name} Time from a request's arrival to its first token.\n# TYPE {name} histogram\n"
        ));
        let mut cumulative = 0;
        for (i, b) in TTFT_BUCKETS.iter().map(|b| b.to_string()).chain(["+Inf".to_string()]).enumerate() {
            cumulative += get(&self.ttft[i]);
            out.push_str(&format!("{name}_bucket{{le=\"{b}\"}} {cumulative}\n"));
        }
        out.push_str(&format!("{name}_sum {}\n{name}_count {cumulative}\n", get(&self.ttft_sum_us) as f64 / 1e6));
        out
    }
}

/// What the scheduler tells a request's handler.
#[derive(Debug)]
pub enum Update {
    /// Admitted (prefilled).
    Started(Admitted),
    /// Text or the end.
    Event(Event),
    /// Refused or failed: (is the client at fault, message).
    Failed(bool, String),
}

/// A request for the scheduler with the channel of its updates.
pub struct Submission {
    request: ServeRequest,
    updates: mpsc::UnboundedSender<Update>,
    arrived: Instant,
}

/// What the HTTP side knows of the model.
#[derive(Clone)]
pub struct ModelInfo {
    name: String,
    created: u64,
    max_context: usize,
    max_tokens_limit: usize,
    max_image_bytes: usize,
    image_root: Option<PathBuf>,
    processor: Arc<visualrwkv_vision::ImageProcessor>,
}

/// A client run against the started server (`bench-serve`): called on its own thread with the
/// server's address; the server stops once it returns.
pub type Driver<T> = Box<dyn FnOnce(std::net::SocketAddr) -> T + Send>;

impl Job for Args {
    type Output = ();

    fn device_args(&self) -> &DeviceArgs {
        &self.device
    }

    fn run<B: RwkvBackend>(self, dev: B::Device, spec: &DeviceSpec) -> Res<()> {
        self.serve_with::<B, ()>(dev, spec, None).map(|_| ())
    }
}

impl Args {
    /// The same flags listening on any free port (`bench-serve` starts its own server).
    pub fn on_free_port(mut self) -> Self {
        self.port = 0;
        self
    }

    /// The `--weights` choice as the user named it.
    pub fn weights_name(&self) -> String {
        format!("{:?}", self.weights).to_lowercase()
    }

    /// The `--device` flags.
    pub fn device(&self) -> &DeviceArgs {
        &self.device
    }

    /// Loads the model and serves it until Ctrl-C / SIGTERM or, with a `driver`, until the
    /// driver (run on its own thread with the server's address) returns; then returns what it
    /// returned.
    pub fn serve_with<B: RwkvBackend, T: Send + 'static>(
        self,
        dev: B::Device,
        spec: &DeviceSpec,
        driver: Option<Driver<T>>,
    ) -> Res<Option<T>> {
        let loaded = self.model.load::<B>(&dev, self.model.fused_dtype(self.weights, spec)?)?;
        let (decoder, tower) = match &loaded.fused {
            Some((d, t)) => (Some(d), Some(t)),
            None => (None, None),
        };
        let mut processor = visualrwkv_vision::ImageProcessor::for_tower(&loaded.model.vision.config);
        processor.max_side = self.max_image_side;
        let image_root = match &self.image_root {
            Some(root) => Some(root.canonicalize().map_err(|e| format!("--image-root {}: {e}", root.display()))?),
            None => None,
        };
        let info = ModelInfo {
            name: self.model_name.clone().unwrap_or_else(|| self.model.model_id()),
            created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            max_context: self.max_context,
            max_tokens_limit: self.max_tokens_limit,
            max_image_bytes: self.max_image_bytes,
            image_root,
            processor: Arc::new(processor),
        };
        let config = SchedulerConfig {
            max_batch: self.max_batch.max(1),
            max_context: self.max_context,
            cache_bytes: self.cache_mb << 20,
        };
        let mut scheduler = Scheduler::new(
            &loaded.model,
            loaded.scan.as_ref(),
            loaded.strategy.as_ref(),
            loaded.tokenizer,
            Engine::from(decoder),
            tower,
            config,
        );
        let metrics = Arc::new(Metrics::default());
        let (submit, queue) = mpsc::unbounded_channel::<Submission>();
        let listener = std::net::TcpListener::bind((self.host.as_str(), self.port))
            .map_err(|e| format!("listening on {}:{}: {e}", self.host, self.port))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let http_metrics = metrics.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let http = std::thread::spawn(move || wire::serve(listener, info, submit, http_metrics, stopped));
        eprintln!(
            "serving {} ({spec}, {} prompt, {}) on http://{address} — Ctrl-C to stop",
            self.model.model_id(),
            loaded.strategy.name(),
            if decoder.is_some() { "fused CPU decoder" } else { "burn model" },
        );
        // Without a driver `stop` lives until the server has stopped (a dropped sender stops it).
        let mut stop = Some(stop);
        let client = match driver {
            Some(drive) => {
                let stop = stop.take();
                Some(std::thread::spawn(move || {
                    let result = drive(address);
                    if let Some(stop) = stop {
                        let _ = stop.send(());
                    }
                    result
                }))
            }
            None => None,
        };
        run_scheduler(&mut scheduler, queue, &metrics);
        let http = http.join();
        drop(stop);
        match http {
            Ok(result) => result?,
            Err(_) => return Err("the HTTP thread panicked".into()),
        }
        eprintln!("stopped");
        match client.map(std::thread::JoinHandle::join) {
            None => Ok(None),
            Some(Ok(result)) => Ok(Some(result)),
            Some(Err(_)) => Err("the benchmark's client thread panicked".into()),
        }
    }
}

/// Admits queued requests while there is room and steps the active ones until every sender
/// is gone (the HTTP server stopped) and nothing is left.
fn run_scheduler<B: RwkvBackend>(
    scheduler: &mut Scheduler<'_, B>,
    mut queue: mpsc::UnboundedReceiver<Submission>,
    metrics: &Metrics,
) {
    let mut waiting: std::collections::VecDeque<Submission> = Default::default();
    let mut routes: std::collections::HashMap<u64, (mpsc::UnboundedSender<Update>, Option<Instant>)> =
        Default::default();
    let mut next_id = 0u64;
    let mut open = true;
    loop {
        if scheduler.active() == 0 && waiting.is_empty() {
            if !open {
                return;
            }
            match queue.blocking_recv() {
                Some(s) => waiting.push_back(s),
                None => return,
            }
        }
        loop {
            match queue.try_recv() {
                Ok(s) => waiting.push_back(s),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Clients gone while waiting or decoding.
        waiting.retain(|s| !s.updates.is_closed());
        for id in scheduler.active_ids() {
            if routes.get(&id).is_none_or(|(tx, _)| tx.is_closed()) {
                scheduler.cancel(id);
                routes.remove(&id);
            }
        }
        while scheduler.has_room() {
            let Some(s) = waiting.pop_front() else { break };
            let id = next_id;
            next_id += 1;
            let before = scheduler.cache.counters;
            match scheduler.admit(id, s.request) {
                Ok(admitted) => {
                    let after = scheduler.cache.counters;
                    metrics.image_hits.fetch_add(after.hits - before.hits, Ordering::Relaxed);
                    metrics.image_misses.fetch_add(after.misses - before.misses, Ordering::Relaxed);
                    metrics.state_hits.fetch_add(after.state_hits - before.state_hits, Ordering::Relaxed);
                    let _ = s.updates.send(Update::Started(admitted));
                    routes.insert(id, (s.updates, Some(s.arrived)));
                }
                Err(e) => {
                    let _ = s.updates.send(Update::Failed(e.is_client_error(), e.to_string()));
                }
            }
        }
        metrics.queued.store(waiting.len() as u64, Ordering::Relaxed);
        metrics.active.store(scheduler.active() as u64, Ordering::Relaxed);
        if scheduler.active() == 0 {
            continue;
        }
        let before = scheduler.tokens_generated;
        match scheduler.step() {
            Ok(events) => {
                metrics.tokens.fetch_add(scheduler.tokens_generated - before, Ordering::Relaxed);
                for event in events {
                    let id = match &event {
                        Event::Text { id, .. } | Event::Finished { id, .. } => *id,
                    };
                    let finished = matches!(event, Event::Finished { .. });
                    if let Some((tx, arrived)) = routes.get_mut(&id) {
                        if let Some(t) = arrived.take() {
                            metrics.observe_ttft(t.elapsed().as_secs_f64());
                        }
                        if tx.send(Update::Event(event)).is_err() {
                            scheduler.cancel(id);
                            routes.remove(&id);
                            continue;
                        }
                    }
                    if finished {
                        routes.remove(&id);
                    }
                }
            }
            Err(e) => {
                let e: ServeError = e;
                for (_, (tx, _)) in routes.drain() {
                    let _ = tx.send(Update::Failed(false, e.to_string()));
                }
            }
        }
    }
}
