//! Tiers (the three rings), their overflow policies and the priority → tier map.

use crate::error::Error;
use crate::event::Priority;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One of the three rings. Lower index = drained first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Critical and high priority by default.
    Realtime = 0,
    /// Medium priority by default.
    Transactional = 1,
    /// Low priority by default.
    Batch = 2,
}

impl Tier {
    /// All tiers in drain order.
    pub const ALL: [Tier; 3] = [Tier::Realtime, Tier::Transactional, Tier::Batch];

    /// Stable name used in metric labels (`queue="realtime"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Realtime => "realtime",
            Tier::Transactional => "transactional",
            Tier::Batch => "batch",
        }
    }

    /// Index into per-tier arrays.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tier {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::UnknownTier(s.to_owned()))
    }
}

/// What a publish does when its tier ring is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Wait for room: a bounded spin, then yielding, then parking until the worker frees slots.
    /// Never loses the event; back-pressures the producer.
    Block,
    /// Hand the event back to the caller (`PublishError::Full`), like crossbeam's `push`.
    Reject,
    /// Discard the new event and count it as `dropped{reason="queue_full"}`.
    DropNewest,
}

/// Which tier each priority goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierMap {
    /// Tier for [`Priority::Critical`].
    pub critical: Tier,
    /// Tier for [`Priority::High`].
    pub high: Tier,
    /// Tier for [`Priority::Medium`].
    pub medium: Tier,
    /// Tier for [`Priority::Low`].
    pub low: Tier,
}

impl Default for TierMap {
    fn default() -> Self {
        TierMap {
            critical: Tier::Realtime,
            high: Tier::Realtime,
            medium: Tier::Transactional,
            low: Tier::Batch,
        }
    }
}

impl TierMap {
    /// The tier of `priority`.
    #[inline]
    pub fn tier(&self, priority: Priority) -> Tier {
        match priority {
            Priority::Critical => self.critical,
            Priority::High => self.high,
            Priority::Medium => self.medium,
            Priority::Low => self.low,
        }
    }
}
