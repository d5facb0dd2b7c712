//! A controller process measured from outside, from `/proc`: resident memory and CPU time. The
//! same for any controller (phaseloop's operator, a peer written in Go), so figures compare.

use std::{future::Future, path::PathBuf, time::Duration};

use tokio::time::Instant;

/// Resident memory of `pid` (`VmRSS` of `/proc/<pid>/status`), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    parse_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// User plus system CPU time of `pid` and all its threads, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    parse_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_rss(status: &str) -> Option<u64> {
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in clock ticks of 1/100 s (Linux's USER_HZ).
fn parse_cpu(stat: &str) -> Option<f64> {
    // Fields after the parenthesised command name (which may hold spaces); utime and stime are
    // fields 14 and 15 of the line, 12 and 13 after it.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A process known by the PID file its start script writes (so a restart is followed).
#[derive(Clone, Debug)]
pub struct PidFile(pub PathBuf);

impl PidFile {
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.0).ok()?.trim().parse().ok()
    }

    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid()?)
    }

    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid()?)
    }

    /// Mean resident memory over `over`, sampled every 100ms.
    pub async fn mean_rss(&self, over: Duration) -> f64 {
        let (mut sum, mut n) = (0.0, 0.0);
        let until = Instant::now() + over;
        while Instant::now() < until {
            if let Some(b) = self.rss_bytes() {
                sum += b as f64;
                n += 1.0;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if n > 0.0 { sum / n } else { 0.0 }
    }

    /// Runs `work` while sampling the resident memory every 20ms; returns its output and the
    /// highest sample.
    pub async fn peak_rss_while<F: Future>(&self, work: F) -> (F::Output, u64) {
        let mut work = std::pin::pin!(work);
        let mut peak = 0;
        loop {
            peak = peak.max(self.rss_bytes().unwrap_or(0));
            tokio::select! {
                out = &mut work => return (out, peak.max(self.rss_bytes().unwrap_or(0))),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_cpu_from_proc_formats() {
        assert_eq!(parse_rss("Name:\tx\nVmRSS:\t   2048 kB\nVmSwap:\t0 kB\n"), Some(2 * 1024 * 1024));
        assert_eq!(parse_rss("Name:\tx\n"), None);
        // A command name with spaces and parentheses; utime 150, stime 50 ticks.
        let stat = "42 (rollouts (x) c) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 12 0 100 0 0";
        assert_eq!(parse_cpu(stat), Some(2.0));
        // This process: present and sane.
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(cpu_seconds(me).unwrap() >= 0.0);
    }
}
