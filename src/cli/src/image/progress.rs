//! A progress bar for long copies: bytes, rate and time left, on stderr, only
//! when stderr is a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_storage::ops::Progress;

/// An indicatif bar behind the storage engine's [`Progress`] trait.
pub struct Bar(ProgressBar);

impl Bar {
    /// A hidden-until-sized bar labelled `what`.
    pub fn new(what: &'static str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what);
        Self(bar)
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn set_total(&mut self, total: u64) {
        self.0.set_length(total);
    }

    fn advance(&mut self, bytes: u64) {
        self.0.inc(bytes);
    }
}
