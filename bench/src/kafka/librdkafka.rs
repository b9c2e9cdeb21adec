//! The librdkafka client: one producer (the `rdkafka` crate; `rdkafka-sys` builds librdkafka
//! from its sources) with `acks=all`, batching as Kafka producers do.
//!
//! The producer forms its own batches (at most `kafka_batch` records, else `batch`;
//! `linger.ms` of `linger_ms`)
//! and keeps at most `connections × in_flight` produce requests in flight to the leader (5
//! when idempotent, Kafka's limit). The load keeps at most `connections × in_flight × batch`
//! records unacknowledged, the native run's events outstanding, so both runs are the same
//! closed loop. The sending thread serves the delivery reports itself (`rd_kafka_poll` in
//! the produce loop, as librdkafka's own examples do): no thread between a report and the
//! next send. Every record's delivery report names its offset, so the run is checked record
//! by record, as a native run is.

use super::{Consumed, KafkaBenchOptions, Load, Plan, CONSUME_IDLE};
use crate::error::BenchError;
use rdkafka::config::ClientConfig as KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long librdkafka retries a record before it reports it failed (`message.timeout.ms`).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Kafka's limit on requests in flight for an idempotent producer.
const IDEMPOTENT_MAX_IN_FLIGHT: usize = 5;

/// How long one poll waits for a delivery report.
const POLL: Duration = Duration::from_millis(100);

/// What the delivery reports have told so far.
struct Reports {
    load: Load,
    /// Records handed to the producer and not yet reported.
    outstanding: u64,
}

/// The producer's context: where delivery reports land (on the thread that polls, the
/// sending one; the lock is never contended).
struct Context {
    /// Send times are nanoseconds since this.
    epoch: Instant,
    reports: Mutex<Reports>,
}

impl Context {
    fn lock(&self) -> MutexGuard<'_, Reports> {
        self.reports.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    /// When the record was handed to the producer, ns since `epoch` (no allocation per
    /// record).
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let latency = (self.epoch.elapsed().as_nanos() as u64).saturating_sub(sent_ns as u64);
        let mut r = self.lock();
        r.outstanding = r.outstanding.saturating_sub(1);
        r.load.hist.saturating_record(latency);
        match result {
            Ok(m) => match u64::try_from(m.offset()) {
                Ok(offset) => {
                    r.load.acked += 1;
                    r.load.offsets.push(offset);
                }
                Err(_) => r
                    .load
                    .fail(1, || format!("delivered at offset {}", m.offset())),
            },
            Err((e, _)) => r.load.fail(1, || format!("delivery report: {e}")),
        }
    }
}

/// The librdkafka run: every event of the plan sent as one record, then every delivery
/// report awaited.
pub(super) fn load(
    plan: &Plan,
    bootstrap: &[SocketAddr],
    a: &KafkaBenchOptions,
) -> Result<Load, BenchError> {
    let context = Context {
        epoch: Instant::now(),
        reports: Mutex::new(Reports {
            load: Load::new(),
            outstanding: 0,
        }),
    };
    let producer: BaseProducer<Context> = config(bootstrap, a)
        .create_with_context(context)
        .map_err(|e| BenchError::Failed(format!("creating the librdkafka producer: {e}")))?;
    // Connected and the leader known before the clock starts, as the native clients are.
    producer
        .client()
        .fetch_metadata(Some(&plan.topic), Duration::from_secs(10))
        .map_err(|e| BenchError::Failed(format!("librdkafka metadata of `{}`: {e}", plan.topic)))?;
    let limit = (a.connections * a.in_flight * a.batch) as u64;
    let chunk = (a.kafka_batch.unwrap_or(a.batch) as u64).min(limit);
    let start = Instant::now();
    let mut unsent = plan.events;
    while unsent > 0 {
        let room = limit - producer.context().lock().outstanding;
        if room < chunk.min(unsent) {
            // One wake-up per `chunk` reports, not one per record.
            producer.poll(POLL);
            continue;
        }
        let n = room.min(unsent);
        producer.context().lock().outstanding += n;
        for _ in 0..n {
            send(&producer, plan);
        }
        unsent -= n;
        producer.poll(Duration::ZERO);
    }
    // `flush` polls too: the last reports are served here.
    let flushed = producer.flush(Timeout::After(MESSAGE_TIMEOUT + Duration::from_secs(10)));
    let seconds = start.elapsed().as_secs_f64();
    let mut r = producer.context().lock();
    if let Err(e) = flushed {
        let n = r.outstanding;
        r.load
            .fail(n, || format!("{n} records unreported after a flush: {e}"));
    }
    let mut load = std::mem::replace(&mut r.load, Load::new());
    load.seconds = seconds;
    Ok(load)
}

/// The producer's settings.
fn config(bootstrap: &[SocketAddr], a: &KafkaBenchOptions) -> KafkaConfig {
    let servers: Vec<String> = bootstrap.iter().map(|s| s.to_string()).collect();
    let in_flight = match a.idempotent {
        true => (a.connections * a.in_flight).min(IDEMPOTENT_MAX_IN_FLIGHT),
        false => a.connections * a.in_flight,
    };
    let batch = a.kafka_batch.unwrap_or(a.batch);
    // A full batch must fit one request: librdkafka's default is 1 MB for both.
    let batch_bytes = (batch * (a.payload_bytes + 64)).clamp(1_000_000, i32::MAX as usize);
    let mut c = KafkaConfig::new();
    c.set("bootstrap.servers", servers.join(","))
        .set("client.id", "eventstream-bench")
        .set("acks", "all")
        .set("enable.idempotence", a.idempotent.to_string())
        .set("linger.ms", a.linger_ms.to_string())
        .set("batch.num.messages", batch.to_string())
        .set("batch.size", batch_bytes.to_string())
        .set("message.max.bytes", (batch_bytes + 4096).to_string())
        .set(
            "max.in.flight.requests.per.connection",
            in_flight.to_string(),
        )
        .set("compression.codec", a.compression.to_string())
        .set(
            "message.timeout.ms",
            MESSAGE_TIMEOUT.as_millis().to_string(),
        );
    c
}

/// Hands one record (its place in `outstanding` taken) to the producer, serving reports
/// while its queue is full; a record it refuses otherwise is a failed one.
fn send(producer: &BaseProducer<Context>, plan: &Plan) {
    let sent_ns = producer.context().epoch.elapsed().as_nanos() as usize;
    let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(&plan.topic, sent_ns)
        .payload(&plan.payload[..]);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => {
                let mut r = producer.context().lock();
                r.outstanding -= 1;
                r.load
                    .fail(1, || format!("librdkafka refused a record: {e}"));
                return;
            }
        }
    }
}

/// Reads `events` records of `topic` (partition 0) from `first_offset` with a librdkafka
/// consumer (assigned, not in a group; its default fetch sizes): (records, payload bytes,
/// seconds from the assignment to the last record).
pub(super) fn consume(
    bootstrap: &[SocketAddr],
    topic: &str,
    first_offset: u64,
    events: u64,
) -> Result<Consumed, BenchError> {
    let servers: Vec<String> = bootstrap.iter().map(|s| s.to_string()).collect();
    let failed = |what: &str, e: KafkaError| BenchError::Failed(format!("librdkafka {what}: {e}"));
    let consumer: BaseConsumer = KafkaConfig::new()
        .set("bootstrap.servers", servers.join(","))
        .set("client.id", "eventstream-bench")
        .set("group.id", "eventstream-bench")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| failed("consumer", e))?;
    let mut assignment = TopicPartitionList::new();
    let from = i64::try_from(first_offset)
        .map_err(|_| BenchError::Failed(format!("offset {first_offset} beyond Kafka's")))?;
    assignment
        .add_partition_offset(topic, 0, Offset::Offset(from))
        .map_err(|e| failed("assignment", e))?;
    let start = Instant::now();
    consumer
        .assign(&assignment)
        .map_err(|e| failed("assign", e))?;
    let mut got = Consumed::default();
    let mut idle_since = Instant::now();
    while got.events < events {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                got.events += 1;
                got.bytes += m.payload().map_or(0, |p| p.len() as u64);
                idle_since = Instant::now();
            }
            Some(Err(e)) => return Err(failed("fetch", e)),
            None if idle_since.elapsed() > CONSUME_IDLE => {
                return Err(BenchError::Timeout(format!(
                    "librdkafka read {} of {events} records of `{topic}`, then nothing for {} s",
                    got.events,
                    CONSUME_IDLE.as_secs()
                )))
            }
            None => {}
        }
    }
    got.seconds = start.elapsed().as_secs_f64();
    Ok(got)
}
