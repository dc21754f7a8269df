//! Timestamps and run ids. A `Timestamp` serializes as RFC 3339 with milliseconds, the form
//! every journal, report and event has always used.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(SystemTime::now())
    }

    /// Time from `earlier` to this timestamp, to the second (zero if it is not earlier).
    pub fn since(&self, earlier: Timestamp) -> Duration {
        Duration::from_secs(self.0.duration_since(earlier.0).unwrap_or_default().as_secs())
    }

    /// Time passed since this timestamp (zero if it lies in the future).
    pub fn elapsed(&self) -> Duration {
        SystemTime::now().duration_since(self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text)
            .map(Timestamp)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time: {e}")))
    }
}

/// Seconds since the epoch, for deadlines that must survive a restart of the process.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A run id that sorts by time (to the millisecond) and is unique enough on one host.
pub fn new_run_id() -> String {
    let now = SystemTime::now();
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let ts = humantime::format_rfc3339_millis(now).to_string();
    let compact: String = ts.chars().filter(char::is_ascii_alphanumeric).collect();
    let salt = (nanos ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{compact}-{salt:04x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_as_rfc3339_millis() {
        let t: Timestamp = serde_json::from_str("\"2026-01-01T00:01:40.123Z\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"2026-01-01T00:01:40.123Z\"");
        assert!(serde_json::from_str::<Timestamp>("\"soon\"").is_err());
    }

    #[test]
    fn run_ids_sort_by_time() {
        let a = new_run_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_run_id();
        assert!(a < b, "{a} !< {b}");
    }
}
