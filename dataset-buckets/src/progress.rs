//! Progress bars for the slow parts (checking files, caching). indicatif's bars are `Sync`, so rayon
//! workers tick one shared bar; they draw on stderr and stay hidden when it is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) fn bar(len: u64, message: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}
