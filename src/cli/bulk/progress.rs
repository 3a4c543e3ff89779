//! What `bulk` shows while it runs, and how it stops on Ctrl-C.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Notify;

use super::Tally;

/// A bar with rate and ETA on a terminal; a plain line every few seconds otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    started: Instant,
    interval: Duration,
    last_line: std::sync::Mutex<Instant>,
}

impl Progress {
    pub fn start(total: usize, interval: Duration) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} {pos}/{len} {rate} eta {eta} {msg}",
                )
                .expect("the template is valid")
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.1}/s", state.per_sec());
                    },
                ),
            );
            bar
        });
        Self {
            bar,
            total,
            started: Instant::now(),
            interval,
            last_line: std::sync::Mutex::new(Instant::now()),
        }
    }

    pub fn advance(&self, tally: &Tally) {
        let handled = tally.handled();
        if let Some(bar) = &self.bar {
            bar.set_position(handled as u64);
            bar.set_message(format!("failed {}", tally.failures.len()));
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() < self.interval && handled < self.total {
            return;
        }
        *last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = tally.done as f64 / elapsed.max(1e-3);
        let left = self.total.saturating_sub(handled);
        println!(
            "progress: {handled}/{} (enrolled {}, skipped {}, failed {}), {rate:.1}/s, eta {:.0} s",
            self.total,
            tally.done,
            tally.skipped,
            tally.failures.len(),
            if rate > 0.0 { left as f64 / rate } else { 0.0 },
        );
    }

    /// Clears the bar, so that the summary starts on a line of its own.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Ctrl-C: the first stops new work (in-flight devices finish and are saved); the second
/// exits now, which is safe because a device's files are renamed into place only once
/// they are on disk: what is left is hidden temporary files, removed by the next run.
pub struct Interrupt {
    happened: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Interrupt {
    pub fn watch() -> Self {
        let happened = Arc::new(AtomicBool::new(false));
        let notify = Arc::new(Notify::new());
        let (flag, wake) = (happened.clone(), notify.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "interrupted: finishing the devices in flight (Ctrl-C again to stop now)"
                );
                flag.store(true, Ordering::SeqCst);
                wake.notify_waiters();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(crate::cli::exit::INTERRUPTED.into());
                }
            }
        });
        Self { happened, notify }
    }

    pub async fn wait(&self) {
        let notified = self.notify.notified();
        if self.happened() {
            return;
        }
        notified.await;
    }

    pub fn happened(&self) -> bool {
        self.happened.load(Ordering::SeqCst)
    }
}
