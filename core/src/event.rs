//! The event model: what producers publish and handlers receive.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Topic name. Short names (≤ 23 bytes) are stored inline, so cloning one never allocates.
pub type Topic = smol_str::SmolStr;

/// A producer-chosen idempotency key. Two events with the same id within the dedup window are
/// one event: the second is counted as a duplicate and not dispatched.
///
/// [`EventId::AUTO`] (zero) asks the publisher to assign a fresh, process-unique id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub u64);

impl EventId {
    /// "Assign one for me": replaced by a generated id at publish time.
    pub const AUTO: EventId = EventId(0);

    /// True for [`EventId::AUTO`].
    pub fn is_auto(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Event priority. The engine maps each priority to a tier (see [`crate::TierMap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Priority {
    /// Must never be dropped silently; realtime tier by default.
    Critical = 0,
    /// Realtime tier by default.
    High = 1,
    /// Transactional tier by default.
    Medium = 2,
    /// Batch tier by default.
    Low = 3,
}

impl Priority {
    /// All priorities, highest first.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Medium,
        Priority::Low,
    ];

    /// Stable lower-case name, used in metrics labels and the wire format.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }

    /// Index into per-priority arrays (0 = critical).
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// The inverse of [`Priority::index`]; `None` for anything above 3.
    pub fn from_index(i: u8) -> Option<Priority> {
        Priority::ALL.get(i as usize).copied()
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Priority {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| crate::Error::UnknownPriority(s.to_owned()))
    }
}

/// One header of an event: a name and a value that may be absent (Kafka's null header value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The header's name (UTF-8).
    pub name: String,
    /// The header's value; `None` is a null value, distinct from an empty one.
    pub value: Option<Bytes>,
}

/// What an event may carry besides its payload: a record key and ordered headers (Kafka's
/// record model). Boxed in [`Event::meta`], so an event without them costs one pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMeta {
    /// The record key; `None` is a null key, distinct from an empty one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Bytes>,
    /// Headers in the order they were added; names may repeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Idempotency key; [`EventId::AUTO`] is replaced at publish time.
    pub id: EventId,
    /// Routing key for handlers.
    pub topic: Topic,
    /// Decides the tier, and so the drain order.
    pub priority: Priority,
    /// Opaque body. `Bytes` so that fan-out to handlers and subscribers never copies it.
    pub payload: Bytes,
    /// When the engine accepted the event: nanoseconds on the publishing engine's monotonic
    /// clock ([`crate::clock::now_ns`]). Set by the publisher; latency is measured from here.
    #[serde(default)]
    pub ingest_ns: u64,
    /// Key and headers, if the producer gave any (`None` for most events: one pointer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Box<EventMeta>>,
}

impl Default for Event {
    /// An empty, low-priority event with an automatic id; used as a placeholder when events are
    /// moved out of a buffer.
    fn default() -> Self {
        Event {
            id: EventId::AUTO,
            topic: Topic::default(),
            priority: Priority::Low,
            payload: Bytes::new(),
            ingest_ns: 0,
            meta: None,
        }
    }
}

impl Event {
    /// An event with an id the publisher will assign ([`EventId::AUTO`]).
    pub fn new(topic: impl Into<Topic>, priority: Priority, payload: impl Into<Bytes>) -> Self {
        Event {
            id: EventId::AUTO,
            topic: topic.into(),
            priority,
            payload: payload.into(),
            ingest_ns: 0,
            meta: None,
        }
    }

    /// The same event with a producer-chosen idempotency key.
    pub fn with_id(mut self, id: u64) -> Self {
        self.id = EventId(id);
        self
    }

    /// The same event with record key `key`.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.meta_mut().key = Some(key.into());
        self
    }

    /// The same event with one more header (after those it has); `None` is a null value.
    pub fn with_header(mut self, name: impl Into<String>, value: Option<Bytes>) -> Self {
        self.meta_mut().headers.push(Header {
            name: name.into(),
            value,
        });
        self
    }

    /// The record key, if the event has one.
    pub fn key(&self) -> Option<&Bytes> {
        self.meta.as_ref()?.key.as_ref()
    }

    /// The headers, in order (empty if the event has none).
    pub fn headers(&self) -> &[Header] {
        self.meta.as_deref().map_or(&[], |m| &m.headers)
    }

    /// The event's key and headers, created empty if it had none.
    pub fn meta_mut(&mut self) -> &mut EventMeta {
        self.meta.get_or_insert_with(Box::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_round_trip() {
        let e = Event::new("orders", Priority::High, &b"hello"[..]).with_id(42);
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"priority\":\"high\""), "{json}");
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn key_and_headers_round_trip_through_serde_and_old_json_still_parses() {
        let e = Event::new("orders", Priority::Low, &b"p"[..])
            .with_id(7)
            .with_key(&b"k1"[..])
            .with_header("trace", Some(Bytes::from_static(b"abc")))
            .with_header("nil", None)
            .with_header("trace", Some(Bytes::new()));
        assert_eq!(e.key().map(|k| &k[..]), Some(&b"k1"[..]));
        let names: Vec<_> = e.headers().iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["trace", "nil", "trace"]);
        assert_eq!(e.headers()[1].value, None);
        assert_eq!(e.headers()[2].value, Some(Bytes::new()));
        let back: Event = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        // An event without them writes no `meta` field, and JSON without one parses.
        let plain = Event::new("orders", Priority::Low, &b"p"[..]);
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("meta"), "{json}");
        let old = r#"{"id":3,"topic":"t","priority":"high","payload":[1,2]}"#;
        let parsed: Event = serde_json::from_str(old).unwrap();
        assert_eq!((parsed.key(), parsed.headers().len()), (None, 0));
    }

    #[test]
    fn key_and_headers_cost_an_event_one_pointer() {
        // The rings move events by value: the extension is one boxed pointer.
        assert_eq!(std::mem::size_of::<Option<Box<EventMeta>>>(), 8);
        assert!(
            std::mem::size_of::<Event>() <= 88,
            "{}",
            std::mem::size_of::<Event>()
        );
    }

    #[test]
    fn priority_parses_case_insensitively_and_rejects_unknown() {
        assert_eq!("CRITICAL".parse::<Priority>().unwrap(), Priority::Critical);
        let err = "urgent".parse::<Priority>().unwrap_err();
        assert!(err.to_string().contains("urgent"), "{err}");
        assert_eq!(Priority::from_index(3), Some(Priority::Low));
        assert_eq!(Priority::from_index(4), None);
    }
}
