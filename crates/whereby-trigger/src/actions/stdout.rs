//! `stdout`: one JSON line per event, for a consumer reading a pipe.
//!
//! Lines go through a [`LineSink`]: a buffer drained by a dedicated thread, so a
//! slow or blocked stdout never stalls the runtime, and one writer, so lines of
//! concurrent events never interleave.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use super::{Action, ActionEvent};

/// How long the writer thread lets lines gather after writing a batch before
/// it looks again. Under load this turns one wake-up per line (a futex call on
/// the request's thread and a context switch on the writer's) into one per
/// interval; a lone line is still written at once, since an idle writer is
/// woken by the first line.
const LINGER: Duration = Duration::from_millis(1);

/// A spent batch buffer larger than this is not kept for reuse, so that one
/// burst does not pin its memory for good.
const KEEP_CAPACITY: usize = 256 * 1024;

/// Appends `text` to `out` with U+2028, U+2029 and U+0085 written as
/// `\u2028`, `\u2029`, `\u0085`, its line breaks kept: what the JSON lines
/// of this crate get, for lines of your own that may carry a payload's text
/// (the binary's log lines). In a JSON string the escape is the same text.
pub fn push_escaping_separators(out: &mut Vec<u8>, text: &[u8]) {
    crate::util::push_escaping_separators(out, text);
}

/// A handle to a writer thread that writes whole lines, in the order they were
/// queued, flushing after every batch.
///
/// Clones share the same thread. Write errors (a closed pipe, a full disk) are
/// logged and the lines dropped; the sink keeps trying with later lines. When
/// the last clone is dropped the thread writes what is queued and ends.
#[derive(Debug, Clone)]
pub struct LineSink {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queue: Arc<Mutex<Queue>>,
    /// The writer thread, unparked after every line. Unparking a thread that
    /// is not parked is one atomic swap, so a busy writer costs producers no
    /// system call.
    writer: Thread,
    /// Taken by whoever waits first; the others wait for the lock meanwhile.
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Whole lines not yet handed to the writer.
    bytes: Vec<u8>,
    lines: u64,
    /// Set by [`LineSink::flush_and_close`] (or when the last clone is gone):
    /// later lines are refused rather than queued for a thread that is about
    /// to finish.
    closed: bool,
}

impl LineSink {
    /// A sink writing to the process's stdout.
    pub fn stdout() -> Self {
        LineSink::new(std::io::stdout())
    }

    /// A sink writing to `writer` on a thread of its own.
    ///
    /// # Panics
    ///
    /// If the operating system cannot start a thread, like [`std::thread::spawn`].
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let drained = queue.clone();
        let thread = std::thread::Builder::new()
            .name("whereby-trigger-lines".into())
            .spawn(move || write_lines(writer, &drained))
            .expect("failed to spawn the line writer thread");
        LineSink {
            shared: Arc::new(Shared {
                queue,
                writer: thread.thread().clone(),
                thread: Mutex::new(Some(thread)),
            }),
        }
    }

    /// Queues `line` (a newline is added if it has none). Never blocks on the
    /// writer. After [`LineSink::flush_and_close`] the line is dropped and
    /// logged.
    pub fn write_line(&self, line: Vec<u8>) {
        self.write_with(|out| out.extend_from_slice(&line));
    }

    /// Queues the line `write` appends to the buffer it is given (a newline is
    /// added if it ends without one, or appends nothing), with no copy in
    /// between: `write` runs under the sink's lock, so it should only format.
    /// Never blocks on the writer. After [`LineSink::flush_and_close`] nothing
    /// is written and the drop is logged.
    pub fn write_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        if !self.try_write_with(write) {
            tracing::warn!("line sink is closed; a line was dropped");
        }
    }

    /// [`LineSink::write_with`] that reports a closed sink by returning
    /// `false` instead of logging it: for a sink that carries the log itself,
    /// where logging the drop would come straight back.
    pub fn try_write_with(&self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        {
            let mut queue = lock(&self.shared.queue);
            if queue.closed {
                return false;
            }
            let start = queue.bytes.len();
            // A `write` that panics leaves no half line for the next to be
            // glued to.
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                write(&mut queue.bytes);
            }));
            if let Err(panic) = written {
                queue.bytes.truncate(start);
                drop(queue);
                std::panic::resume_unwind(panic);
            }
            if queue.bytes.len() == start || queue.bytes.last() != Some(&b'\n') {
                queue.bytes.push(b'\n');
            }
            queue.lines += 1;
        }
        self.shared.writer.unpark();
        true
    }

    /// Stops accepting lines (for every clone) and returns a handle to wait
    /// until every line queued before is written and flushed.
    pub fn flush_and_close(self) -> Flushing {
        self.shared.close();
        Flushing {
            shared: self.shared,
        }
    }
}

impl Shared {
    fn close(&self) {
        lock(&self.queue).closed = true;
        self.writer.unpark();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last clone is gone: nobody can queue a line any more, so the
        // writer may finish what is queued and end.
        self.close();
    }
}

/// The end of a [`LineSink`]: wait on it before exiting, so no queued line is
/// lost.
#[derive(Debug)]
pub struct Flushing {
    shared: Arc<Shared>,
}

impl Flushing {
    /// Blocks until every queued line is written and flushed. Call it from a
    /// thread, not from an async task (see [`Flushing::wait_async`]).
    pub fn wait(self) {
        // Joined under the lock, so that a second waiter returns only once the
        // thread is really done.
        let mut thread = lock(&self.shared.thread);
        if let Some(handle) = thread.take()
            && handle.join().is_err()
        {
            tracing::error!("the line writer thread panicked");
        }
    }

    /// [`Flushing::wait`] for async code: the join happens on a blocking
    /// thread, not on the runtime.
    pub async fn wait_async(self) {
        let _ = tokio::task::spawn_blocking(move || self.wait()).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer thread: until the sink is closed and drained, take everything
/// queued, write it, flush, and let the next batch gather.
fn write_lines(mut writer: impl Write, queue: &Mutex<Queue>) {
    let mut batch = Vec::new();
    // Lines lost since writing last failed; logged when it works again so that
    // a broken pipe costs one error line, not one per event.
    let mut dropped: u64 = 0;
    loop {
        let lines = {
            let mut queue = lock(queue);
            if queue.bytes.is_empty() {
                if queue.closed {
                    break;
                }
                None
            } else {
                // The spent buffer goes back, so that a steady load allocates
                // nothing.
                std::mem::swap(&mut queue.bytes, &mut batch);
                Some(std::mem::take(&mut queue.lines))
            }
        };
        let Some(lines) = lines else {
            // A line or a close queued since the check left the thread's token
            // set, so this returns at once; a spurious wake-up just looks again.
            std::thread::park();
            continue;
        };
        match writer.write_all(&batch).and_then(|()| writer.flush()) {
            Ok(()) if dropped > 0 => {
                tracing::warn!(dropped, "lines can be written again; some were lost");
                dropped = 0;
            }
            Ok(()) => {}
            Err(error) => {
                if dropped == 0 {
                    tracing::error!(%error, "cannot write lines; dropping them until writing works again");
                }
                dropped += lines;
            }
        }
        batch.clear();
        if batch.capacity() > KEEP_CAPACITY {
            batch = Vec::new();
        }
        std::thread::sleep(LINGER);
    }
    if dropped > 0 {
        tracing::error!(dropped, "lines that could not be written were lost");
    }
}

/// The `stdout` action: every start and stop as one JSON line, the
/// [`ActionEvent`] format.
#[derive(Debug, Clone)]
pub struct StdoutAction {
    sink: LineSink,
}

impl StdoutAction {
    /// The action writing to `sink` (usually [`LineSink::stdout`], shared by
    /// every trigger).
    pub fn new(sink: LineSink) -> Self {
        StdoutAction { sink }
    }

    fn write(&self, event: &ActionEvent) {
        self.sink.write_with(|out| event.write_json(out));
    }
}

impl Action for StdoutAction {
    fn kind(&self) -> &'static str {
        "stdout"
    }

    fn start(&self, event: Arc<ActionEvent>) {
        self.write(&event);
    }

    fn stop(&self, event: Arc<ActionEvent>) {
        self.write(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A writer into shared memory that takes at most `chunk` bytes per call,
    /// to give interleaving every chance, and counts flushed bytes.
    #[derive(Clone, Default)]
    struct Memory {
        out: Arc<Mutex<Out>>,
        chunk: usize,
    }

    #[derive(Default)]
    struct Out {
        bytes: Vec<u8>,
        flushed: usize,
    }

    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.chunk.max(1));
            lock(&self.out).bytes.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            let mut out = lock(&self.out);
            out.flushed = out.bytes.len();
            Ok(())
        }
    }

    #[test]
    fn concurrent_lines_never_interleave() {
        let writer = Memory {
            chunk: 7,
            ..Memory::default()
        };
        let sink = LineSink::new(writer.clone());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..300 {
                        let pad = "x".repeat((t * 37 + i) % 200);
                        sink.write_line(format!("{t} {i} {pad} end").into_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        sink.flush_and_close().wait();

        let out = lock(&writer.out);
        assert_eq!(out.flushed, out.bytes.len(), "everything flushed");
        let text = std::str::from_utf8(&out.bytes).unwrap();
        let mut next = [0usize; 8];
        let mut count = 0;
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 4, "a whole line: {line:?}");
            let (t, i): (usize, usize) = (parts[0].parse().unwrap(), parts[1].parse().unwrap());
            assert_eq!(parts[2].len(), (t * 37 + i) % 200);
            assert!(parts[2].bytes().all(|b| b == b'x'));
            assert_eq!(parts[3], "end");
            assert_eq!(i, next[t], "each thread's lines in order");
            next[t] += 1;
            count += 1;
        }
        assert_eq!(count, 8 * 300);
        assert!(text.ends_with('\n'));
    }

    /// Flushes are reported on a channel, so a test can see a line arrive
    /// without closing the sink.
    struct Reporting {
        bytes: Vec<u8>,
        flushed: mpsc::Sender<Vec<u8>>,
    }

    impl Write for Reporting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            let _ = self.flushed.send(std::mem::take(&mut self.bytes));
            Ok(())
        }
    }

    /// A sink over a [`Reporting`] writer, and what it reports.
    fn reporting() -> (LineSink, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel();
        let sink = LineSink::new(Reporting {
            bytes: Vec::new(),
            flushed: tx,
        });
        (sink, rx)
    }

    #[test]
    fn each_line_is_flushed_at_once() {
        let (sink, rx) = reporting();
        sink.write_line(b"first".to_vec());
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, b"first\n");
        sink.write_line(b"second\n".to_vec());
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, b"second\n", "a trailing newline is not doubled");
        sink.flush_and_close().wait();
    }

    #[test]
    fn dropping_every_clone_writes_what_is_queued() {
        let (sink, rx) = reporting();
        let other = sink.clone();
        sink.write_line(b"one".to_vec());
        other.write_with(|out| out.extend_from_slice(b"two"));
        drop(sink);
        drop(other);
        let mut got = Vec::new();
        // The writer's end drops `tx`, which ends the channel.
        while let Ok(bytes) = rx.recv_timeout(Duration::from_secs(10)) {
            got.extend_from_slice(&bytes);
        }
        assert_eq!(got, b"one\ntwo\n");
    }

    #[test]
    fn a_line_whose_writing_panics_leaves_nothing_behind() {
        let writer = Memory {
            chunk: 1 << 20,
            ..Memory::default()
        };
        let sink = LineSink::new(writer.clone());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sink.write_with(|out| {
                out.extend_from_slice(b"half a li");
                panic!("the formatter failed");
            });
        }));
        assert!(panicked.is_err());
        sink.write_line(b"whole".to_vec());
        sink.flush_and_close().wait();
        assert_eq!(lock(&writer.out).bytes, b"whole\n");
    }

    #[test]
    fn a_closed_sink_says_so_to_a_log_writer() {
        let writer = Memory::default();
        let sink = LineSink::new(writer.clone());
        assert!(sink.try_write_with(|out| out.extend_from_slice(b"kept")));
        let other = sink.clone();
        sink.flush_and_close().wait();
        assert!(!other.try_write_with(|_| panic!("not called once closed")));
        assert_eq!(lock(&writer.out).bytes, b"kept\n");
    }

    /// Fails with EPIPE for the first `failures` writes, and reports every
    /// write on a channel so a test can follow along.
    struct Flaky {
        failures: usize,
        out: Arc<Mutex<Vec<u8>>>,
        attempts: mpsc::Sender<bool>,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.failures > 0 {
                self.failures -= 1;
                let _ = self.attempts.send(false);
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            lock(&self.out).extend_from_slice(buf);
            let _ = self.attempts.send(true);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_are_survived() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (tx, _rx) = mpsc::channel();
        let sink = LineSink::new(Flaky {
            failures: usize::MAX,
            out: out.clone(),
            attempts: tx,
        });
        for _ in 0..100 {
            sink.write_line(b"lost".to_vec());
        }
        sink.flush_and_close().wait();
        assert!(lock(&out).is_empty());

        // A writer that recovers gets the later lines.
        let (tx, attempts) = mpsc::channel();
        let sink = LineSink::new(Flaky {
            failures: 1,
            out: out.clone(),
            attempts: tx,
        });
        sink.write_line(b"lost".to_vec());
        let wait = Duration::from_secs(10);
        assert_eq!(attempts.recv_timeout(wait), Ok(false));
        sink.write_line(b"kept".to_vec());
        assert_eq!(attempts.recv_timeout(wait), Ok(true));
        sink.flush_and_close().wait();
        assert_eq!(*lock(&out), b"kept\n");
    }

    #[test]
    fn lines_after_close_are_dropped() {
        let writer = Memory::default();
        let sink = LineSink::new(writer.clone());
        let other = sink.clone();
        sink.write_line(b"before".to_vec());
        let closing = sink.flush_and_close();
        other.write_line(b"after".to_vec());
        closing.wait();
        // A second close of another clone waits for nothing and does not panic.
        other.flush_and_close().wait();
        assert_eq!(lock(&writer.out).bytes, b"before\n");
    }

    #[tokio::test]
    async fn stdout_action_writes_start_and_stop_lines() {
        use crate::actions::ActionKind;

        let raw = whereby_webhook::sample::sample("room.client.joined").unwrap();
        let webhook = whereby_webhook::parse(raw.as_bytes()).unwrap();
        let start = ActionEvent::new(
            ActionKind::Start,
            "note-taker",
            webhook,
            bytes::Bytes::from_static(raw.as_bytes()),
        );
        let mut stop = start.clone();
        stop.action = ActionKind::Stop;
        let writer = Memory {
            chunk: 1 << 20,
            ..Memory::default()
        };
        let sink = LineSink::new(writer.clone());
        let action = StdoutAction::new(sink.clone());
        assert_eq!(action.kind(), "stdout");
        action.start(Arc::new(start));
        action.stop(Arc::new(stop));
        sink.flush_and_close().wait_async().await;

        let out = lock(&writer.out);
        let text = std::str::from_utf8(&out.bytes).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["action"], "start");
        assert_eq!(lines[1]["action"], "stop");
        let original: serde_json::Value = serde_json::from_str(raw).unwrap();
        for line in &lines {
            assert_eq!(line["trigger"], "note-taker");
            assert_eq!(line["roomUrl"], "https://acme.whereby.com/standup-3f9a2c");
            assert_eq!(line["triggerWebhook"], original);
        }
    }
}
