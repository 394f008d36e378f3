//! A streaming loader: worker threads decode and preprocess the images of an ordered list of
//! samples, at most a bounded window ahead of the consumer, and hand them out in order.
//!
//! Memory stays at `window` preprocessed images whatever the dataset size; a slow image holds
//! back only the samples after it. Every image goes through the same decoder as inference
//! (`visualrwkv_vision::ImageProcessor`: JPEG bit-identical to Pillow), converted to RGB as the
//! reference's `Image.open(f).convert("RGB")` (alpha dropped).
//!
//! # Shapes
//!
//! [`Loaded::pixels`]: `[3, H, W]` f32, channel-major, already normalised.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use visualrwkv_vision::ImageProcessor;

use crate::{DataError, MissingImage, Tokenized};

/// A sample with its image preprocessed.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Position of the sample in the loader's order.
    pub position: usize,
    /// The sample.
    pub sample: Tokenized,
    /// `[3, H, W]` pixel values (`None` for a text-only sample, or a skipped image).
    pub pixels: Option<Vec<f32>>,
    /// `(H, W)` of `pixels`.
    pub size: (usize, usize),
    /// Whether the image was missing or undecodable and the sample must be left out
    /// ([`MissingImage::Skip`]).
    pub skipped: bool,
}

/// Settings of a [`Loader`].
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    /// The folder image paths are relative to.
    pub image_folder: PathBuf,
    /// Decoding and preprocessing (the tower's processor).
    pub processor: ImageProcessor,
    /// Worker threads.
    pub workers: usize,
    /// Samples prepared ahead of the consumer at most.
    pub window: usize,
    /// What a missing or undecodable image does.
    pub on_missing_image: MissingImage,
    /// The dataset file (for errors).
    pub origin: PathBuf,
}

struct Shared {
    next: AtomicUsize,
    consumed: Mutex<usize>,
    advanced: Condvar,
    stop: AtomicBool,
}

/// Loads `order` (indices into `samples`) in order, `workers` threads ahead of the consumer.
pub struct Loader {
    rx: Receiver<(usize, Result<Loaded, DataError>)>,
    pending: BTreeMap<usize, Result<Loaded, DataError>>,
    next_out: usize,
    len: usize,
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

/// Decodes and preprocesses one sample's image.
pub fn load_one(sample: &Tokenized, position: usize, options: &LoaderOptions) -> Result<Loaded, DataError> {
    let Some(image) = &sample.image else {
        return Ok(Loaded { position, sample: sample.clone(), pixels: None, size: (0, 0), skipped: false });
    };
    let path = options.image_folder.join(image);
    let decoded = options.processor.open(&path).and_then(|img| {
        options
            .processor
            .preprocess(&visualrwkv_vision::preprocess::to_rgb(&img, visualrwkv_vision::AlphaMode::Drop).into())
    });
    match decoded {
        Ok((pixels, size)) => {
            Ok(Loaded { position, sample: sample.clone(), pixels: Some(pixels), size, skipped: false })
        }
        Err(e) => match options.on_missing_image {
            MissingImage::Skip => {
                Ok(Loaded { position, sample: sample.clone(), pixels: None, size: (0, 0), skipped: true })
            }
            MissingImage::Error => Err(DataError::Image {
                path: options.origin.clone(),
                id: sample.id.clone(),
                image: path,
                why: e.to_string(),
            }),
        },
    }
}

impl Loader {
    /// Starts the workers over `order` (each entry an index into `samples`).
    pub fn spawn(samples: Arc<Vec<Tokenized>>, order: Vec<usize>, options: LoaderOptions) -> Result<Self, DataError> {
        if let Some(&bad) = order.iter().find(|&&i| i >= samples.len()) {
            return Err(DataError::OrderIndex { index: bad, samples: samples.len() });
        }
        let workers = options.workers.max(1);
        let window = options.window.max(workers);
        let (tx, rx) = sync_channel(window);
        let shared = Arc::new(Shared {
            next: AtomicUsize::new(0),
            consumed: Mutex::new(0),
            advanced: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let order = Arc::new(order);
        let options = Arc::new(options);
        let handles = (0..workers)
            .map(|_| {
                let (samples, order, options, shared, tx) =
                    (samples.clone(), order.clone(), options.clone(), shared.clone(), tx.clone());
                std::thread::spawn(move || work(&samples, &order, &options, &shared, &tx, window))
            })
            .collect();
        Ok(Self { rx, pending: BTreeMap::new(), next_out: 0, len: order.len(), shared, handles })
    }

    /// Samples still to come.
    pub fn remaining(&self) -> usize {
        self.len - self.next_out
    }
}

fn work(
    samples: &[Tokenized],
    order: &[usize],
    options: &LoaderOptions,
    shared: &Shared,
    tx: &SyncSender<(usize, Result<Loaded, DataError>)>,
    window: usize,
) {
    loop {
        let position = shared.next.fetch_add(1, Ordering::SeqCst);
        if position >= order.len() {
            return;
        }
        // Wait until the consumer is within `window` of this position.
        {
            let mut consumed = shared.consumed.lock().unwrap_or_else(|e| e.into_inner());
            while position >= *consumed + window && !shared.stop.load(Ordering::SeqCst) {
                consumed = shared.advanced.wait(consumed).unwrap_or_else(|e| e.into_inner());
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let result = load_one(&samples[order[position]], position, options);
        if tx.send((position, result)).is_err() {
            return;
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Loaded, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next_out >= self.len {
            return None;
        }
        let item = loop {
            if let Some(item) = self.pending.remove(&self.next_out) {
                break item;
            }
            match self.rx.recv() {
                Ok((position, item)) => {
                    self.pending.insert(position, item);
                }
                Err(_) => return Some(Err(DataError::WorkersStopped)),
            }
        };
        self.next_out += 1;
        *self.shared.consumed.lock().unwrap_or_else(|e| e.into_inner()) = self.next_out;
        self.shared.advanced.notify_all();
        Some(item)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.advanced.notify_all();
        // Unblock workers waiting to send, then join them.
        while self.rx.try_recv().is_ok() {}
        for h in self.handles.drain(..) {
            while !h.is_finished() {
                while self.rx.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = h.join();
        }
    }
}
