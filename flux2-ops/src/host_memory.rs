//! The process's host memory as Linux reports it in `/proc/self/status`: the peak resident set
//! (`VmHWM`: heap, pinned buffers and the pages of memory-mapped checkpoints it touched) and the
//! anonymous resident memory now (`RssAnon`: heap and pinned buffers, no file pages). What the loading
//! benchmarks and `flux2-train quantize` print; elsewhere "n/a".

/// Peak and anonymous resident bytes (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostMemory {
    /// `VmHWM`: the peak resident set so far.
    pub peak_rss: u64,
    /// `RssAnon`: anonymous resident memory now.
    pub rss_anon: u64,
}

impl HostMemory {
    /// The process's numbers now; `None` where `/proc/self/status` does not give them (not Linux).
    pub fn now() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = |field: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(field))?;
            Some(line[field.len()..].split_whitespace().next()?.parse::<u64>().ok()? * 1024)
        };
        Some(Self { peak_rss: kib("VmHWM:")?, rss_anon: kib("RssAnon:")? })
    }

    /// [`Self::now`] as its `Display` (`peak RSS 12.34 GiB (VmHWM), anonymous 1.23 GiB (RssAnon)`), or
    /// `n/a`.
    pub fn describe() -> String {
        Self::now().map_or_else(|| "n/a".into(), |m| m.to_string())
    }
}

impl std::fmt::Display for HostMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        write!(f, "peak RSS {:.2} GiB (VmHWM), anonymous {:.2} GiB (RssAnon)", gib(self.peak_rss), gib(self.rss_anon))
    }
}

#[cfg(test)]
mod tests {
    use super::HostMemory;

    #[test]
    fn linux_reports_a_peak_at_least_the_anonymous_memory() {
        let Some(m) = HostMemory::now() else {
            if cfg!(target_os = "linux") {
                panic!("/proc/self/status has VmHWM and RssAnon on Linux");
            }
            assert_eq!(HostMemory::describe(), "n/a");
            return;
        };
        assert!(m.peak_rss > 0 && m.peak_rss >= m.rss_anon, "{m:?}");
        assert!(HostMemory::describe().starts_with("peak RSS "));
    }
}
