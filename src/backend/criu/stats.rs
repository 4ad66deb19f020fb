//! CRIU's own statistics, as `--display-stats` prints them at the end of a
//! dump or restore: "Frozen time: 228326 us", "Memory pages written: 4127
//! (0x101f)".

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats(BTreeMap<String, u64>);

impl Stats {
    pub fn parse(text: &str) -> Stats {
        let mut map = BTreeMap::new();
        for line in text.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if let Some(v) = value.split_whitespace().next().and_then(|v| v.parse().ok()) {
                map.insert(name.trim().to_string(), v);
            }
        }
        Stats(map)
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.get(name).copied()
    }

    /// A "... time" entry, in milliseconds.
    pub fn ms(&self, name: &str) -> Option<f64> {
        self.get(name).map(|us| us as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn reads_what_display_stats_prints() {
        let s = Stats::parse(
            "Displaying dump stats:\nFreezing time: 191 us\nFrozen time: 228326 us\nMemory pages written: 4127 (0x101f)\n",
        );
        assert_eq!(s.ms("Frozen time"), Some(228.326));
        assert_eq!(s.get("Memory pages written"), Some(4127));
        assert_eq!(s.get("Displaying dump stats"), None);
    }
}
