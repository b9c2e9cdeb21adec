//! Engine configuration with validation. Every setting has a default that suits a small
//! machine; [`EngineConfig::validate`] names the offending field and the allowed range.

use crate::error::Error;
use crate::tier::{OverflowPolicy, Tier, TierMap};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Largest ring the engine accepts (2^24 slots; ~1.5 GiB of events at 96 bytes a slot).
pub const MAX_RING_CAPACITY: usize = 1 << 24;
/// Largest worker count accepted.
pub const MAX_WORKERS: usize = 256;
/// Largest dedup window accepted (ids remembered).
pub const MAX_DEDUP_WINDOW: usize = 1 << 26;

/// One tier ring's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Slots in the ring (per worker lane); a power of two in `2 ..= 2^24`.
    pub capacity: usize,
    /// What a publish does when the ring is full.
    pub overflow: OverflowPolicy,
}

/// The three tiers' settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TiersConfig {
    /// Critical + high by default. Default 16384 slots, `Block` (critical is never dropped).
    pub realtime: TierConfig,
    /// Medium by default. Default 65536 slots, `Block`.
    pub transactional: TierConfig,
    /// Low by default. Default 65536 slots, `DropNewest` (counted).
    pub batch: TierConfig,
}

impl Default for TiersConfig {
    fn default() -> Self {
        TiersConfig {
            realtime: TierConfig {
                capacity: 16_384,
                overflow: OverflowPolicy::Block,
            },
            transactional: TierConfig {
                capacity: 65_536,
                overflow: OverflowPolicy::Block,
            },
            batch: TierConfig {
                capacity: 65_536,
                overflow: OverflowPolicy::DropNewest,
            },
        }
    }
}

impl TiersConfig {
    /// The settings of `tier`.
    pub fn get(&self, tier: Tier) -> &TierConfig {
        match tier {
            Tier::Realtime => &self.realtime,
            Tier::Transactional => &self.transactional,
            Tier::Batch => &self.batch,
        }
    }
}

/// What an idle worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum IdleStrategy {
    /// Never sleep: lowest latency, one core at 100 % forever. For dedicated machines only.
    BusySpin,
    /// Spin `spin_iters` polls, then yield `yield_iters` times, then park until a producer wakes
    /// the worker (or `park_timeout_us` passes). Idle cost ~0 % CPU. The default.
    SpinThenPark {
        /// Empty polls with a spin hint before yielding (each ~10-40 ns).
        spin_iters: u32,
        /// `thread::yield_now` calls before parking.
        yield_iters: u32,
        /// Upper bound on one park, as a safety net for wake-ups (microseconds).
        park_timeout_us: u64,
    },
}

impl Default for IdleStrategy {
    fn default() -> Self {
        IdleStrategy::SpinThenPark {
            spin_iters: 20_000,
            yield_iters: 64,
            park_timeout_us: 100_000,
        }
    }
}

/// Dedup window: the last `window` ids (and, optionally, only those younger than `max_age`
/// measured on the events' own timestamps, so decisions stay deterministic on replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Ids remembered; `0` turns dedup off. At most 2^26.
    pub window: usize,
    /// Forget ids older than this (by event timestamp) even if the window has room.
    #[serde(with = "opt_duration_ms")]
    pub max_age: Option<Duration>,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window: 65_536,
            max_age: None,
        }
    }
}

/// The whole engine configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Ring sizes and overflow policies.
    pub tiers: TiersConfig,
    /// Which tier each priority uses.
    pub tier_map: TierMap,
    /// Worker threads (each drains its own lane of three rings). `1 ..= 256`.
    pub workers: usize,
    /// Pin each worker to a core (round-robin over the allowed cores).
    pub pin_workers: bool,
    /// Idle behaviour of workers.
    pub idle: IdleStrategy,
    /// Most events a worker takes from one ring per pass (and so the largest handler batch). `1 ..= 65536`.
    pub max_batch: usize,
    /// Starvation guard: a non-empty lower tier that has been passed over this many times in a
    /// row is served one batch even while higher tiers are busy. `1 ..= 1_000_000`.
    pub starvation_rounds: u32,
    /// Dedup settings.
    pub dedup: DedupConfig,
    /// How often workers publish their local latency histograms (milliseconds). `1 ..= 60000`.
    pub stats_flush_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            tiers: TiersConfig::default(),
            tier_map: TierMap::default(),
            workers: 1,
            pin_workers: true,
            idle: IdleStrategy::default(),
            max_batch: 256,
            starvation_rounds: 8,
            dedup: DedupConfig::default(),
            stats_flush_ms: 100,
        }
    }
}

fn invalid(field: &'static str, value: impl ToString, allowed: impl ToString) -> Error {
    Error::InvalidConfig {
        field,
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

impl EngineConfig {
    /// Checks every field; the error names the first bad one and its allowed range.
    pub fn validate(&self) -> Result<(), Error> {
        for (field, tier) in [
            ("tiers.realtime.capacity", &self.tiers.realtime),
            ("tiers.transactional.capacity", &self.tiers.transactional),
            ("tiers.batch.capacity", &self.tiers.batch),
        ] {
            let c = tier.capacity;
            if !(2..=MAX_RING_CAPACITY).contains(&c) || !c.is_power_of_two() {
                return Err(invalid(
                    field,
                    c,
                    format!("a power of two from 2 to {MAX_RING_CAPACITY}"),
                ));
            }
        }
        if self.tiers.get(self.tier_map.critical).overflow == OverflowPolicy::DropNewest {
            return Err(invalid(
                "tier_map.critical",
                self.tier_map.critical,
                "a tier whose overflow policy is block or reject: critical events are never dropped silently",
            ));
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(invalid(
                "workers",
                self.workers,
                format!("1 to {MAX_WORKERS}"),
            ));
        }
        if !(1..=65_536).contains(&self.max_batch) {
            return Err(invalid("max_batch", self.max_batch, "1 to 65536"));
        }
        if !(1..=1_000_000).contains(&self.starvation_rounds) {
            return Err(invalid(
                "starvation_rounds",
                self.starvation_rounds,
                "1 to 1000000",
            ));
        }
        if self.dedup.window > MAX_DEDUP_WINDOW {
            return Err(invalid(
                "dedup.window",
                self.dedup.window,
                format!("0 (off) to {MAX_DEDUP_WINDOW}"),
            ));
        }
        if let Some(age) = self.dedup.max_age {
            if age.is_zero() || age > Duration::from_secs(86_400 * 7) {
                return Err(invalid(
                    "dedup.max_age",
                    format!("{age:?}"),
                    "more than 0 and at most 7 days",
                ));
            }
        }
        if !(1..=60_000).contains(&self.stats_flush_ms) {
            return Err(invalid("stats_flush_ms", self.stats_flush_ms, "1 to 60000"));
        }
        if let IdleStrategy::SpinThenPark {
            park_timeout_us, ..
        } = self.idle
        {
            if !(1..=10_000_000).contains(&park_timeout_us) {
                return Err(invalid(
                    "idle.park_timeout_us",
                    park_timeout_us,
                    "1 to 10000000 (10 s)",
                ));
            }
        }
        Ok(())
    }
}

/// The set-up of the tests that race a worker going to sleep against publishers.
#[cfg(test)]
impl EngineConfig {
    /// Every tier a ring of `capacity` slots (`Reject` when full), unpinned workers that park on
    /// their first empty poll for at most `park_timeout_us`.
    pub(crate) fn parking_at_once(capacity: usize, park_timeout_us: u64) -> EngineConfig {
        let tier = TierConfig {
            capacity,
            overflow: OverflowPolicy::Reject,
        };
        EngineConfig {
            tiers: TiersConfig {
                realtime: tier,
                transactional: tier,
                batch: tier,
            },
            idle: IdleStrategy::SpinThenPark {
                spin_iters: 0,
                yield_iters: 0,
                park_timeout_us,
            },
            pin_workers: false,
            ..EngineConfig::default()
        }
    }
}

mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(cfg: &EngineConfig) -> &'static str {
        match cfg.validate() {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let cfg = EngineConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.tiers.realtime.capacity, 16_384);
        assert_eq!(cfg.tiers.transactional.capacity, 65_536);
        assert_eq!(cfg.tiers.batch.capacity, 65_536);
        assert_ne!(
            cfg.tiers.get(cfg.tier_map.critical).overflow,
            OverflowPolicy::DropNewest
        );
        assert!(matches!(cfg.idle, IdleStrategy::SpinThenPark { .. }));
    }

    fn with(f: impl FnOnce(&mut EngineConfig)) -> EngineConfig {
        let mut c = EngineConfig::default();
        f(&mut c);
        c
    }

    #[test]
    fn each_bad_field_is_named_with_its_range() {
        let c = with(|c| c.tiers.realtime.capacity = 1000);
        assert_eq!(field_of(&c), "tiers.realtime.capacity");
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("power of two") && msg.contains("1000"),
            "{msg}"
        );

        let cases: Vec<(EngineConfig, &str)> = vec![
            (with(|c| c.tiers.batch.capacity = 0), "tiers.batch.capacity"),
            (
                with(|c| c.tiers.transactional.capacity = 1 << 25),
                "tiers.transactional.capacity",
            ),
            (with(|c| c.workers = 0), "workers"),
            (with(|c| c.max_batch = 0), "max_batch"),
            (with(|c| c.starvation_rounds = 0), "starvation_rounds"),
            (
                with(|c| c.dedup.window = MAX_DEDUP_WINDOW + 1),
                "dedup.window",
            ),
            (
                with(|c| c.dedup.max_age = Some(Duration::ZERO)),
                "dedup.max_age",
            ),
            (with(|c| c.stats_flush_ms = 0), "stats_flush_ms"),
            // The batch tier drops when full: critical events may not go there.
            (
                with(|c| c.tier_map.critical = Tier::Batch),
                "tier_map.critical",
            ),
            (
                with(|c| {
                    c.idle = IdleStrategy::SpinThenPark {
                        spin_iters: 1,
                        yield_iters: 1,
                        park_timeout_us: 0,
                    }
                }),
                "idle.park_timeout_us",
            ),
        ];
        for (cfg, field) in cases {
            assert_eq!(field_of(&cfg), field);
        }
    }

    #[test]
    fn config_deserializes_with_defaults_and_rejects_unknown_fields() {
        let cfg: EngineConfig = serde_json::from_str(
            r#"{"workers": 2, "tiers": {"batch": {"capacity": 1024, "overflow": "reject"}}}"#,
        )
        .unwrap();
        assert_eq!(cfg.workers, 2);
        assert_eq!(cfg.tiers.batch.capacity, 1024);
        assert_eq!(cfg.tiers.realtime.capacity, 16_384);
        let err = serde_json::from_str::<EngineConfig>(r#"{"wrokers": 2}"#).unwrap_err();
        assert!(err.to_string().contains("wrokers"), "{err}");
    }
}
