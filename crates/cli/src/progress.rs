//! Progress bars for the training commands, drawn from the library's events.

use indicatif::{ProgressBar, ProgressStyle};
use visualrwkv::demo::RunEvent;

/// A bar over a run's optimiser steps: loss, tokens/s and ETA.
pub struct TrainBar {
    bar: ProgressBar,
}

impl TrainBar {
    /// A hidden bar until the run starts.
    pub fn new() -> Self {
        Self { bar: ProgressBar::hidden() }
    }

    /// Draws one event.
    pub fn event(&mut self, e: &RunEvent) {
        match e {
            RunEvent::Started { steps, devices } => {
                self.bar = ProgressBar::new(*steps as u64);
                self.bar.set_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} steps · {msg} · ETA {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                if *devices > 1 {
                    self.bar.println(format!("data-parallel on {devices} devices"));
                }
            }
            RunEvent::Step { stats, tokens_per_s } => {
                self.bar.set_message(format!("loss {:.3} · {:.0} tok/s", stats.loss, tokens_per_s));
                self.bar.inc(1);
            }
            RunEvent::Evaluating { questions } => {
                self.bar.finish_and_clear();
                eprintln!("answering {questions} held-out questions");
            }
        }
    }
}
