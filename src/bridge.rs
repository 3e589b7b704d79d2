//! One request as the JS side drives it: run the pipeline, hand over the head (with whatever body has already
//! arrived), then pump the body on demand. Every outcome goes to `deliver` as an [`Event`]; exactly one event
//! answers the start and each [`Slot::want_more`], so the binding can route them all through one long-lived
//! channel to JS instead of a promise (and a threadsafe function) per call.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::pipeline::{BodyStream, Pipeline, Request};

/// At most about this much body goes into one event: whatever has arrived, so a fast stream crosses to JS in
/// large batches and a slow one chunk by chunk.
const BATCH_LIMIT: usize = 256 * 1024;

/// Body bytes handed to JS since the engine was last nudged to collect garbage, process-wide.
///
/// Every body chunk becomes a fresh JS buffer that is garbage once read, and the engines let such garbage pile
/// up: V8 starts collecting only when external memory has grown 64 MiB past its level at the last collection,
/// so a 100 MB body read at full speed took RSS ~38 MB up. Every [`Self::EVERY`] bytes the binding reports a
/// transient [`Self::PULSE`] bytes (added, then taken back, so the accounting stays true): V8 sees its limit
/// crossed once more than `64 MiB − PULSE` has grown and starts a collection; JSC (Bun) counts the positive
/// report as memory allocated this cycle and collects too. A chat answer of a few KB never reaches a pulse.
pub struct CollectNudge {
    since: std::sync::atomic::AtomicU64,
}

impl CollectNudge {
    pub const EVERY: u64 = 4 << 20;
    pub const PULSE: i64 = 63 << 20;

    pub const fn new() -> Self {
        Self { since: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Count `bytes` more handed to JS; true when the engine should be nudged now.
    pub fn delivered(&self, bytes: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let since = self.since.fetch_add(bytes as u64, Relaxed) + bytes as u64;
        if since < Self::EVERY {
            return false;
        }
        self.since.store(0, Relaxed);
        true
    }
}

impl Default for CollectNudge {
    fn default() -> Self {
        Self::new()
    }
}

/// Requests by id. The ids count up from 1 and are never chosen by anyone else, so they need no SipHash:
/// spread by one multiplication, they hash in a cycle (the default hasher showed in profiles of the hot path).
pub type IdMap<V> = std::collections::HashMap<u32, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        // Fibonacci hashing: consecutive ids land far apart, in the high bits the table looks at too.
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Status line and headers.
pub struct Head {
    pub status: u16,
    pub status_text: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

pub enum Event {
    /// The response head with the body bytes that came with it; `done`: that was the whole body.
    Head { head: Head, body: Vec<Bytes>, done: bool },
    /// The next body bytes (none when only the end is reported).
    Chunk { body: Vec<Bytes>, done: bool },
    /// The request, or its body, failed. Nothing follows.
    Failed(Error),
}

impl Event {
    /// Nothing follows this event.
    pub fn is_final(&self) -> bool {
        match self {
            Event::Head { done, .. } | Event::Chunk { done, .. } => *done,
            Event::Failed(_) => true,
        }
    }
}

/// The handle on one request in flight.
pub struct Slot {
    cancel: CancellationToken,
    demand: Semaphore,
}

impl Slot {
    pub fn new() -> Arc<Slot> {
        Arc::new(Slot { cancel: CancellationToken::new(), demand: Semaphore::new(0) })
    }

    /// The reader wants the next body bytes; one `Chunk` or `Failed` event answers.
    pub fn want_more(&self) {
        self.demand.add_permits(1);
    }

    /// Ends the request at any stage (waits, send, body) and closes the upstream connection at once.
    /// No event is owed after this.
    pub fn abort(&self) {
        self.cancel.cancel();
    }
}

/// Run a request task on the request runtime: one I/O thread that every request, its pooled connection
/// and its body pump share. Why one: each hop between threads is a futex or eventfd wake-up, and on a
/// small VM a wake-up on another vCPU costs 10–30 µs. On napi's multi-threaded runtime a request's task,
/// its connection's task and the timers wander between workers (perf under Bun: ~1 CPU migration and
/// ~5 context switches per request); on one thread a request costs the two hops JS → I/O thread → JS that
/// the runtime's own `fetch` also makes. Blocking work (file locks, fsync) already goes to the blocking pool.
pub fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    static IO: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = IO.get_or_init(|| {
        // The multi-threaded scheduler with one worker rather than a current-thread runtime: napi's runtime
        // already links it (no second scheduler in the .node), and measured the same or better.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("qwen-io")
            .enable_all()
            .build()
            .expect("the request runtime starts (it needs an epoll fd, a timer and a thread)")
    });
    drop(rt.spawn(task));
}

/// Blocking work nobody waits for (a background fsync): on the blocking pool of the runtime
/// we are called from, else (a sync napi call on the JS thread, unit tests) on a thread of its own.
pub fn spawn_blocking_detached(name: &str, work: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(work)),
        Err(_) => {
            if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(work) {
                crate::debug_log!("{name} thread not started: {e}");
            }
        }
    }
}

/// What follows the bytes gathered so far.
enum Tail {
    More,
    Done,
    Failed(Error),
}

/// Take the chunks that have already arrived, without waiting, until `BATCH_LIMIT`.
fn gather(body: &mut BodyStream, batch: &mut Vec<Bytes>) -> Tail {
    let mut size: usize = batch.iter().map(Bytes::len).sum();
    while size < BATCH_LIMIT {
        match body.next().now_or_never() {
            Some(Some(Ok(chunk))) => {
                size += chunk.len();
                if !chunk.is_empty() {
                    batch.push(chunk);
                }
            }
            Some(Some(Err(e))) => return Tail::Failed(e),
            Some(None) => return Tail::Done,
            None => break,
        }
    }
    Tail::More
}

/// Run one request to its end. The body stream is owned here and nowhere else, so returning (abort, or the
/// reader letting go) drops it and closes the connection, whether or not anyone is reading.
pub async fn run(pipeline: Arc<Pipeline>, req: Request, slot: Arc<Slot>, deliver: impl Fn(Event)) {
    let cancel = slot.cancel.clone();
    let resp = match pipeline.execute(req, cancel.clone()).await {
        Ok(resp) => resp,
        Err(e) => return deliver(Event::Failed(e)),
    };
    let head = Head { status: resp.status, status_text: resp.status_text, url: resp.url, headers: resp.headers };
    if let Some(all) = resp.complete_body {
        let body = if all.is_empty() { Vec::new() } else { vec![all] };
        return deliver(Event::Head { head, body, done: true });
    }
    pump(head, resp.body, &slot, deliver).await
}

/// Hand over the head with the bytes already here, then the rest of the body, one batch per demand.
async fn pump(head: Head, mut body: BodyStream, slot: &Slot, deliver: impl Fn(Event)) {
    let cancel = &slot.cancel;
    let mut batch = Vec::new();
    let mut tail = gather(&mut body, &mut batch);
    let done = matches!(tail, Tail::Done);
    deliver(Event::Head { head, body: std::mem::take(&mut batch), done });
    if done {
        return;
    }
    loop {
        // Read ahead while the reader has not asked yet: its next read is then answered at once.
        if batch.is_empty() && matches!(tail, Tail::More) {
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                next = body.next() => next,
            };
            tail = match next {
                None => Tail::Done,
                Some(Err(e)) => Tail::Failed(e),
                Some(Ok(chunk)) => {
                    batch.push(chunk);
                    gather(&mut body, &mut batch)
                }
            };
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            permit = slot.demand.acquire() => match permit {
                Ok(p) => p.forget(),
                Err(_) => return,
            },
        }
        if matches!(tail, Tail::More) {
            // What arrived while we waited goes along.
            tail = gather(&mut body, &mut batch);
        }
        if !batch.is_empty() {
            let done = matches!(tail, Tail::Done);
            deliver(Event::Chunk { body: std::mem::take(&mut batch), done });
            if done {
                return;
            }
            // An error after these bytes answers the next demand.
            continue;
        }
        match std::mem::replace(&mut tail, Tail::More) {
            Tail::Done => return deliver(Event::Chunk { body: Vec::new(), done: true }),
            Tail::Failed(e) => return deliver(Event::Failed(e)),
            Tail::More => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    #[test]
    fn id_map_finds_what_it_holds() {
        let mut m = IdMap::default();
        for id in 1..=5000u32 {
            m.insert(id, id * 2);
        }
        for id in (1..=5000u32).step_by(2) {
            m.remove(&id);
        }
        assert_eq!(m.len(), 2500);
        assert!((1..=5000u32).all(|id| m.get(&id) == (id % 2 == 0).then_some(&(id * 2))));
    }

    #[test]
    fn nudges_once_per_every_bytes_whatever_the_chunk_sizes() {
        let n = CollectNudge::new();
        let every = CollectNudge::EVERY as usize;
        assert!(!n.delivered(every - 1));
        assert!(n.delivered(1), "the byte that reaches EVERY nudges");
        assert!(!n.delivered(every / 2), "the count starts again after a nudge");
        assert!(n.delivered(every), "one big batch past EVERY nudges once");
        let nudges = (0..1600).filter(|_| n.delivered(64 * 1024)).count();
        assert_eq!(nudges, 1600 * 64 * 1024 / every, "100 MiB in 64 KiB chunks");
    }

    /// A body that yields `items`, then hangs (or ends), and raises a flag when dropped (= connection closed).
    fn upstream(items: Vec<crate::error::Result<Bytes>>, hang: bool) -> (BodyStream, Arc<AtomicBool>) {
        struct DropFlag(Arc<AtomicBool>);
        impl Drop for DropFlag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        let tail: BodyStream =
            if hang { Box::pin(futures_util::stream::pending()) } else { Box::pin(futures_util::stream::empty()) };
        let s = futures_util::stream::iter(items).chain(tail).map(move |x| {
            let _ = &flag;
            x
        });
        (Box::pin(s), dropped)
    }

    #[test]
    fn gather_takes_what_is_here_and_reports_the_tail() {
        let (mut body, _) = upstream(vec![Ok(Bytes::from_static(b"a")), Ok(Bytes::from_static(b"b"))], false);
        let mut batch = Vec::new();
        assert!(matches!(gather(&mut body, &mut batch), Tail::Done));
        assert_eq!(batch.len(), 2);

        let (mut body, _) = upstream(vec![Ok(Bytes::from_static(b"a"))], true);
        let mut batch = Vec::new();
        assert!(matches!(gather(&mut body, &mut batch), Tail::More), "a body still waiting is not done");
        assert_eq!(batch, vec![Bytes::from_static(b"a")]);

        let (mut body, _) = upstream(vec![Ok(Bytes::from_static(b"a")), Err(Error::Aborted)], false);
        let mut batch = Vec::new();
        assert!(matches!(gather(&mut body, &mut batch), Tail::Failed(Error::Aborted)));
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn gather_stops_at_the_batch_limit() {
        let big = Bytes::from(vec![0u8; BATCH_LIMIT / 2 + 1]);
        let (mut body, _) = upstream(vec![Ok(big.clone()), Ok(big.clone()), Ok(big)], false);
        let mut batch = Vec::new();
        assert!(matches!(gather(&mut body, &mut batch), Tail::More));
        assert_eq!(batch.len(), 2);
    }

    async fn pump_events(body: BodyStream, slot: Arc<Slot>, events: Arc<Mutex<Vec<Event>>>) {
        let head = Head { status: 200, status_text: "OK".into(), url: String::new(), headers: Vec::new() };
        pump(head, body, &slot, move |e| events.lock().unwrap().push(e)).await
    }

    async fn until(cond: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("condition reached");
    }

    #[tokio::test]
    async fn chunks_go_out_on_demand_only_and_the_end_is_reported() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<crate::error::Result<Bytes>>();
        let body: BodyStream =
            Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }));
        let slot = Slot::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(pump_events(body, slot.clone(), events.clone()));
        until(|| events.lock().unwrap().len() == 1).await;
        tx.send(Ok(Bytes::from_static(b"a"))).unwrap();
        tx.send(Ok(Bytes::from_static(b"b"))).unwrap();
        drop(tx);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(events.lock().unwrap().len(), 1, "nothing but the head before any demand");
        slot.want_more();
        task.await.unwrap();
        let ev = events.lock().unwrap();
        assert_eq!(ev.len(), 2);
        assert!(matches!(&ev[1], Event::Chunk { body, done: true } if body.len() == 2));
    }

    #[tokio::test]
    async fn an_error_after_data_answers_the_next_demand() {
        let (body, _) = upstream(vec![Ok(Bytes::from_static(b"a")), Err(Error::Aborted)], false);
        let slot = Slot::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        slot.want_more();
        slot.want_more();
        pump_events(body, slot, events.clone()).await;
        let ev = events.lock().unwrap();
        assert!(matches!(&ev[0], Event::Head { body, done: false, .. } if body.len() == 1));
        assert!(matches!(&ev[1], Event::Failed(Error::Aborted)));
        assert!(ev[1].is_final());
    }

    #[tokio::test]
    async fn abort_closes_the_upstream_without_a_reader() {
        let (body, dropped) = upstream(vec![Ok(Bytes::from_static(b"a"))], true);
        let slot = Slot::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(pump_events(body, slot.clone(), events.clone()));
        until(|| !events.lock().unwrap().is_empty()).await;
        // Nobody reads: the abort alone must close the upstream.
        slot.abort();
        until(|| dropped.load(Ordering::SeqCst)).await;
        task.await.unwrap();
        assert_eq!(events.lock().unwrap().len(), 1, "no event is owed after an abort");
    }

    #[tokio::test]
    async fn abort_while_the_reader_waits_on_a_silent_server_closes_the_upstream() {
        let (body, dropped) = upstream(vec![], true);
        let slot = Slot::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(pump_events(body, slot.clone(), events.clone()));
        slot.want_more();
        until(|| !events.lock().unwrap().is_empty()).await;
        slot.abort();
        until(|| dropped.load(Ordering::SeqCst)).await;
        task.await.unwrap();
    }
}
